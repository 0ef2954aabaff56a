"""Preemption: SIGTERM finishes the current step, commits, and exits 75; a rerun resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from sft_keras.config import validate_config
from sft_keras.errors import Preempted
from sft_keras.training import train_and_evaluate
from sft_keras.training.callbacks import AtomicCheckpoint
from sft_keras.training.preemption import EXIT_CODE, PreemptionCheckpoint, SigtermWatch

from helpers import REPO_ROOT, write_image_folder


class SigtermAt(keras.callbacks.Callback):
    """Sends this process a real SIGTERM when batch `batch` (0-based) of epoch `epoch` ends."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def _fit_until_sigterm(directory, epoch, batch, steps=4):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    checkpoint = AtomicCheckpoint(directory, monitor="loss", steps_per_epoch=steps)
    with SigtermWatch() as watch:
        callbacks = [checkpoint, SigtermAt(epoch, batch), PreemptionCheckpoint(checkpoint, watch)]
        with pytest.raises(Preempted, match="SIGTERM received") as raised:
            model.fit(np.ones((2 * steps, 2)), np.ones((2 * steps, 1)), batch_size=2, epochs=5,
                      verbose=0, callbacks=callbacks)
    assert signal.getsignal(signal.SIGTERM) is not watch._handle  # Restored.
    return checkpoint.checkpoints.read_state(), str(raised.value)


def test_sigterm_mid_epoch_commits_that_step_and_stops(tmp_path):
    state, message = _fit_until_sigterm(str(tmp_path), epoch=1, batch=1)
    # The step in progress finished (2 batches of epoch 2), was committed, and fit stopped
    # there: no validation, no epoch-end commit of a half epoch.
    assert (state["last_epoch"], state["step"], state["steps_per_epoch"]) == (1, 2, 4)
    assert state["weights"] == "epoch-2-step-2.weights.h5"
    assert "committed at epoch 2, step 2 of 4" in message and f"exit code {EXIT_CODE}" in message


def test_sigterm_in_the_last_batch_waits_for_the_epoch_commit(tmp_path):
    state, message = _fit_until_sigterm(str(tmp_path), epoch=0, batch=3)
    assert (state["last_epoch"], state["step"], state["weights"]) == (1, 0, "epoch-1.weights.h5")
    assert "committed after epoch 1" in message


def _h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return arrays


CONFIG_FILE = """
import json
from sft_keras.config import validate_config


def get_config():
    return validate_config(json.loads({config_json!r}))
"""


@pytest.mark.slow  # 78 s measured on 2 busy CPU cores (a CLI process, then two short runs).
def test_sigterm_to_sft_train_exits_75_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), per_class=8)
    config = {  # 18 training images, batch 2: 9 steps an epoch.
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False},
                  "head": {"dropout": 0.0}},
        "train": {"epochs": 1000, "batch_size": 2, "learning_rate": 3e-3,
                  "early_stopping_patience": 0},
        "export": {"enabled": False},
    }
    config_file = tmp_path / "config.py"
    config_file.write_text(CONFIG_FILE.format(config_json=json.dumps(config)))
    workdir = str(tmp_path / "preempted")
    state_path = os.path.join(workdir, "checkpoints", "state.json")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2", CI="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "sft_keras.cli.train", f"--config={config_file}",
         f"--workdir={workdir}"], cwd=REPO_ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while process.poll() is None and not os.path.exists(state_path):
            time.sleep(0.05)  # Training: epoch 1 is committed (1000 epochs: it cannot finish).
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == EXIT_CODE, err[-3000:]
    assert "sft-train: Preempted: SIGTERM received" in err
    state = json.load(open(state_path))
    assert state["complete"] is False
    print("preempted at", state["last_epoch"], state["step"])

    # Where the signal landed decides how long the comparison runs: to the end of that epoch.
    epochs = state["last_epoch"] + 1
    config["train"]["epochs"] = epochs
    train_and_evaluate(validate_config(config), str(tmp_path / "reference"))
    train_and_evaluate(validate_config(config), workdir)
    assert json.load(open(state_path))["complete"] is True
    expected = _h5_arrays(str(tmp_path / "reference" / "checkpoints" / "last.weights.h5"))
    resumed = _h5_arrays(os.path.join(workdir, "checkpoints", "last.weights.h5"))
    assert sorted(resumed) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_sigterm_during_a_tune_trial_stops_the_search(tmp_path, monkeypatch):
    from sft_keras.training import loop
    from sft_keras.tune import run_tune

    images = write_image_folder(str(tmp_path / "images"), per_class=4)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 1, "batch_size": 3, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })
    build = loop.build_callbacks

    def with_sigterm(*args, **kwargs):  # A real SIGTERM after the first batch of a trial.
        callbacks = build(*args, **kwargs)
        return callbacks[:-1] + [SigtermAt(0, 0)] + callbacks[-1:]

    monkeypatch.setattr(loop, "build_callbacks", with_sigterm)
    workdir = str(tmp_path / "tune")
    with pytest.raises(Preempted):  # Not recorded as a failed trial and on to the next one.
        run_tune(config, workdir, ["train.learning_rate=1e-3,3e-3"])
    rows = open(os.path.join(workdir, "trials.csv")).read()
    assert "waiting" in rows and "failed" not in rows  # Queued again: a rerun resumes it.
