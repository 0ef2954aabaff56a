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

from helpers import REPO_ROOT, write_image_folder


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
