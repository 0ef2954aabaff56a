"""Optimizers, schedules, clipping, accumulation and layer-wise learning-rate decay."""

import csv
import logging
import os

import keras
import numpy as np
import pytest

from sft_keras.training import optimizers
from sft_keras.backbones import text as text_backbones
from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.models import build_image_model, build_text_model
from sft_keras.training import train_and_evaluate

from helpers import write_tiny_bert_preset



def _train(**values):
    t = get_default_config().train
    # The image-from-scratch recipe (what these keys defaulted to before recipes).
    t.optimizer, t.learning_rate, t.weight_decay, t.schedule, t.warmup_fraction = (
        "adam", 1e-3, 0.0, "constant", 0.0)
    for key, value in values.items():
        t[key] = value
    return t


def _dense_with_norm():
    model = keras.Sequential([
        keras.Input((3,)), keras.layers.Dense(4, name="dense"),
        keras.layers.LayerNormalization(name="norm"), keras.layers.Dense(2, name="out"),
    ])
    for v in model.trainable_variables:
        v.assign(np.full(v.shape, 2.0, np.float32))
    return model


def _apply(optimizer, model, grads=None):
    variables = model.trainable_variables
    if grads is None:
        grads = [np.zeros(v.shape, np.float32) for v in variables]
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return {_short(v.path): keras.ops.convert_to_numpy(v) for v in variables}


def _short(path):
    return "/".join(path.split("/")[-2:]) if path.startswith("sequential") else path


def test_adamw_decays_kernels_but_not_biases_or_norms():
    model = _dense_with_norm()
    optimizer = optimizers.build_optimizer(
        _train(optimizer="adamw", learning_rate=0.1, weight_decay=0.5), model
    )
    after = _apply(optimizer, model)  # Zero gradients: only weight decay moves a variable.
    np.testing.assert_allclose(after["dense/kernel"], 2.0 * (1 - 0.1 * 0.5))
    np.testing.assert_allclose(after["out/kernel"], 2.0 * (1 - 0.1 * 0.5))
    for path in ("dense/bias", "norm/gamma", "norm/beta", "out/bias"):
        np.testing.assert_array_equal(after[path], 2.0)


def test_weight_decay_without_model_excludes_by_name():
    model = _dense_with_norm()
    optimizer = optimizers.build_optimizer(
        _train(optimizer="adamw", learning_rate=0.1, weight_decay=0.5)
    )
    after = _apply(optimizer, model)
    assert after["dense/kernel"][0, 0] < 2.0
    np.testing.assert_array_equal(after["norm/gamma"], 2.0)
    np.testing.assert_array_equal(after["dense/bias"], 2.0)


@pytest.mark.parametrize("schedule,expected", [
    # 100 steps, 10 warmup: 0.1 at step 0 ... 1.0 at step 9, then decay over 90 steps to 0.1.
    ("constant", [0.1, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.1, 1.0, 1.0, 0.55, 0.1]),
    ("cosine", [0.0, 0.9, 1.0, 0.55, 0.1]),  # Keras's CosineDecay warms up from step 0 = 0.
])
def test_schedules_warm_up_then_decay_to_min_ratio(schedule, expected):
    t = _train(schedule=schedule, learning_rate=1.0, warmup_fraction=0.1, min_lr_ratio=0.1)
    lr = optimizers.build_learning_rate(t, total_steps=100)
    values = [float(lr(s)) for s in (0, 9, 10, 55, 100)]
    np.testing.assert_allclose(values, expected, atol=0.01)
    assert "over 100 steps" in optimizers.describe_learning_rate(lr, 100)


def test_schedule_errors_echo_values():
    with pytest.raises(ConfigError, match="'cosin' for train.schedule.*'constant', 'cosine', 'linear'"):
        validate_config({"train": {"schedule": "cosin"}})
    with pytest.raises(ConfigError, match="only 5 steps.*warmup_steps=10"):
        optimizers.build_learning_rate(_train(schedule="cosine", warmup_steps=10), total_steps=5)
    with pytest.raises(ConfigError, match="train.global_clipnorm.*clipnorm=1.0"):
        validate_config({"train": {"clipnorm": 1.0, "global_clipnorm": 1.0}})


def test_global_clipnorm_limits_the_update():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    optimizer = optimizers.build_optimizer(
        _train(optimizer="sgd", momentum=0.0, learning_rate=1.0, global_clipnorm=0.5), model
    )
    after = _apply(optimizer, model, [np.full((2, 1), 30.0, np.float32), np.full((1,), 40.0, np.float32)])
    moved = np.sqrt(sum(np.sum((after[p] - b) ** 2) for p, b in zip(after, before)))
    assert moved == pytest.approx(0.5, rel=1e-4)


