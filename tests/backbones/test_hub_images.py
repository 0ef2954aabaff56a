"""`model.backbone="hub_image"`: keras-hub image presets trained, frozen, rebuilt, exported, served."""

import base64
import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import validate_config
from sft_keras.data import decode_image_bytes
from sft_keras.errors import ConfigError
from sft_keras.models import find_backbone
from sft_keras.run import load_run
from sft_keras.training import train_and_evaluate

from bare_tensorflow import run_bare_tensorflow
from helpers import make_pattern_image, write_image_folder, write_tiny_hub_image_preset

_SERVE = """
    loaded = tf.saved_model.load(request["export"])
    images = tf.constant([base64.b64decode(x) for x in request["images"]])
    outputs = loaded.signatures["serving_default"](image_bytes=images)
    result({"probabilities": outputs["probabilities"].numpy().tolist()})
"""


def _config(preset, images, **model):
    return {
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25,
                 "image_size": (32, 32)},
        "model": {"backbone": "hub_image", "preset": preset, **model},
        "train": {"epochs": 4, "batch_size": 8, "learning_rate": 3e-3,
                  "early_stopping_patience": 0},
    }


def test_hub_image_preset_trains_rebuilds_exports_and_serves_in_bare_tensorflow(tmp_path):
    preset = write_tiny_hub_image_preset(tmp_path / "tiny_resnet")
    images = write_image_folder(str(tmp_path / "images"), per_class=16)
    config = validate_config(_config(preset, images, freeze={"until": 3}))
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["accuracy"] > 0.6, metrics  # 3 classes: chance is 0.33.

    run = load_run(str(tmp_path / "run"))  # Rebuilt from the preset's architecture + checkpoint.
    backbone = find_backbone(run.model)
    # model.freeze.until=3 froze input, conv1_pad, conv1_conv; BatchNorm stays frozen (default).
    assert not any(layer.trainable for layer in backbone.layers[:3])
    assert backbone.get_layer("stack0_block0_1_conv").trainable
    assert not backbone.get_layer("stack0_block0_1_bn").trainable
    assert run.model.get_layer("preprocessing").scale == pytest.approx(1 / 255.0)

    pngs = [tf.io.encode_png(make_pattern_image(c, seed=50 + c)).numpy() for c in range(3)]
    served, _ = run_bare_tensorflow(_SERVE, {
        "export": metrics["export_path"],
        "images": [base64.b64encode(p).decode() for p in pngs]})
    assert served["modules"] == []
    pixels = tf.stack([decode_image_bytes(p, (32, 32)) for p in pngs])
    np.testing.assert_allclose(served["probabilities"], run.model(pixels, training=False),
                               atol=1e-4)


@pytest.mark.parametrize("model, message", [
    ({"preset": ""}, "must name a keras-hub image preset or a local preset folder"),
    ({"preset": "/no/such/folder"}, "model.preset folder not found"),
    ({"preset": "not_a_real_preset_name"}, "Unknown keras-hub preset 'not_a_real_preset_name'"),
    ({"weights": "x.weights.h5"}, "'hub_image' backbone takes its weights from model.preset"),
])
def test_hub_image_config_errors_name_the_key_and_value(tmp_path, model, message):
    preset = write_tiny_hub_image_preset(tmp_path / "tiny_resnet")
    images = write_image_folder(str(tmp_path / "images"), per_class=4)
    config = _config(preset, images)
    config["model"].update(model)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config = validate_config(config, check_files=False)
        train_and_evaluate(config, str(tmp_path / "run"))


def test_a_folder_that_is_not_a_preset_and_a_preset_on_a_keras_applications_backbone(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), per_class=4)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ConfigError, match="is not a keras-hub preset"):
        train_and_evaluate(validate_config(_config(str(tmp_path / "empty"), images)),
                           str(tmp_path / "run"))
    config = _config("", images)
    config["model"].update(backbone="small_cnn", preset=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="model.preset.*is for keras-hub backbones"):
        validate_config(config)
