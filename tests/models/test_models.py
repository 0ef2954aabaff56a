"""Model assembly: heads per task, augmentation, the seed recipes' shapes, finding the backbone."""

import os

import keras
import keras_hub
import numpy as np
import pytest

from sft_keras.backbones import build_text_backbone
from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.models import build_image_model, build_text_model, find_backbone, freeze_unused_pooler
from sft_keras.training import optimizers

from helpers import REPO_ROOT, load_config_file, write_tiny_bert_preset


def _load_config(name, arg):
    return load_config_file(os.path.join(REPO_ROOT, "configs", f"{name}.py"), arg)


def test_seed_001_vgg16_recipe():
    config = _load_config("vgg16_image_folder", "runlocal")
    model = build_image_model(validate_config(config), num_classes=10)
    vgg = model.get_layer("vgg16")
    assert [layer.name for layer in vgg.layers if layer.trainable] == [
        "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"
    ]
    head = [layer for layer in model.layers if layer.name.startswith(("flatten", "head_dense", "head_output"))]
    assert [type(layer).__name__ for layer in head] == ["Flatten", "Dense", "Dense"]
    assert head[1].units == 1024 and head[1].activation.__name__ == "relu"
    assert head[2].units == 10 and head[2].activation.__name__ == "softmax"
    assert {"random_flip", "random_rotation", "random_zoom"} <= {layer.name for layer in model.layers}


def test_seed_002_resnet50_regression_recipe():
    config = validate_config(_load_config("resnet50_regression", "runlocal"))
    model = build_image_model(config, num_classes=1)
    output = model.get_layer("head_output")
    assert output.units == 1 and output.activation.__name__ == "linear"
    resnet = model.get_layer("resnet50")
    assert resnet.layers[143].name == "conv5_block1_1_conv" and resnet.layers[143].trainable
    assert not resnet.layers[142].trainable
    assert not any(l.trainable for l in resnet.layers if isinstance(l, keras.layers.BatchNormalization))


@pytest.mark.parametrize("task,classes,units,activation", [
    ("classification", 4, 4, "softmax"), ("binary", 2, 1, "sigmoid"), ("regression", 1, 1, "linear"),
])
@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_heads_per_task_and_pooling(task, classes, units, activation, pooling):
    config = get_default_config()
    config.task = task
    config.model.backbone = "small_cnn"
    config.model.head.pooling = pooling
    config.model.head.hidden_units = (16, 8)
    config.model.head.dropout = 0.2
    model = build_image_model(config, classes)
    assert model.output.shape == (None, units)
    assert model.get_layer("head_output").activation.__name__ == activation
    assert [model.get_layer(f"head_dense_{i}").units for i in range(2)] == [16, 8]
    outputs = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    if activation == "softmax":
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0, atol=1e-5)


def test_augmentation_is_active_only_in_training():
    config = get_default_config()
    config.model.backbone = "small_cnn"
    config.data.augment.flip = "horizontal_and_vertical"
    config.data.augment.rotation = 0.2
    keras.utils.set_random_seed(0)
    model = build_image_model(config, 3)
    x = np.random.RandomState(0).rand(8, 32, 32, 3).astype("float32") * 255
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    for name in ("random_flip", "random_rotation"):
        layer = model.get_layer(name)
        np.testing.assert_array_equal(layer(x, training=False), x)
        assert not np.allclose(layer(x, training=True), x)


# --- find_backbone, freeze_unused_pooler ------------------------------------------------


def _image_model():
    config = get_default_config()
    config.model.backbone = "small_cnn"
    return build_image_model(config, num_classes=3)


def test_find_backbone_of_an_image_model():
    model = _image_model()
    backbone = find_backbone(model)
    assert isinstance(backbone, keras.Model) and backbone.name == "small_cnn"
    assert backbone is model.get_layer("small_cnn")


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    return write_tiny_bert_preset(tmp_path_factory.mktemp("bert"))


def _text_model(preset, pooling="avg"):
    config = get_default_config()
    config.model.backbone, config.model.preset = "bert", preset
    config.data.sequence_length = 8
    config.model.head.pooling = pooling
    return build_text_model(config, build_text_backbone("bert", preset), 3)


def test_find_backbone_of_a_text_model(tiny_preset):
    backbone = find_backbone(_text_model(tiny_preset))
    assert isinstance(backbone, keras_hub.models.BertBackbone)


def test_find_backbone_names_the_model_and_what_it_holds():
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="plain")
    with pytest.raises(ConfigError, match=r"model 'plain'.*found 0\.$"):
        find_backbone(plain)
    inputs = keras.Input((2,))
    first = keras.Sequential([keras.layers.Dense(2)], name="first")
    second = keras.Sequential([keras.layers.Dense(1)], name="second")
    two = keras.Model(inputs, second(first(inputs)), name="two")
    with pytest.raises(ConfigError, match=r"model 'two'.*found 2: 'first' \(Sequential\), "
                                          r"'second' \(Sequential\)\."):
        find_backbone(two)
    with pytest.raises(ConfigError, match=r"train.layerwise_lr_decay=0.5: .*model 'plain'"):
        optimizers.layerwise_lr_scales(plain, 0.5)


@pytest.mark.parametrize("pooling", ["avg", "max", "cls"])
def test_freeze_unused_pooler(tiny_preset, pooling):
    backbone = find_backbone(_text_model(tiny_preset, pooling))
    assert backbone.get_layer("pooled_dense").trainable == (pooling == "cls")
    backbone.get_layer("pooled_dense").trainable = True
    assert freeze_unused_pooler(backbone, pooling) == (pooling != "cls")
    assert backbone.get_layer("pooled_dense").trainable == (pooling == "cls")
    assert freeze_unused_pooler(find_backbone(_image_model()), "avg") is False
