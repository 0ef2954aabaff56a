"""Backbones by name, local weights files, the offline ImageNet path, preprocessing."""

import os

import keras
import numpy as np
import pytest

from sft_keras.backbones import BACKBONES, ImagePreprocessing, build_image_backbone
from sft_keras.errors import ConfigError, WeightsError

from helpers import run_cli


def test_registry_has_the_image_backbones():
    for name in ("vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0", "small_cnn"):
        assert name in BACKBONES


def test_unknown_backbone_lists_the_known_names():
    with pytest.raises(ConfigError, match="Unknown backbone 'vgg17'.*'resnet50'.*'vgg16'"):
        build_image_backbone("vgg17")


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v2"])
def test_local_weights_file_reloads_with_identical_outputs(tmp_path, name):
    keras.utils.set_random_seed(1)
    original = build_image_backbone(name, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / f"{name}.weights.h5")
    original.save_weights(path)
    keras.utils.set_random_seed(2)  # A fresh model would start from other weights...
    reloaded = build_image_backbone(name, weights=path, input_shape=(32, 32, 3))
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32")
    np.testing.assert_array_equal(original.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    for a, b in zip(original.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = build_image_backbone(name, weights=None, input_shape=(32, 32, 3))
    assert not np.array_equal(original.get_weights()[0], fresh.get_weights()[0])


def test_weights_file_of_another_architecture_is_a_clear_error(tmp_path):
    path = str(tmp_path / "small.weights.h5")
    build_image_backbone("small_cnn", input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(WeightsError, match="Could not load weights file .*small.weights.h5.* 'vgg16'"):
        build_image_backbone("vgg16", weights=path, input_shape=(32, 32, 3))


def test_missing_weights_file_is_a_clear_error():
    with pytest.raises(WeightsError, match="no such file"):
        build_image_backbone("vgg16", weights="/nonexistent/vgg16.weights.h5")


def test_imagenet_offline_fails_fast_with_instructions(tmp_path):
    # A fresh process whose HTTPS traffic goes to a closed local port: exactly
    # what an offline machine looks like to urllib, without mocking anything.
    code = (
        "import time; from sft_keras.backbones import build_image_backbone\n"
        "from sft_keras.errors import WeightsError\n"
        "t = time.time()\n"
        "try:\n"
        "    build_image_backbone('vgg16', weights='imagenet', input_shape=(32, 32, 3))\n"
        "except WeightsError as e:\n"
        "    print('ERROR', e); print('SECONDS', time.time() - t)\n"
    )
    result = run_cli(
        ["python", "-c", code],
        env={"KERAS_HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9",
             "https_proxy": "http://127.0.0.1:9"},
        timeout=120,
    )
    assert "ERROR" in result.stdout, result.stdout + result.stderr
    assert "--config.model.weights=/path/to/file.h5" in result.stdout
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in result.stdout
    seconds = float(result.stdout.split("SECONDS")[1])
    assert seconds < 30


def test_preprocessing_layer_uses_the_backbone_function():
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    vgg = keras.applications.vgg16.preprocess_input(pixels.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ImagePreprocessing("vgg16")(pixels)), vgg)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ImagePreprocessing("mobilenet_v2")(pixels)), [[[[-1, 0, 1]]]]
    )
    layer = ImagePreprocessing.from_config(ImagePreprocessing("resnet50").get_config())
    assert layer.backbone == "resnet50"
