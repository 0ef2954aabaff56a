"""Resume: a rerun on the same workdir continues where the run stopped, even after kill -9."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sft_keras.config import validate_config
from sft_keras.errors import ConfigError
from sft_keras.training import train_and_evaluate

from helpers import REPO_ROOT, run_cli, write_image_folder


def _epochs_logged(workdir):
    rows = csv.DictReader(open(os.path.join(workdir, "training_log.csv")))
    return [int(r["epoch"]) for r in rows]


def _state(workdir):
    return json.load(open(os.path.join(workdir, "checkpoints", "state.json")))


def _config(images, epochs, **train):
    return validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": epochs, "batch_size": 6, "learning_rate": 3e-3,
                  "early_stopping_patience": 0, **train},
        "export": {"enabled": False},
    })


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("resume") / "images"), per_class=8)


def test_resumed_run_matches_an_uninterrupted_one(images, tmp_path):
    stages = ("0:backbone", "2:all,lr=0.5")
    full = train_and_evaluate(_config(images, 3, stages=stages), str(tmp_path / "full"))

    workdir = str(tmp_path / "resumed")
    train_and_evaluate(_config(images, 2, stages=stages), workdir)
    # Pretend the process died after committing epoch 2, with debris of a
    # half-written epoch 3 checkpoint and a CSV row of the unfinished epoch.
    state = _state(workdir)
    state["complete"] = False
    open(os.path.join(workdir, "checkpoints", "state.json"), "w").write(json.dumps(state))
    for name in ("epoch-3.weights.h5", ".tmp-epoch-3.weights.h5", ".state.json.x1y2.tmp"):
        open(os.path.join(workdir, "checkpoints", name), "wb").write(b"half written")
    with open(os.path.join(workdir, "training_log.csv"), "a") as f:
        f.write("2,0.5,0.9,0.5,0.9\n")

    resumed = train_and_evaluate(_config(images, 3, stages=stages), workdir)
    assert _epochs_logged(workdir) == [0, 1, 2]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "best.weights.h5", "epoch-3.weights.h5", "last.weights.h5", "state.json"]
    assert _state(workdir)["stage"] == 1
    # Same data order, optimizer state and stage: the same model.
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-4, abs=1e-5)
    assert resumed["accuracy"] == full["accuracy"]


def test_resume_with_another_model_is_a_clear_error(images, tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(_config(images, 1), workdir)
    state = _state(workdir)
    state["complete"] = False
    open(os.path.join(workdir, "checkpoints", "state.json"), "w").write(json.dumps(state))
    config = _config(images, 2, batch_size=4)
    with pytest.raises(ConfigError, match=r"train.batch_size: 6 -> 4.*--overwrite"):
        train_and_evaluate(config, workdir)


def _cli(workdir, images, epochs):
    return [
        sys.executable, "-m", "sft_keras.cli.train", "--config=configs/digits.py",
        f"--workdir={workdir}", "--config.data.source=image_folder",
        f"--config.data.path={images}", "--config.data.validation_split=0.25",
        "--config.data.image_size=(64, 64)", f"--config.train.epochs={epochs}",
        "--config.train.batch_size=4", "--config.train.early_stopping_patience=0",
        "--config.model.head.dropout=0.0", "--config.export.enabled=False",
    ]


@pytest.mark.slow  # Three training processes: about 2 minutes on 2 CPU cores.
def test_kill_9_mid_epoch_then_rerun_resumes(tmp_path):
    # 45 training steps an epoch: long enough that a kill 0.1 s after epoch 1's commit lands
    # inside epoch 2 even on a fast, idle machine.
    images = write_image_folder(str(tmp_path / "images"), per_class=60)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1")
    run = lambda workdir, epochs: subprocess.run(  # noqa: E731
        _cli(workdir, images, epochs), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=600)

    reference = str(tmp_path / "reference")
    result = run(reference, 3)
    assert result.returncode == 0, result.stderr[-3000:]

    workdir = str(tmp_path / "killed")
    state_path = os.path.join(workdir, "checkpoints", "state.json")
    process = subprocess.Popen(_cli(workdir, images, 3), cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = {}  # last_epoch -> when it was first seen committed.
    while process.poll() is None and 1 not in seen:
        if os.path.exists(state_path):
            seen.setdefault(json.load(open(state_path))["last_epoch"], time.time())
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    time.sleep(0.1)  # A few batches into epoch 2.
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert _state(workdir)["last_epoch"] == 1, "killed after epoch 2 was committed, not mid-epoch"

    result = run(workdir, 3)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming after epoch 1." in result.stdout
    assert "Epoch 1/3" not in result.stdout  # Epoch 1 is not trained twice.
    assert _epochs_logged(workdir) == [0, 1, 2]
    expected = json.load(open(os.path.join(reference, "metrics.json")))
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    print(f"uninterrupted: {expected}\nkilled+resumed: {metrics}")
    assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-3, abs=1e-4)
    assert abs(metrics["accuracy"] - expected["accuracy"]) <= 1 / metrics["num_examples"]

    again = run(workdir, 3)  # Finished: not retrained.
    assert again.returncode == 0 and "is complete" in again.stdout
    assert _epochs_logged(workdir) == [0, 1, 2]


# A training process that dies by SIGKILL once the optimizer has made `kill_at` steps
# (after that step's own commit, if it has one): `kill -9` at a known place mid-epoch.
KILL_SCRIPT = """
import json, os, signal, sys
import keras
from sft_keras.config import validate_config
from sft_keras.training import train_and_evaluate

