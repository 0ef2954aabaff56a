"""sft-export --format=litert,onnx, and export.formats at the end of sft-train."""

import json
import os
import shutil

import numpy as np

from sft_keras.evaluation.exports import litert_predictor, onnx_predictor
from sft_keras.run import load_run

from helpers import run_cli, write_image_folder


def _export(*args):
    return run_cli(["python", "-m", "sft_keras.cli.export", *args])


def test_sft_export_litert_and_onnx_with_the_check_table(tiny_image_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_image_run[0], workdir)  # The shared run is not modified.
    result = _export(f"--workdir={workdir}", "--format=litert,onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    litert, onnx = (os.path.join(workdir, f"export_{f}", "1") for f in ("litert", "onnx"))
    assert f"Exported LiteRT to {litert}" in result.stdout
    assert f"Exported ONNX to {onnx}" in result.stdout

    # The files give the Keras model's probabilities, run by their own runtimes.
    x = np.random.RandomState(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(load_run(workdir).model(x, training=False))
    for predict in (litert_predictor(os.path.join(litert, "model_float32.tflite")),
                    onnx_predictor(os.path.join(onnx, "model_float32.onnx"))):
        np.testing.assert_allclose(predict({"images": x}), expected, atol=1e-4)
    info = json.load(open(os.path.join(litert, "export_info.json")))
    assert info["preprocessing"]["image_size"] == [32, 32]
    assert info["class_names"] == open(os.path.join(litert, "labels.txt")).read().split()

    # One table, printed and in report/exports.md: Keras, 4 LiteRT and 2 ONNX rows.
    table = open(os.path.join(workdir, "report", "exports.md")).read()
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[1] for r in rows] == [
        "float32 (reference)", "float32", "float16", "dynamic_int8", "int8", "float32", "int8"]
    for row in rows:
        assert row in result.stdout
    report = json.load(open(os.path.join(workdir, "report", "exports.json")))["rows"]
    keras_row = report[0]
    assert keras_row["num_examples"] == 6 and keras_row["latency_ms"] > 0
    for r in report[1:]:
        assert r["bytes"] > 1000 and r["latency_ms"] > 0 and 0 <= r["accuracy"] <= 1
        if r["variant"] == "float32":
            assert r["agreement"] == 1.0 and r["max_prob_diff"] < 1e-4
            assert r["accuracy"] == keras_row["accuracy"]

    # An existing version is refused before the model is rebuilt.
    again = _export(f"--workdir={workdir}", "--format=onnx", "--version=1")
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "export_onnx/1' already exists" in again.stderr

    # Without the training data: --nocheck exports the variants that need no calibration;
    # the check says which data it could not read.
    config_path = os.path.join(workdir, "config.json")
    config = json.load(open(config_path))
    config["data"]["path"] = str(tmp_path / "moved_away")
    json.dump(config, open(config_path, "w"))
    bare = _export(f"--workdir={workdir}", "--format=litert", "--variants=float32", "--nocheck")
    assert bare.returncode == 0, bare.stderr[-3000:]
    assert os.listdir(os.path.join(workdir, "export_litert", "2")) and "| keras" not in bare.stdout
    checked = _export(f"--workdir={workdir}", "--format=litert", "--variants=float32")
    assert checked.returncode != 0 and "Traceback" not in checked.stderr
    assert "reads the run's data" in checked.stderr and "moved_away" in checked.stderr


def test_sft_export_bad_format_lists_the_known_ones(tiny_image_run):
    result = _export(f"--workdir={tiny_image_run[0]}", "--format=tflite")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "sft-export: error: Unknown export format 'tflite'; known formats: saved_model, "
        "litert, onnx. Received: --format='tflite'")


def test_sft_train_writes_the_configured_formats(tmp_path):
    from sft_keras.config import validate_config
    from sft_keras.training import train_and_evaluate

    images = write_image_folder(str(tmp_path / "images"), per_class=6)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn"},
        "train": {"epochs": 1, "batch_size": 8},
        "export": {"formats": ("onnx",), "onnx_variants": ("float32",)},
    })
    workdir = str(tmp_path / "run")
    metrics = train_and_evaluate(config, workdir)
    assert metrics["export_paths"] == {"onnx": os.path.join(workdir, "export_onnx", "1")}
    assert not os.path.exists(os.path.join(workdir, "export"))  # No SavedModel asked for.
    assert os.listdir(os.path.join(workdir, "export_onnx", "1")) and os.path.isfile(
        os.path.join(workdir, "report", "exports.md"))
