"""`sft_keras.run.load_run`: a finished run rebuilt from its workdir alone."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.errors import WorkdirError
from sft_keras.run import load_run


def _images(n=4, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (n, 32, 32, 3)).astype("float32")


def test_image_run_equals_the_training_export(tiny_image_run, tmp_path):
    workdir, _ = tiny_image_run
    run = load_run(workdir)
    assert run.modality.name == "image" and run.class_names == ["diagonal", "horizontal", "vertical"]
    assert run.checkpoint.endswith(os.path.join("checkpoints", "best.weights.h5"))
    exported = tf.saved_model.load(os.path.join(workdir, "export", "1"))
    x = _images()
    expected = exported.signatures["serve_images"](images=tf.constant(x))["probabilities"]
    np.testing.assert_allclose(run.model(x, training=False), expected, atol=1e-5)
    assert load_run(workdir, checkpoint="last").checkpoint.endswith("last.weights.h5")

    path = run.export(str(tmp_path / "export"), version=7)
    assert path == str(tmp_path / "export" / "7")
    again = tf.saved_model.load(path).signatures["serve_images"](images=tf.constant(x))
    np.testing.assert_allclose(again["probabilities"], expected, atol=1e-5)
    info = json.load(open(os.path.join(path, "assets.extra", "export_info.json")))
    assert info["checkpoint"] == "best.weights.h5" and "accuracy" in info["metrics"]


def test_text_run_rebuilds_model_and_preprocessor(tiny_text_run):
    workdir, _ = tiny_text_run
    run = load_run(workdir)
    assert run.modality.name == "text" and run.class_names == ["neg", "pos"]
    texts = ["the movie was good", "awful plot", ""]
    ours = run.model(run.modality.preprocessor(tf.constant(texts)), training=False)
    exported = tf.saved_model.load(os.path.join(workdir, "export", "1"))
    expected = exported.signatures["serving_default"](text=tf.constant(texts))["probabilities"]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_training_data_need_not_exist(tiny_image_run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_image_run[0], copy, ignore=shutil.ignore_patterns("export"))
    config_path = os.path.join(copy, "config.json")
    config = json.load(open(config_path))
    config["data"]["path"] = str(tmp_path / "gone")
    json.dump(config, open(config_path, "w"))
    assert load_run(copy).class_names == ["diagonal", "horizontal", "vertical"]


def test_clear_errors(tiny_image_run, tmp_path):
    with pytest.raises(WorkdirError, match="does not exist or is not a folder"):
        load_run(str(tmp_path / "nope"))
    with pytest.raises(WorkdirError, match="No config.json in workdir .*config.json"):
        load_run(str(tmp_path))
    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_image_run[0], copy,
                    ignore=shutil.ignore_patterns("best.weights.h5", "export"))
    with pytest.raises(WorkdirError, match=r"No 'best' checkpoint .*best\.weights\.h5.*"
                                           r"last\.weights\.h5"):
        load_run(copy)
    assert load_run(copy, checkpoint="last").class_names
    with pytest.raises(WorkdirError, match="Received: checkpoint='final'"):
        load_run(copy, checkpoint="final")
    with open(os.path.join(copy, "config.json"), "w") as f:
        f.write('{"model": {"backbone": "vgg17"}}')
    with pytest.raises(Exception, match="config.json: Unknown backbone 'vgg17'"):
        load_run(copy)
