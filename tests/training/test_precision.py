"""Mixed precision and XLA: tiny image and text models train, export and serve float32."""

import csv
import os

import keras
import pytest
import tensorflow as tf

from sft_keras.config import validate_config
from sft_keras.errors import ConfigError
from sft_keras.training import train_and_evaluate

from helpers import write_image_folder, write_sentiment_csv, write_tiny_bert_preset


def _losses(workdir):
    return [float(r["loss"]) for r in csv.DictReader(open(os.path.join(workdir, "training_log.csv")))]


def _image_config(images, precision, jit_compile="auto"):
    return validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 4, "batch_size": 8, "learning_rate": 2e-3,
                  "early_stopping_patience": 0},
        "runtime": {"precision": precision, "jit_compile": jit_compile},
    })


class _KeepModel(keras.callbacks.Callback):
    """Records the trained model (the spine does not return it)."""

    models = []

    def set_model(self, model):
        super().set_model(model)
        _KeepModel.models.append(model)


@pytest.fixture
def keep_model(monkeypatch):
    from sft_keras.training import loop as train

    build = train.build_callbacks
    monkeypatch.setattr(train, "build_callbacks", lambda *a, **k: build(*a, **k) + [_KeepModel()])
    _KeepModel.models.clear()
    return _KeepModel.models


@pytest.mark.parametrize("precision,jit_compile", [
    ("mixed_bfloat16", "false"),
    ("mixed_float16", "false"),
    # XLA compilation on CPU: 150 s measured on 2 busy cores.
    pytest.param("mixed_bfloat16", "true", marks=pytest.mark.slow),
])
def test_mixed_precision_image_model_trains_and_serves_float32(
        tmp_path, keep_model, precision, jit_compile):
    images = write_image_folder(str(tmp_path / "images"), per_class=8)
    workdir = str(tmp_path / "workdir")
    metrics = train_and_evaluate(_image_config(images, precision, jit_compile), workdir)
    losses = _losses(workdir)
    assert losses[-1] < losses[0], losses
    model = keep_model[-1]
    assert model.get_layer("small_cnn").layers[1].dtype_policy.name == precision
    assert model.get_layer("head_output").dtype_policy.name == "float32"
    assert model.output.dtype == "float32"
    assert model.jit_compile is (jit_compile == "true")
    loss_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert loss_scaled is (precision == "mixed_float16")
    assert keras.config.dtype_policy().name == "float32"  # Not leaked.
    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    image = open(os.path.join(images, "vertical", "000.png"), "rb").read()
    out = serve(image_bytes=tf.constant([image]))
    assert out["probabilities"].dtype == tf.float32
    assert abs(float(tf.reduce_sum(out["probabilities"])) - 1.0) < 1e-3


@pytest.mark.slow  # 410 s measured on 2 busy CPU cores (XLA compile, text export).
def test_mixed_bfloat16_tiny_bert_trains_and_serves_float32(tmp_path, keep_model):
    preset = write_tiny_bert_preset(tmp_path / "tiny_bert", hidden_dim=32, intermediate_dim=64)
    config = validate_config({
        "data": {"source": "text_file", "path": write_sentiment_csv(tmp_path / "train.csv"),
                 "sequence_length": 16, "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3,
                  "early_stopping_patience": 0},
        "runtime": {"precision": "mixed_bfloat16", "jit_compile": "true"},
    })
    workdir = str(tmp_path / "workdir")
    metrics = train_and_evaluate(config, workdir)
    losses = _losses(workdir)
    assert losses[-1] < losses[0], losses
    model = keep_model[-1]
    # Keras numbers the name (bert_backbone_1, ...) when earlier tests built one too.
    backbone = next(l for l in model.layers if l.name.startswith("bert_backbone"))
    layer = backbone.get_layer("transformer_layer_0")
    assert layer.dtype_policy.name == "mixed_bfloat16"
    assert model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    out = serve(text=tf.constant(["good film", "awful plot"]))
    assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape == (2, 2)


@pytest.mark.parametrize("key,value,match", [
    ("precision", "float16", "runtime.precision must be one of.*Received: runtime.precision='float16'"),
    ("jit_compile", "yes", "runtime.jit_compile must be one of.*Received: runtime.jit_compile='yes'"),
])
def test_bad_runtime_values_are_rejected(key, value, match):
    with pytest.raises(ConfigError, match=match):
        validate_config({"runtime": {key: value}})
