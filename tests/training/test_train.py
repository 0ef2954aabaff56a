"""End to end: sft-train on a tiny generated image folder, and the workdir contract."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import validate_config
from sft_keras.data import decode_image_bytes
from sft_keras.models import build_image_model
from sft_keras.training import train_and_evaluate

from helpers import REPO_ROOT, run_cli, write_image_folder

RELOAD_SCRIPT = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
images = [open(p, "rb").read() for p in sys.argv[2:]]
out = serve(image_bytes=tf.constant(images))
print(json.dumps({
    "probabilities": out["probabilities"].numpy().tolist(),
    "label": [x.decode() for x in out["label"].numpy()],
    "class_id": out["class_id"].numpy().tolist(),
    "inputs": sorted(serve.structured_input_signature[1]),
    "loaded_modules": sorted(m for m in ("sft_keras", "keras_hub", "tensorflow_text") if m in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    images = write_image_folder(str(root / "images"), per_class=16)
    workdir = str(root / "workdir")
    result = run_cli([
        "python", "-m", "sft_keras.cli.train",
        f"--config={os.path.join(REPO_ROOT, 'configs', 'digits.py')}",
        f"--workdir={workdir}",
        "--config.data.source=image_folder",
        f"--config.data.path={images}",
        "--config.data.validation_split=0.25",
        "--config.train.epochs=6",
        "--config.train.batch_size=8",
        "--config.train.early_stopping_patience=0",
    ])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, images, result.stdout


def test_workdir_holds_every_output(trained_workdir):
    workdir, _, stdout = trained_workdir
    assert {"config.json", "labels.txt", "checkpoints", "logs", "metrics.json", "export",
            "training_log.csv"} <= set(os.listdir(workdir))
    assert open(os.path.join(workdir, "labels.txt")).read().split() == [
        "diagonal", "horizontal", "vertical"
    ]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["train"]["epochs"] == 6 and config["data"]["source"] == "image_folder"
    assert config["model"]["freeze"]["until"] is None  # The full resolved config.
    assert {"best.weights.h5", "last.weights.h5", "state.json"} <= set(
        os.listdir(os.path.join(workdir, "checkpoints"))
    )
    assert {"train", "validation"} <= set(os.listdir(os.path.join(workdir, "logs")))
    assert os.listdir(os.path.join(workdir, "export")) == ["1"]
    assert "trainable params" in stdout  # The freezing table was printed.


def test_loss_goes_down_and_accuracy_beats_chance(trained_workdir):
    workdir, _, _ = trained_workdir
    rows = list(csv.DictReader(open(os.path.join(workdir, "training_log.csv"))))
    losses = [float(r["loss"]) for r in rows]
    assert len(rows) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert metrics["num_examples"] == 12 and metrics["split"] == "validation"
    assert metrics["accuracy"] > 0.5, metrics  # Chance is 1/3.
    assert np.isfinite(metrics["loss"])


def test_export_reloads_in_a_tensorflow_only_process_with_same_outputs(trained_workdir, tmp_path):
    workdir, images, _ = trained_workdir
    paths = sorted(
        os.path.join(images, c, f) for c in os.listdir(images) for f in os.listdir(os.path.join(images, c))
    )[::7]
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    result = run_cli(["python", str(script), os.path.join(workdir, "export", "1"), *paths])
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["loaded_modules"] == []
    assert served["inputs"] == ["image_bytes"]

    config = validate_config(json.load(open(os.path.join(workdir, "config.json"))))
    model = build_image_model(config, num_classes=3)
    model.load_weights(os.path.join(workdir, "checkpoints", "best.weights.h5"))
    pixels = tf.stack([decode_image_bytes(tf.io.read_file(p), (32, 32)) for p in paths])
    expected = model.predict(pixels, verbose=0)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    labels = open(os.path.join(workdir, "labels.txt")).read().split()
    assert served["label"] == [labels[i] for i in np.argmax(expected, axis=1)]


def test_rerun_of_a_finished_run_does_not_retrain(trained_workdir):
    workdir, _, _ = trained_workdir
    config = validate_config(json.load(open(os.path.join(workdir, "config.json"))))
    log = open(os.path.join(workdir, "training_log.csv")).read()
    metrics = train_and_evaluate(config, workdir)
    assert metrics["export_path"] == os.path.join(workdir, "export", "1")
    assert metrics["accuracy"] == json.load(open(os.path.join(workdir, "metrics.json")))["accuracy"]
    assert open(os.path.join(workdir, "training_log.csv")).read() == log
    assert os.listdir(os.path.join(workdir, "export")) == ["1"]


def test_overwrite_starts_afresh_and_writes_a_new_export_version(trained_workdir):
    workdir, images, _ = trained_workdir
    config = validate_config(json.load(open(os.path.join(workdir, "config.json"))))
    config.train.epochs = 1
    metrics = train_and_evaluate(config, workdir, overwrite=True)
    assert metrics["export_path"] == os.path.join(workdir, "export", "2")
    assert sorted(os.listdir(os.path.join(workdir, "export"))) == ["1", "2"]
    assert len(open(os.path.join(workdir, "training_log.csv")).read().splitlines()) == 2


def test_mirrored_strategy_trains_on_two_logical_devices(tmp_path):
    assert len(tf.config.list_logical_devices("CPU")) == 2
    images = write_image_folder(str(tmp_path / "images"), per_class=8)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 2, "batch_size": 8},
        "runtime": {"strategy": "mirrored"},
        "export": {"enabled": False},
    })
    metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
    assert metrics["num_examples"] == 6 and np.isfinite(metrics["loss"])


def test_bad_data_fails_before_training(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), per_class=3)
    with open(os.path.join(images, "vertical", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    result = run_cli([
        "python", "-m", "sft_keras.cli.train", "--config=configs/digits.py",
        f"--workdir={tmp_path / 'workdir'}", "--config.data.source=image_folder",
        f"--config.data.path={images}",
    ])
    assert result.returncode != 0
    assert "sft-train: error: Cannot decode image file" in result.stderr
    assert "broken.jpg" in result.stderr
    assert "Epoch 1" not in result.stdout
    assert not os.path.exists(tmp_path / "workdir" / "checkpoints")
