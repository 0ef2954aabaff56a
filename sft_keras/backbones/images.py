"""Image backbones from `keras.applications`, with their own preprocessing.

Every backbone is built with `include_top=False`; the model adds its own head.
`weights` is None (random init), `"imagenet"` (Keras downloads the file into
`~/.keras/models/` on first use) or the path of a local weights file.
"""

import contextlib
import os
import socket

import keras

from sft_keras.backbones.registry import BACKBONES, BackboneSpec, get_backbone_spec
from sft_keras.errors import WeightsError

_apps = keras.applications
for _name, _constructor, _module in [
    ("vgg16", _apps.VGG16, _apps.vgg16),
    ("vgg19", _apps.VGG19, _apps.vgg19),
    ("resnet50", _apps.ResNet50, _apps.resnet50),
    ("resnet101", _apps.ResNet101, _apps.resnet),
    ("resnet50_v2", _apps.ResNet50V2, _apps.resnet_v2),
    ("mobilenet_v2", _apps.MobileNetV2, _apps.mobilenet_v2),
    ("efficientnet_b0", _apps.EfficientNetB0, _apps.efficientnet),
]:
    BACKBONES.register(
        _name,
        BackboneSpec(
            name=_name,
            modality="image",
            constructor=_constructor,
            preprocess_input=_module.preprocess_input,
        ),
    )

# Seconds to wait for the ImageNet weights server before declaring we are offline.
_DOWNLOAD_TIMEOUT_S = 20


@contextlib.contextmanager
def _socket_timeout(seconds):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def build_image_backbone(name, weights=None, input_shape=(224, 224, 3)):
    """Builds the image backbone `name` without its classification top.

    Args:
        name: str. A registered image backbone, e.g. `"vgg16"`, `"resnet50"`,
            `"mobilenet_v2"`.
        weights: None, `"imagenet"`, or the path of a weights file: a
            `.weights.h5` file written by `backbone.save_weights()` or a
            `keras.applications` `..._notop.h5` file downloaded elsewhere.
        input_shape: tuple of int. `(height, width, 3)`.

    Returns:
        A functional `keras.Model` mapping preprocessed images to feature maps.

    Raises:
        WeightsError: the ImageNet weights cannot be downloaded (offline) or a
            weights file does not fit the architecture.

    Example:

    >>> backbone = build_image_backbone("vgg16", weights=None, input_shape=(32, 32, 3))
    >>> backbone.output.shape
    (None, 1, 1, 512)
    """
    spec = get_backbone_spec(name, modality="image")
    kwargs = dict(include_top=False, input_shape=tuple(input_shape), name=name)
    if weights is None:
        return spec.constructor(weights=None, **kwargs)
    if weights == "imagenet":
        try:
            with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                return spec.constructor(weights="imagenet", **kwargs)
        except Exception as e:  # Keras raises a bare Exception on URL failures.
            if "fetch failure" not in str(e) and not isinstance(e, OSError):
                raise
            cache = os.path.join(os.environ.get("KERAS_HOME", "~/.keras"), "models")
            raise WeightsError(
                f"Could not download the ImageNet weights of backbone {name!r} "
                f"(model.weights='imagenet'): {e}. This machine looks offline. "
                f"Download the '..._notop.h5' file named above on a machine with "
                f"network access and either put it in {cache}/ or pass its path: "
                f"--config.model.weights=/path/to/file.h5"
            ) from None
    if not os.path.isfile(weights):
        raise WeightsError(
            f"model.weights must be None, 'imagenet' or an existing weights file. "
            f"Received: model.weights={weights!r} (no such file)"
        )
    backbone = spec.constructor(weights=None, **kwargs)
    try:
        backbone.load_weights(weights)
    except Exception as e:
        raise WeightsError(
            f"Could not load weights file {weights!r} into backbone {name!r} "
            f"with input_shape={tuple(input_shape)}: {e}"
        ) from e
    return backbone


@keras.saving.register_keras_serializable(package="sft_keras")
class ImagePreprocessing(keras.layers.Layer):
    """Applies a backbone's own `preprocess_input` to float pixels in [0, 255].

    Living inside the model, it runs identically in training, evaluation and
    every exported serving signature.

    Args:
        backbone: str. The registered backbone whose `preprocess_input` to use.

    Example:

    >>> import numpy as np
    >>> layer = ImagePreprocessing("mobilenet_v2")  # scales to [-1, 1]
    >>> np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]]))).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._preprocess = get_backbone_spec(backbone).preprocess_input

    def call(self, images):
        return self._preprocess(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"backbone": self.backbone})
        return config


def small_cnn(include_top=False, weights=None, input_shape=(32, 32, 3), name="small_cnn"):
    """A small, fast CNN (three conv blocks, ~100k parameters) for CPU runs and tests.

    Same signature as the `keras.applications` constructors; it has no
    published pretrained weights, so `weights` is None or a local file.
    Inputs are float pixels in [0, 255] (see `small_cnn_preprocess_input`).
    """
    if include_top:
        raise ValueError("small_cnn has no classification top; use include_top=False.")
    if weights not in (None,) and not (isinstance(weights, str) and os.path.isfile(weights)):
        raise WeightsError(
            f"small_cnn has no published pretrained weights; use None or a local file. "
            f"Received: model.weights={weights!r}"
        )
    inputs = keras.Input(input_shape, name="input_layer")
    x = inputs
    for i, filters in enumerate((32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
        if i < 2:
            x = keras.layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def small_cnn_preprocess_input(x):
    """Scales pixels from [0, 255] to [0, 1]."""
    return x / 255.0


BACKBONES.register(
    "small_cnn",
    BackboneSpec(
        name="small_cnn",
        modality="image",
        constructor=small_cnn,
        preprocess_input=small_cnn_preprocess_input,
    ),
)
