"""multi_worker_mirrored: two worker processes on 127.0.0.1 train one model together."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO_ROOT, write_image_folder

WORKER_SCRIPT = """
import json, sys
import keras, numpy as np
from sft_keras.training import loop as train
from sft_keras.config import validate_config

config_json, workdir, weights_path = sys.argv[1:4]


class SaveFinalWeights(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        np.savez(weights_path, *[np.asarray(w) for w in self.model.get_weights()])


build = train.build_callbacks
train.build_callbacks = lambda *a, **k: build(*a, **k) + [SaveFinalWeights()]
metrics = train.train_and_evaluate(validate_config(json.loads(config_json)), workdir)
print("METRICS", json.dumps(metrics))
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    processes = []
    for index in range(2):
        scratch = tmp_path / f"tmp_{index}"
        scratch.mkdir()
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TMPDIR=str(scratch),
                   TF_CPP_MIN_LOG_LEVEL="2", CI="1", PYTHONPATH=REPO_ROOT)
        args = [sys.executable, "-c", WORKER_SCRIPT, json.dumps(config),
                str(tmp_path / f"workdir_{index}"), str(tmp_path / f"weights_{index}.npz")]
        processes.append(subprocess.Popen(args, cwd=REPO_ROOT, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, out in zip(processes, outputs):
        assert p.returncode == 0, out[-4000:]

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
