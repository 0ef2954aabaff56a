"""Tests of config validation (sft_keras.config) and of the sft-train command line."""

import glob
import json
import os
import re

import pytest
from ml_collections import config_dict

from sft_keras.config import config_to_json, get_default_config, validate_config
from sft_keras.errors import ConfigError, SftError

from helpers import REPO_ROOT, load_config_file, run_cli

CONFIG_FILES = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py")))


# --- Unknown keys ---------------------------------------------------------------


def test_unknown_nested_key_is_named():
    with pytest.raises(ConfigError, match=r"Unknown config key 'train\.epoch'") as excinfo:
        validate_config({"train": {"epoch": 3}})
    assert "train.epochs" in str(excinfo.value)  # The known keys are listed.


def test_unknown_deeply_nested_key_is_named():
    with pytest.raises(ConfigError, match=r"'model\.head\.pool'"):
        validate_config({"model": {"head": {"pool": "avg"}}})


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match=r"Unknown config key 'trian'") as excinfo:
        validate_config({"trian": {"epochs": 3}})
    assert "train" in str(excinfo.value)


def test_value_where_group_expected():
    with pytest.raises(ConfigError, match=re.escape("Received: train=3")):
        validate_config({"train": 3})


def test_default_config_is_locked():
    config = get_default_config()
    config.train.epochs = 3  # Known keys can be set.
    with pytest.raises(AttributeError):
        config.train.epoch = 3
    with pytest.raises(AttributeError):
        config.trian = {}


def test_validated_config_is_locked_and_filled_in():
    config = validate_config({"train": {"epochs": 3}, "model": {"head": {"dropout": 0.5}}})
    assert isinstance(config, config_dict.ConfigDict)
    assert config.train.epochs == 3
    assert config.model.head.dropout == 0.5
    # Keys the dict leaves out keep their defaults.
    assert config.train.batch_size == get_default_config().train.batch_size
    assert config.model.head.pooling == "avg"
    with pytest.raises(AttributeError):
        config.train.epoch = 3


def test_default_config_is_valid_and_round_trips_through_json():
    config = validate_config(get_default_config())
    again = validate_config(json.loads(config_to_json(config)))  # Tuples come back as lists.
    assert config_to_json(again) == config_to_json(config)
    assert again.data.image_size == config.data.image_size


def test_wrong_type_in_dict_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=re.escape("Received: train.batch_size='32'")):
        validate_config({"train": {"batch_size": "32"}})


# --- Bad values -----------------------------------------------------------------


def _set(config, dotted_key, value):
    *groups, leaf = dotted_key.split(".")
    for group in groups:
        config = config[group]
    config[leaf] = value


BAD_VALUES = [
    ("train.batch_size", 0),
    ("train.epochs", -1),
    ("task", "segmentation"),
    ("model.head.pooling", "mean"),
    ("model.head.dropout", 1.0),
    ("data.image_size", (16, 16)),
    ("data.validation_split", 1.0),
    ("data.augment.flip", "diagonal"),
    ("train.learning_rate", 0.0),
    ("model.weights", "/nonexistent.h5"),
    ("train.monitor", "val_auc"),  # Only binary has AUC.
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[k for k, _ in BAD_VALUES])
def test_bad_value_names_key_and_value(key, value):
    config = get_default_config()
    _set(config, key, value)
    with pytest.raises(ConfigError) as excinfo:
        validate_config(config)
    assert f"Received: {key}={value!r}" in str(excinfo.value)


@pytest.mark.parametrize(
    "key,value,known",
    [
        ("model.backbone", "vgg17", ["'vgg16'", "'mobilenet_v2'", "'small_cnn'"]),
        ("train.optimizer", "adagrad", ["'adam'", "'sgd'"]),
        ("runtime.strategy", "tpu_pod", ["'default'", "'mirrored'"]),
    ],
)
def test_unknown_registry_name_lists_known_names(key, value, known):
    config = get_default_config()
    _set(config, key, value)
    with pytest.raises(ConfigError) as excinfo:
        validate_config(config)
    message = str(excinfo.value)
    assert repr(value) in message and key in message
    for name in known:
        assert name in message


def test_choice_error_lists_accepted_values():
    config = get_default_config()
    config.task = "segmentation"
    with pytest.raises(ConfigError, match=r"'classification', 'binary', 'regression'"):
        validate_config(config)


