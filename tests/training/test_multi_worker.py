"""multi_worker_mirrored: two worker processes on 127.0.0.1 train one model together."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO_ROOT, write_image_folder

WORKER_SCRIPT = """
import json, os, signal, sys, time
import keras, numpy as np
from sft_keras.training import loop as train
from sft_keras.config import validate_config

config_json, workdir, weights_path = sys.argv[1:4]
# After this many steps: SIGKILL itself (> 0), or hang 30 s in Python (< 0: alive, not training).
kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else 0


class SaveFinalWeights(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        np.savez(weights_path, *[np.asarray(w) for w in self.model.get_weights()])


class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if kill_at and int(self.model.optimizer.iterations.numpy()) >= abs(kill_at):
            os.kill(os.getpid(), signal.SIGKILL) if kill_at > 0 else time.sleep(30)


build = train.build_callbacks
train.build_callbacks = lambda *a, **k: build(*a, **k) + [SaveFinalWeights(), KillAt()]
metrics = train.train_and_evaluate(validate_config(json.loads(config_json)), workdir)
print("METRICS", json.dumps(metrics))
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(tmp_path, config, workdirs, kill_at=(0, 0)):
    """Starts two workers on 127.0.0.1; returns their (return codes, outputs) when both end."""
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    processes = []
    for index in range(2):
        scratch = tmp_path / f"tmp_{index}"
        scratch.mkdir(exist_ok=True)
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TMPDIR=str(scratch),
                   TF_CPP_MIN_LOG_LEVEL="2", CI="1", PYTHONPATH=REPO_ROOT)
        args = [sys.executable, "-c", WORKER_SCRIPT, json.dumps(config), str(workdirs[index]),
                str(tmp_path / f"weights_{index}.npz"), str(kill_at[index])]
        processes.append(subprocess.Popen(args, cwd=REPO_ROOT, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:  # A worker left waiting for a dead peer would hang here: the timeout fails the test.
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    return [p.returncode for p in processes], outputs


@pytest.mark.slow  # 85 s measured on 2 busy CPU cores (two TF processes, export).
def test_two_workers_end_with_identical_weights_and_only_the_chief_writes(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), per_class=16)
    config = {
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 2e-3,
                  "early_stopping_patience": 0},
        "runtime": {"strategy": "multi_worker_mirrored"},
    }
    codes, outputs = _start_workers(tmp_path, config,
                                    [tmp_path / "workdir_0", tmp_path / "workdir_1"])
    for code, out in zip(codes, outputs):
        assert code == 0, out[-4000:]

    final = [np.load(tmp_path / f"weights_{i}.npz") for i in range(2)]
    assert len(final[0].files) == len(final[1].files) > 0
    for name in final[0].files:
        np.testing.assert_array_equal(final[0][name], final[1][name])

    chief = tmp_path / "workdir_0"
    losses = [float(r["loss"]) for r in csv.DictReader(open(chief / "training_log.csv"))]
    assert losses[-1] < losses[0], losses
    assert sorted(os.listdir(chief / "export")) == ["1"]
    assert (chief / "checkpoints" / "best.weights.h5").exists()
    assert not (tmp_path / "workdir_1").exists()  # The other worker wrote to a temp dir...
    assert os.listdir(tmp_path / "tmp_1") == []  # ...removed at the end.
    metrics = [json.loads(next(line[len("METRICS "):] for line in out.splitlines()
                               if line.startswith("METRICS "))) for out in outputs]
    assert "export_path" in metrics[0] and "export_path" not in metrics[1]
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"]


def _stepped_config(images, collective_timeout_s):
    return {  # 36 training images, batch 4: 9 steps an epoch; a commit every 3 steps.
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False},
                  "head": {"dropout": 0.0}},
        "train": {"epochs": 2, "batch_size": 4, "learning_rate": 2e-3,
                  "early_stopping_patience": 0, "checkpoint_every_steps": 3},
        "runtime": {"strategy": "multi_worker_mirrored",
                    "collective_timeout_s": collective_timeout_s},
        "export": {"enabled": False},
    }


@pytest.mark.slow  # 119 s measured on 2 busy CPU cores (two workers, three times).
def test_a_dead_worker_stops_the_other_and_a_restart_resumes_from_the_chiefs_commit(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), per_class=16)
    config = _stepped_config(images, collective_timeout_s=60.0)
    workdir = tmp_path / "shared_workdir"  # Both workers get the same --workdir.

    # Worker 1 dies (SIGKILL) after 13 steps: epoch 2, step 4, one step after a commit.
    codes, outputs = _start_workers(tmp_path, config, [workdir, workdir], kill_at=(0, 13))
    assert codes[1] == -signal.SIGKILL, outputs[1][-4000:]
    assert codes[0] != 0, outputs[0][-4000:]  # Stopped, not hanging (else: the timeout above).
    assert "TrainingError: Multi-worker training stopped on worker 0" in outputs[0]
    assert "Restart every worker with the same command" in outputs[0]
    assert "(here: epoch 2, step 3)" in outputs[0]
    state = json.load(open(workdir / "checkpoints" / "state.json"))
    assert (state["last_epoch"], state["step"]) == (1, 3)

    # Restarted with a workdir that is not the chief's, worker 1 would start afresh while
    # the chief resumes: both stop before training, naming the positions.
    codes, outputs = _start_workers(tmp_path, config, [workdir, tmp_path / "not_shared"])
    for code, out in zip(codes, outputs):
        assert code != 0, out[-4000:]
        assert "The workers would resume at different positions" in out, out[-4000:]
    assert "[[1, 3], [0, 0]]" in outputs[0]

    # Every worker restarted: both resume at the chief's commit and end alike.
    codes, outputs = _start_workers(tmp_path, config, [workdir, workdir])
    for code, out in zip(codes, outputs):
        assert code == 0, out[-4000:]
        assert "Resuming at epoch 2, step 3 of 9." in out
    final = [np.load(tmp_path / f"weights_{i}.npz") for i in range(2)]
    assert len(final[0].files) == len(final[1].files) > 0
    for name in final[0].files:
        np.testing.assert_array_equal(final[0][name], final[1][name])
    assert json.load(open(workdir / "checkpoints" / "state.json"))["complete"] is True


@pytest.mark.slow  # 74 s measured on 2 busy CPU cores.
def test_a_hung_worker_stops_the_other_after_the_collective_timeout(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), per_class=16)
    config = _stepped_config(images, collective_timeout_s=10.0)
    workdir = tmp_path / "shared_workdir"
    # Worker 1 stays alive (heartbeats go on) but stops training for 30 s after 13 steps.
    codes, outputs = _start_workers(tmp_path, config, [workdir, workdir], kill_at=(0, -13))
    assert codes[0] != 0, outputs[0][-4000:]
    assert "Multi-worker training stopped on worker 0" in outputs[0]
    assert "DeadlineExceededError: Collective has timed out" in outputs[0]
    assert "runtime.collective_timeout_s=10.0" in outputs[0]
