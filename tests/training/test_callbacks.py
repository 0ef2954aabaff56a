"""NaN stop, the monitor and its mode, and that the best epoch is what gets evaluated."""

import csv
import json
import os

import h5py
import keras
import numpy as np
import pytest

from sft_keras.training.callbacks import AtomicCheckpoint
from sft_keras.config import validate_config
from sft_keras.errors import ConfigError, TrainingError
from sft_keras.tasks import get_task
from sft_keras.training import train_and_evaluate

from helpers import write_image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("cb") / "images"), per_class=8)


def _config(images, **train):
    return validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"batch_size": 6, "learning_rate": 3e-3, "early_stopping_patience": 0, **train},
        "export": {"enabled": False},
    })


def _all_finite(path):
    values = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: values.append(np.all(np.isfinite(obj[()])))
                     if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" else None)
    return bool(values) and all(values)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_good_checkpoint(images, tmp_path):
    # Epoch 1 trains the head normally; from epoch 2 a huge learning rate diverges.
    config = _config(images, epochs=3, optimizer="sgd", stages=("0:backbone", "1:all,lr=1e30"))
    workdir = str(tmp_path / "workdir")
    with pytest.raises(TrainingError) as error:
        train_and_evaluate(config, workdir)
    message = str(error.value)
    assert "the loss became nan at epoch 2, batch" in message
    assert "learning rate too high (it was 3e+27" in message and "labels" in message
    assert "last good checkpoint (epoch 1)" in message
    state = json.load(open(os.path.join(workdir, "checkpoints", "state.json")))
    assert state["last_epoch"] == 1 and state["best_epoch"] == 1 and not state["complete"]
    assert _all_finite(os.path.join(workdir, "checkpoints", "best.weights.h5"))
    assert _all_finite(os.path.join(workdir, "checkpoints", "last.weights.h5"))
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))


@pytest.mark.parametrize("monitor, mode", [
    ("val_loss", "min"), ("val_accuracy", "max"), ("val_auc", "max"), ("val_mae", "min"),
])
def test_monitor_mode_is_inferred(monitor, mode):
    assert get_task("binary").monitor_mode(monitor) == mode


def test_monitor_missing_from_the_logs_is_a_clear_error(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    checkpoint = AtomicCheckpoint(str(tmp_path), monitor="val_f1")
    with pytest.raises(ConfigError, match=r"train.monitor='val_f1' is not among the values "
                                          r"logged after epoch 1: loss, val_loss"):
        model.fit(np.ones((4, 2)), np.ones((4, 1)), validation_data=(np.ones((2, 2)), np.ones((2, 1))),
                  epochs=2, verbose=0, callbacks=[checkpoint])


def test_the_best_epoch_by_the_monitor_is_evaluated(images, tmp_path):
    workdir = str(tmp_path / "workdir")
    metrics = train_and_evaluate(_config(images, epochs=5, monitor="val_accuracy",
                                         learning_rate=1e-2), workdir)
    rows = list(csv.DictReader(open(os.path.join(workdir, "training_log.csv"))))
    accuracies = [float(r["val_accuracy"]) for r in rows]
    state = json.load(open(os.path.join(workdir, "checkpoints", "state.json")))
    assert state["mode"] == "max" and state["best_epoch"] == int(np.argmax(accuracies)) + 1
    assert metrics["accuracy"] == pytest.approx(max(accuracies))
    best = rows[state["best_epoch"] - 1]
    assert metrics["loss"] == pytest.approx(float(best["val_loss"]), rel=1e-4)
