"""One run per workdir: `RunDir.lock` refuses a second sft-train; a killed run's lock does not block."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sft_keras.config import validate_config
from sft_keras.errors import DataError, WorkdirError
from sft_keras.run import RunDir
from sft_keras.training import train_and_evaluate

from helpers import REPO_ROOT, write_image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("lock") / "images"),
                              class_names=("a", "b"), per_class=4)


def _config(images):
    return validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25,
                 "image_size": (32, 32)},
        "model": {"backbone": "small_cnn"},
        "train": {"epochs": 1, "batch_size": 4, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })


def _write_lock(workdir, pid, host=None, started="2030-01-02T03:04:05+00:00"):
    os.makedirs(workdir, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "started": started,
              "command": "sft-train --workdir=" + str(workdir)}
    with open(RunDir(str(workdir)).lock_path, "w") as f:
        json.dump(record, f)


def test_second_run_on_a_workdir_in_use_fails_fast_naming_the_other_process(tmp_path, images):
    workdir = tmp_path / "run"
    other = subprocess.Popen(["sleep", "30"])  # A live process holding the lock.
    try:
        _write_lock(workdir, other.pid)
        start = time.monotonic()
        with pytest.raises(WorkdirError) as excinfo:
            train_and_evaluate(_config(images), str(workdir))
        assert time.monotonic() - start < 10
    finally:
        other.kill()
        other.wait()
    message = str(excinfo.value)
    assert f"Workdir {str(workdir)!r} is in use by another training run" in message
    assert f"process {other.pid} on host {socket.gethostname()!r}" in message
    assert "started 2030-01-02T03:04:05+00:00" in message
    assert f"kill {other.pid}" in message
    assert sorted(os.listdir(workdir)) == [".lock"]  # Nothing written, nothing read.

    # Held in this process (e.g. a notebook cell still running): refused too.
    os.remove(RunDir(str(workdir)).lock_path)
    with RunDir(str(workdir)).lock():
        with pytest.raises(WorkdirError, match=rf"process {os.getpid()} on host"):
            train_and_evaluate(_config(images), str(workdir))


def test_lock_of_a_killed_run_does_not_block_a_rerun(tmp_path, images, caplog):
    workdir = str(tmp_path / "run")
    code = ("import os, signal, sys; from sft_keras.run import RunDir; "
            "held = RunDir(sys.argv[1]).lock(); held.__enter__(); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, workdir], cwd=REPO_ROOT)
    assert killed.returncode == -signal.SIGKILL
    with open(RunDir(workdir).lock_path) as f:
        assert json.load(f)["pid"] != os.getpid()  # Left behind by the killed process.

    caplog.set_level(logging.WARNING, logger="absl")
    metrics = train_and_evaluate(_config(images), workdir)
    assert "accuracy" in metrics
    assert any("taking over the lock of process" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(RunDir(workdir).lock_path)  # Released at the end.


def test_lock_is_released_on_error_and_survives_clear(tmp_path):
    run_dir = RunDir(str(tmp_path / "run"))
    with pytest.raises(DataError):
        with run_dir.lock():
            raise DataError("bad data")
    assert not os.path.exists(run_dir.lock_path)
    with run_dir.lock():
        run_dir.clear()  # --overwrite deletes the outputs, never the lock held by this run.
        assert os.path.exists(run_dir.lock_path)
        with open(run_dir.lock_path) as f:
            record = json.load(f)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not os.path.exists(run_dir.lock_path)


def test_stale_and_foreign_locks(tmp_path):
    run_dir = RunDir(str(tmp_path / "run"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(run_dir.path, dead.pid)
    with run_dir.lock():  # Its process has exited: taken over.
        pass
    # This process's pid, but another process start time: the pid was reused.
    _write_lock(run_dir.path, os.getpid())
    with open(run_dir.lock_path) as f:
        record = json.load(f)
    record["process_start"] = -1
    with open(run_dir.lock_path, "w") as f:
        json.dump(record, f)
    if os.path.exists(f"/proc/{os.getpid()}/stat"):
        with run_dir.lock():
            pass
    # Another machine's process cannot be checked: refused, saying what to do.
    _write_lock(run_dir.path, 12345, host="gpu-node-7")
    with pytest.raises(WorkdirError, match=r"process 12345 on host 'gpu-node-7'.*delete "):
        with run_dir.lock():
            pass