def test_monitor_val_auc_is_valid_for_binary():
    config = get_default_config()
    config.task = "binary"
    config.train.monitor = "val_auc"
    assert validate_config(config).train.monitor == "val_auc"


def test_image_folder_with_missing_path(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = missing
    with pytest.raises(ConfigError, match=re.escape(f"Received: data.path={missing!r}")) as excinfo:
        validate_config(config)
    assert "does not exist" in str(excinfo.value)


def test_image_folder_without_path():
    config = get_default_config()
    config.data.source = "image_folder"
    with pytest.raises(ConfigError, match=re.escape("data.path must be set")):
        validate_config(config)


def test_image_folder_path_that_is_a_file(tmp_path):
    path = tmp_path / "file.csv"
    path.write_text("path,label\n")
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = str(path)
    with pytest.raises(ConfigError, match=r"one subfolder per class"):
        validate_config(config)
    config.data.source = "csv"  # The same file is a fine CSV path.
    assert validate_config(config).data.source == "csv"


def test_regression_cannot_use_an_image_folder(tmp_path):
    # Class-per-folder labels are names, not numbers.
    config = get_default_config()
    config.task = "regression"
    config.train.monitor = "val_mae"
    config.data.source = "image_folder"
    config.data.path = str(tmp_path)
    with pytest.raises(ConfigError, match=re.escape("Received: data.source='image_folder'")):
        validate_config(config)


def test_weights_file_must_be_h5(tmp_path):
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(b"")
    config = get_default_config()
    config.model.weights = str(weights)
    with pytest.raises(ConfigError, match=r"\.h5"):
        validate_config(config)


def test_config_errors_are_sft_errors():
    assert issubclass(ConfigError, SftError)


# --- Config files ---------------------------------------------------------------


def test_config_files_exist():
    assert any(path.endswith("quickstart.py") for path in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[os.path.basename(p) for p in CONFIG_FILES])
def test_config_file_loads_and_validates(path):
    config = load_config_file(path)
    assert isinstance(config, config_dict.ConfigDict)
    with pytest.raises(AttributeError):  # Still locked: typos in overrides fail.
        config.train.epoch = 1
    if config.data.source in ("digits", "chatterbot") and os.path.exists(config.model.preset or "."):
        validated = validate_config(config)
        assert config_to_json(validated) == config_to_json(config)


def test_digits_runlocal_is_one_epoch():
    path = os.path.join(REPO_ROOT, "configs", "digits.py")
    assert load_config_file(path, "runlocal").train.epochs == 1
    assert validate_config(load_config_file(path, "runlocal")).model.backbone == "small_cnn"


def test_sst2_budget_is_the_search_setting_with_its_space():
    from sft_keras.tune import build_space

    config = validate_config(load_config_file(os.path.join(REPO_ROOT, "configs", "sst2.py"),
                                              "budget"), check_files=False)
    assert (config.data.max_train_examples, config.train.epochs,
            config.tune.reports_per_epoch) == (8000, 1, 3)
    assert [d.key for d in build_space(config)] == [
        "train.learning_rate", "train.schedule", "train.warmup_fraction", "train.batch_size"]


# --- Command line (subprocesses: each pays for a TensorFlow import) ------------


def _run_train(tmp_path, *overrides):
    return run_cli([
        "python", "-m", "sft_keras.cli.train",
        "--config=configs/digits.py",
        f"--workdir={tmp_path / 'workdir'}",
        *overrides,
    ], timeout=300)


def test_cli_unknown_key_fails(tmp_path):
    # Locked config: a typo'd override fails at flag parsing, before any data or model.
    result = _run_train(tmp_path, "--config.train.epoch=3")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "epoch" in output
    assert "epochs" in output  # ml_collections suggests the key meant.
    assert "Epoch 1" not in output
    assert not os.path.exists(tmp_path / "workdir" / "config.json")


def test_cli_unknown_backbone_is_one_clear_line(tmp_path):
    result = _run_train(tmp_path, "--config.model.backbone=vgg17")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    error_lines = [
        line for line in result.stderr.splitlines() if line.startswith("sft-train: error:")
    ]
    assert len(error_lines) == 1, output
    line = error_lines[0]
    assert "'vgg17'" in line and "model.backbone" in line
    assert "'vgg16'" in line and "'small_cnn'" in line  # Known backbones listed.
    assert "Traceback" not in output
    assert "Epoch 1" not in output
    assert not os.path.exists(tmp_path / "workdir" / "config.json")  # Failed before writing.

