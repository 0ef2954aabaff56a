"""Optimizer recipes that fit the backbone: what 'auto' becomes, and that a run records it."""

import json
import os

import pytest

from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.run import RunDir
from sft_keras.training import optimizers
from sft_keras.training import train_and_evaluate

from helpers import write_sentiment_csv, write_tiny_bert_preset


def _config(**model):
    config = get_default_config()
    for key, value in model.items():
        *parents, leaf = key.split("__")
        group = config.model
        for parent in parents:
            group = group[parent]
        group[leaf] = value
    return config


def _resolved(config):
    t = optimizers.resolve_recipe(config)[0].train
    return t.optimizer, t.learning_rate, t.weight_decay, t.schedule, t.warmup_fraction


@pytest.mark.parametrize("model, expected", [
    ({"backbone": "bert"}, ("adamw", 5e-5, 0.01, "linear", 0.1)),  # Size unknown.
    ({"backbone": "bert", "preset": "bert_tiny_en_uncased"}, ("adamw", 1e-4, 0.01, "linear", 0.1)),
    ({"backbone": "roberta", "preset": "roberta_base_en"}, ("adamw", 5e-5, 0.01, "linear", 0.1)),
    ({"backbone": "bert", "preset": "bert_large_en"}, ("adamw", 2e-5, 0.01, "linear", 0.1)),
    ({"backbone": "bert", "lora_rank": 8}, ("adamw", 5e-4, 0.01, "linear", 0.1)),
    ({"backbone": "bert", "freeze__backbone": True}, ("adamw", 1e-3, 0.01, "linear", 0.1)),
    ({"backbone": "resnet50", "weights": "imagenet"}, ("adam", 1e-4, 0.0, "constant", 0.0)),
    ({"backbone": "hub_image", "preset": "efficientnet_b0_ra_imagenet"},
     ("adam", 1e-4, 0.0, "constant", 0.0)),
    ({"backbone": "resnet50", "weights": "imagenet", "freeze__backbone": True},
     ("adam", 1e-3, 0.0, "constant", 0.0)),
    ({"backbone": "mobilenet_v2"}, ("adam", 1e-3, 0.0, "constant", 0.0)),
])
def test_auto_keys_take_the_backbones_recipe(model, expected):
    assert _resolved(_config(**model)) == expected


def test_keys_the_config_sets_win_over_the_recipe():
    config = _config(backbone="bert")
    config.train.learning_rate = 2e-5
    config.train.schedule = "cosine"
    resolved, line = optimizers.resolve_recipe(config)
    t = resolved.train
    assert (t.optimizer, t.learning_rate, t.schedule, t.weight_decay) == (
        "adamw", 2e-5, "cosine", 0.01)
    assert line == ("Recipe: adamw, learning rate 2e-05, 10% warmup, cosine, weight decay 0.01 "
                    "(optimizer, weight_decay, warmup_fraction: the default for a "
                    "fine-tuned text encoder)")
    assert config.train.optimizer == "auto"  # The given config is not changed.
    # An optimizer other than AdamW does not inherit AdamW's weight decay.
    config.train.optimizer = "sgd"
    assert optimizers.resolve_recipe(config)[0].train.weight_decay == 0.0


def test_staged_runs_get_a_constant_rate_that_each_stage_can_scale():
    config = _config(backbone="bert")
    config.train.stages = ("0:backbone", "1:all,lr=0.1")
    t = optimizers.resolve_recipe(config)[0].train
    assert (t.optimizer, t.schedule, t.warmup_fraction) == ("adamw", "constant", 0.0)


def test_building_an_optimizer_from_unresolved_keys_says_what_to_call():
    with pytest.raises(ConfigError, match=r"train\.optimizer is 'auto'.*resolve_recipe\(config\)"
                       r".*Received: train\.optimizer='auto'"):
        optimizers.build_optimizer(get_default_config().train)


def test_a_bad_learning_rate_still_names_the_key():
    config = get_default_config()
    config.train.learning_rate = -1.0
    with pytest.raises(ConfigError, match=r"train\.learning_rate must be a positive number.*"
                       r"Received: train\.learning_rate=-1\.0"):
        validate_config(config)


def test_a_text_run_prints_its_recipe_and_config_json_records_it(tmp_path, capsys):
    preset = write_tiny_bert_preset(str(tmp_path / "bert"), hidden_dim=16, intermediate_dim=32)
    config = validate_config({
        "data": {"source": "text_file", "path": write_sentiment_csv(str(tmp_path / "t.csv"), n=32),
                 "sequence_length": 12, "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": 1, "batch_size": 8, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir)
    assert ("Recipe: adamw, learning rate 0.0001, 10% warmup, linear, weight decay 0.01 "
            "(optimizer, learning_rate, weight_decay, schedule, warmup_fraction: the default "
            "for a fine-tuned text encoder of hidden size 16)") in capsys.readouterr().out
    with open(RunDir(workdir).config_path, encoding="utf-8") as f:
        train = json.load(f)["train"]
    assert (train["optimizer"], train["learning_rate"], train["weight_decay"], train["schedule"],
            train["warmup_fraction"]) == ("adamw", 1e-4, 0.01, "linear", 0.1)
    assert os.path.exists(os.path.join(workdir, "metrics.json"))