def test_gradient_accumulation_updates_every_n_steps():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    start = keras.ops.convert_to_numpy(model.trainable_variables[0])
    optimizer = optimizers.build_optimizer(
        _train(optimizer="sgd", momentum=0.0, learning_rate=1.0, gradient_accumulation_steps=2), model
    )
    grads = [np.ones((2, 1), np.float32), np.ones((1,), np.float32)]
    np.testing.assert_array_equal(_apply(optimizer, model, grads)["d/kernel"], start)
    grads = [np.full((2, 1), 3.0, np.float32), np.full((1,), 3.0, np.float32)]
    np.testing.assert_allclose(_apply(optimizer, model, grads)["d/kernel"], start - 2.0)  # Mean of 1, 3.


@pytest.fixture(scope="module")
def tiny_bert_model(tmp_path_factory):
    preset = write_tiny_bert_preset(tmp_path_factory.mktemp("bert"))
    config = get_default_config()
    config.model.backbone, config.model.preset = "bert", preset
    config.data.source, config.data.sequence_length = "chatterbot", 8
    return build_text_model(config, text_backbones.build_text_backbone("bert", preset), 3)


def test_layerwise_scales_for_bert(tiny_bert_model):
    scales = optimizers.layerwise_lr_scales(tiny_bert_model, 0.5)
    by_layer = {path.split("/")[0]: s for path, s in scales.items()}
    # 3 blocks: embeddings (0), transformer_layer_0 (1), transformer_layer_1 (2).
    assert by_layer["token_embedding"] == 0.125 and by_layer["embeddings_layer_norm"] == 0.125
    assert by_layer["transformer_layer_0"] == 0.25
    assert by_layer["transformer_layer_1"] == 0.5
    assert not any(p.startswith("head_output") for p in scales)  # The head: full rate.


def test_layerwise_decay_scales_each_update(tiny_bert_model):
    model = tiny_bert_model
    optimizer = optimizers.build_optimizer(
        _train(optimizer="sgd", momentum=0.0, learning_rate=0.1, layerwise_lr_decay=0.5), model
    )
    assert type(optimizer).__name__ == "LayerwiseSGD"
    variables = model.trainable_variables
    before = {v.path: keras.ops.convert_to_numpy(v) for v in variables}
    after = _apply(optimizer, model, [np.ones(v.shape, np.float32) for v in variables])
    step = {p: float(np.mean(before[p] - after[p])) for p in before}  # = lr * scale.
    top = [p for p in step if p.startswith("transformer_layer_1/")]
    bottom = [p for p in step if p.startswith("token_embedding/")]
    head = [p for p in step if p.startswith("head_output/")]
    assert top and bottom and head
    for p in top:
        assert step[p] == pytest.approx(0.05, rel=1e-4)
    for p in bottom:
        assert step[p] == pytest.approx(0.0125, rel=1e-4)
    for p in head:
        assert step[p] == pytest.approx(0.1, rel=1e-4)


def test_layerwise_blocks_for_keras_applications_names():
    config = get_default_config()
    config.model.backbone = "small_cnn"
    model = build_image_model(config, 3)
    scales = optimizers.layerwise_lr_scales(model, 0.5)
    assert {p.split("/")[0]: s for p, s in scales.items()} == {
        "block1_conv": 0.125, "block1_bn": 0.125, "block2_conv": 0.25, "block2_bn": 0.25,
        "block3_conv": 0.5, "block3_bn": 0.5,
    }
    resnet = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    blocks = optimizers.backbone_blocks(resnet)
    assert len(blocks) == 5 and blocks[0][0].name == "conv1_conv"
    assert blocks[-1][-1].name.startswith("conv5_block3")


def test_recipe_trains_with_schedule_clipping_and_layerwise_decay_mirrored(tmp_path, image_folder,
                                                                          caplog):
    caplog.set_level(logging.INFO, logger="absl")
    config = validate_config({
        "data": {"source": "image_folder", "path": image_folder, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 3, "batch_size": 8, "optimizer": "adamw", "learning_rate": 3e-3,
                  "weight_decay": 0.01, "schedule": "cosine", "warmup_steps": 2,
                  "global_clipnorm": 1.0, "layerwise_lr_decay": 0.8,
                  "gradient_accumulation_steps": 1, "early_stopping_patience": 0},
        "runtime": {"strategy": "mirrored"},  # 2 logical CPUs (conftest).
    })
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    rows = list(csv.DictReader(open(os.path.join(tmp_path, "run", "training_log.csv"))))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0], losses
    assert np.isfinite(metrics["loss"])
    assert "Optimizer LayerwiseAdamW, learning rate CosineDecay over 9 steps" in caplog.text
    assert "global_clipnorm 1" in caplog.text
