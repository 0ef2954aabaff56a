"""Exported SavedModels: signatures per task, versioning, never overwriting."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import get_default_config
from sft_keras.errors import ExportError
from sft_keras.serving.export import export_image_model
from sft_keras.models import build_image_model

from helpers import make_pattern_image


def _model(task, num_classes):
    config = get_default_config()
    config.task = task
    config.model.backbone = "small_cnn"
    keras.utils.set_random_seed(0)
    return build_image_model(config, num_classes)


def _png_batch(n=3):
    images = [make_pattern_image(i % 3, size=40, seed=i) for i in range(n)]
    return images, tf.constant([tf.io.encode_png(im).numpy() for im in images])


def test_classification_signatures_match_the_keras_model(tmp_path):
    model = _model("classification", 3)
    path = export_image_model(model, str(tmp_path), ["a", "b", "c"], "classification", (32, 32))
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serve_images"}
    images, encoded = _png_batch()
    out = loaded.signatures["serving_default"](image_bytes=encoded)
    assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape == (3, 3)
    assert out["class_id"].dtype == tf.int64 and out["label"].dtype == tf.string
    pixels = tf.image.resize(tf.constant(np.stack(images)), (32, 32))
    expected = model.predict(pixels, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    from_pixels = loaded.signatures["serve_images"](images=pixels)
    np.testing.assert_allclose(from_pixels["probabilities"].numpy(), expected, atol=1e-5)
    assert [s.decode() for s in out["label"].numpy()] == [
        "abc"[i] for i in np.argmax(expected, axis=1)
    ]
    extra = os.path.join(path, "assets.extra")
    assert open(os.path.join(extra, "labels.txt")).read() == "a\nb\nc\n"
    info = json.load(open(os.path.join(extra, "export_info.json")))
    assert info["task"] == "classification" and info["versions"]["tensorflow"] == tf.__version__


def test_binary_export_gives_two_column_probabilities(tmp_path):
    model = _model("binary", 2)
    path = export_image_model(model, str(tmp_path), ["neg", "pos"], "binary", (32, 32))
    _, encoded = _png_batch()
    out = tf.saved_model.load(path).signatures["serving_default"](image_bytes=encoded)
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_regression_export_returns_prediction(tmp_path):
    model = _model("regression", 1)
    path = export_image_model(model, str(tmp_path), [], "regression", (32, 32))
    images, encoded = _png_batch()
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](image_bytes=encoded)
    assert set(out) == {"prediction", "valid"} and out["prediction"].shape == (3,)
    expected = model.predict(tf.image.resize(np.stack(images), (32, 32)), verbose=0)[:, 0]
    np.testing.assert_allclose(out["prediction"].numpy(), expected, atol=1e-5)
    # A row that is not an image gets prediction 0 and valid=False; the others are unchanged.
    out = loaded.signatures["serving_default"](image_bytes=tf.concat([[b"oops"], encoded], 0))
    assert out["valid"].numpy().tolist() == [False, True, True, True]
    np.testing.assert_allclose(out["prediction"].numpy(), [0.0, *expected], atol=1e-5)


def test_versions_increment_and_are_never_overwritten_silently(tmp_path):
    model = _model("classification", 2)
    base = str(tmp_path / "export")
    first = export_image_model(model, base, ["x", "y"], "classification", (32, 32))
    second = export_image_model(model, base, ["x", "y"], "classification", (32, 32))
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    with pytest.raises(ExportError, match="already exists"):
        export_image_model(model, base, ["x", "y"], "classification", (32, 32), version=1)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == stamp
    export_image_model(model, base, ["x", "y"], "classification", (32, 32), version=1,
                       overwrite=True)
    assert sorted(os.listdir(base)) == ["1", "2"]  # No temporary folders left behind.


def test_export_is_readable_by_other_users(tmp_path):
    # A TF Serving process often runs as another user: no private temp-dir modes.
    model = _model("classification", 2)
    path = export_image_model(model, str(tmp_path), ["x", "y"], "classification", (32, 32))
    assert os.stat(path).st_mode & 0o005 == 0o005
    info = os.path.join(path, "assets.extra", "export_info.json")
    assert os.stat(info).st_mode & 0o004


def test_an_export_stores_each_weight_once(tmp_path):
    # Keras 3.15's ExportArchive.track(model) saved every variable twice (tracked and
    # captured): a 91 MB MiniLM export held 174 MB of variables.
    model = _model("classification", 3)
    path = export_image_model(model, str(tmp_path), ["a", "b", "c"], "classification", (32, 32))
    stored = [(name, shape) for name, shape in
              tf.train.list_variables(os.path.join(path, "variables", "variables"))
              if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert sum(int(np.prod(shape)) for _, shape in stored) == model.count_params()
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    served = tf.saved_model.load(path).signatures["serve_images"](images=images)
    np.testing.assert_allclose(served["probabilities"], model.predict(images, verbose=0),
                               atol=1e-5)