config_json, workdir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])


class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


train_and_evaluate(validate_config(json.loads(config_json)), workdir, callbacks=[KillAt()])
"""


def _h5_arrays(path):
    """Every array of a .weights.h5 file (layers and optimizer state), by its path."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return arrays


def _step_config(images, **train):
    # 18 training images, batch 2: 9 steps an epoch; a cosine schedule and Adam, whose
    # state (moments, iteration count) a resume must carry on exactly.
    return {
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False},
                  "head": {"dropout": 0.0}},
        "train": {"epochs": 2, "batch_size": 2, "learning_rate": 3e-3, "schedule": "cosine",
                  "early_stopping_patience": 0, "checkpoint_every_steps": 3, **train},
        "export": {"enabled": False},
    }


def test_kill_9_after_a_step_commit_resumes_at_that_step(images, tmp_path, capsys):
    config = _step_config(images)
    train_and_evaluate(validate_config(config), str(tmp_path / "reference"))

    workdir = str(tmp_path / "killed")
    killed = run_cli(["python", "-c", KILL_SCRIPT, json.dumps(config), workdir, "14"],
                     env={"PYTHONPATH": REPO_ROOT})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # Killed at epoch 2, step 5: steps 4-5 were trained but not committed.
    state = _state(workdir)
    assert (state["last_epoch"], state["step"], state["steps_per_epoch"]) == (1, 3, 9)
    assert os.path.exists(os.path.join(workdir, "checkpoints", "epoch-2-step-3.weights.h5"))

    capsys.readouterr()
    train_and_evaluate(validate_config(config), workdir)
    assert "Resuming at epoch 2, step 3 of 9." in capsys.readouterr().out
    assert _epochs_logged(workdir) == [0, 1]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "best.weights.h5", "epoch-2.weights.h5", "last.weights.h5", "state.json"]
    expected = _h5_arrays(str(tmp_path / "reference" / "checkpoints" / "last.weights.h5"))
    resumed = _h5_arrays(os.path.join(workdir, "checkpoints", "last.weights.h5"))
    assert sorted(resumed) == sorted(expected)
    assert any("optimizer" in name for name in resumed)  # Adam's moments and iterations too.
    for name in expected:
        np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_a_step_commit_never_becomes_best(images, tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(validate_config(_step_config(images, epochs=1)), workdir)
    # A commit at epoch 2, step 3 leaves best.weights.h5 on epoch 1, the best finished epoch.
    from sft_keras.run import CheckpointDir
    from sft_keras.training.callbacks import finish_commit

    checkpoints = CheckpointDir(os.path.join(workdir, "checkpoints"))
    best_before = _h5_arrays(checkpoints.weights("best"))
    state = dict(_state(workdir), step=3, steps_per_epoch=9,
                 weights=checkpoints.step_file(2, 3), complete=False)
    open(os.path.join(checkpoints.path, state["weights"]), "wb").write(b"not the best")
    finish_commit(checkpoints, state)
    assert open(checkpoints.weights("last"), "rb").read() == b"not the best"
    best_after = _h5_arrays(checkpoints.weights("best"))
    assert all(np.array_equal(best_before[k], best_after[k]) for k in best_before)


def test_resume_inside_an_epoch_needs_the_same_steps_per_epoch(images, tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(validate_config(_step_config(images, epochs=1)), workdir)
    state = dict(_state(workdir), step=3, steps_per_epoch=7, complete=False)
    open(os.path.join(workdir, "checkpoints", "state.json"), "w").write(json.dumps(state))
    with pytest.raises(ConfigError, match=r"epoch 2, step 3 of 7 steps, but this run has 9"):
        train_and_evaluate(validate_config(_step_config(images)), workdir)


@pytest.mark.parametrize("steps_per_execution, expected", [
    (1, [(0, 3), (0, 6), (1, 3), (1, 6)]),
    # One call trains 2 batches: the position follows the call's last batch, and a
    # commit lands at the first call that crosses a multiple of every_steps.
    (2, [(0, 4), (0, 6), (1, 4), (1, 6)]),
])
def test_step_commits_count_batches_with_steps_per_execution(tmp_path, steps_per_execution,
                                                             expected):
    import keras

    from sft_keras.training.callbacks import AtomicCheckpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=steps_per_execution)
    checkpoint = AtomicCheckpoint(str(tmp_path), monitor="loss", every_steps=3,
                                  steps_per_epoch=8)
    model.fit(np.ones((16, 2)), np.ones((16, 1)), batch_size=2, epochs=2, verbose=0,
              callbacks=[checkpoint])
    step_commits = [c for c in checkpoint.commits if c[1]]
    assert step_commits == expected
    assert checkpoint.commits[-1] == (2, 0)  # The epoch commits.
