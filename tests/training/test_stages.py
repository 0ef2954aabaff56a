"""Staged unfreezing: parsing, trainable sets per stage, one optimizer across stages."""

import csv
import json
import os
import re

import keras
import numpy as np
import pytest

from sft_keras.models import freezing
from sft_keras.config import validate_config
from sft_keras.errors import ConfigError
from sft_keras.training import train_and_evaluate

from helpers import run_cli, write_image_folder, write_sentiment_csv, write_tiny_bert_preset

STAGES = ("0:backbone", "2:until=-3,lr=0.5", "3:all,lr=0.5")


def _log_rows(workdir):
    return list(csv.DictReader(open(os.path.join(workdir, "training_log.csv"))))


@pytest.mark.parametrize("text, message", [
    ("backbone", "must be a string 'EPOCH:ITEMS'"),
    ("x:all", "starts with 'x', not an epoch number"),
    ("0:until=four", "has until='four', not an integer"),
    ("0:lr=-1", "it must be > 0"),
    ("0:freeze=block[", "invalid regular expression"),
    ("0:unfreeze", "unknown item 'unfreeze'"),
    ("1:all", "must start at epoch 0"),
])
def test_bad_stage_is_a_clear_error_naming_it(text, message):
    config = {"model": {"backbone": "small_cnn"}, "train": {"stages": (text,)}}
    with pytest.raises(ConfigError, match="train.stages") as error:
        validate_config(config)
    assert message in str(error.value) and f"train.stages[0]={text!r}" in str(error.value)


def test_stages_must_increase():
    with pytest.raises(ConfigError, match=r"train.stages\[1\] starts at epoch 0, not after"):
        freezing.parse_stages(("0:backbone", "0:all"))


def test_image_stages_unfreeze_on_schedule_and_loss_goes_down(tmp_path, capsys):
    images = write_image_folder(str(tmp_path / "images"), per_class=8)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 5, "batch_size": 6, "learning_rate": 3e-3, "stages": STAGES,
                  "early_stopping_patience": 0},
        "export": {"enabled": False},
    })
    workdir = str(tmp_path / "workdir")
    train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    # small_cnn has 6 layers with weights (3 conv, 3 BN); until=-3 leaves block3's.
    tables = [line.split() for line in out.splitlines() if line.startswith("small_cnn ")]
    assert [t[1] for t in tables] == ["0/6", "2/6", "6/6"], out
    assert "Stage 1 ('2:until=-3,lr=0.5'): epochs 3-3, learning rate 0.0015" in out
    rows = _log_rows(workdir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0], losses
    state = json.load(open(os.path.join(workdir, "checkpoints", "state.json")))
    assert state["stage"] == 2 and state["last_epoch"] == 5 and state["complete"]


def test_optimizer_state_carries_over_when_layers_unfreeze():
    # What _fit relies on: an optimizer built on every variable keeps its
    # step count and moments through a recompile with more trainable layers.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="body"),
                              keras.layers.Dense(1, name="head")])
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    model.get_layer("body").trainable = False
    model.compile(optimizer, "mse")
    x, y = np.ones((8, 3)), np.ones((8, 1))
    body_before = model.get_layer("body").get_weights()[0].copy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("body").get_weights()[0], body_before)
    model.get_layer("body").trainable = True
    model.compile(optimizer, "mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(optimizer.iterations) == 4
    assert not np.array_equal(model.get_layer("body").get_weights()[0], body_before)


@pytest.mark.slow  # About 70 s on a loaded 2-core machine: one retrace per stage.
def test_text_stages_on_tiny_bert(tmp_path, capsys):
    preset = write_tiny_bert_preset(tmp_path / "bert", hidden_dim=32, intermediate_dim=64)
    config = validate_config({
        "data": {"source": "text_file", "path": write_sentiment_csv(tmp_path / "t.csv", n=64),
                 "sequence_length": 16, "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3,
                  "stages": ("0:backbone", "1:until=-2", "2:all,lr=0.3"),
                  "early_stopping_patience": 0},
        "export": {"enabled": False},
    })
    workdir = str(tmp_path / "workdir")
    train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    ratios = [line.split()[1] for line in out.splitlines() if re.match(r"bert_backbone(_\d+)? ", line)]
    # Weighted layers: 3 embeddings, 1 norm, 2 transformer layers, pooled_dense (never trained
    # with avg pooling): head only, then transformer_layer_1, then all but pooled_dense.
    assert ratios == ["0/7", "1/7", "6/7"], out
    rows = _log_rows(workdir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0], losses


def test_bad_stage_on_the_command_line_is_one_error_line(tmp_path):
    result = run_cli([
        "python", "-m", "sft_keras.cli.train", "--config=configs/digits.py",
        f"--workdir={tmp_path / 'workdir'}", "--overwrite",
        "--config.train.stages=('0:backbone', '2:until=-3,lr=fast')",
    ])
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sft-train: error: train.stages[1] has lr='fast', not a number. "
                           "Received: train.stages[1]='2:until=-3,lr=fast'"), result.stderr[-2000:]
