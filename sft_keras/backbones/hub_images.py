"""Image backbones from keras-hub presets (`model.backbone="hub_image"`, `model.preset=...`).

Any keras-hub image classifier family (EfficientNet, ResNet, ConvNeXt, ViT,
MobileNet, DINOv2, ...) by preset name (downloaded on first use: needs
network) or local preset folder, e.g. the offline EfficientNet-Lite0 that
`python -m sft_keras.backbones.efficientnet_lite` writes. The preset's own
image converter gives the rescaling (`scale`, `offset`), applied inside the
model by `ScaleOffset`, so training and the `image_bytes` export see the
same pixels; resizing is `data.image_size` (set it to the preset's size,
e.g. 224, for pretrained weights).
"""

import json
import os

import keras

from sft_keras.backbones.registry import BACKBONES, BackboneSpec
from sft_keras.errors import ConfigError, WeightsError

NAME = "hub_image"


def resolve_image_preset(preset):
    """Checks `model.preset` for `hub_image` and returns what to pass to `from_preset()`.

    Raises:
        ConfigError: empty value, a missing folder, a folder that is not a
            keras-hub preset, or an unknown preset name (listing known ones).
        WeightsError: a preset that must be downloaded while offline.
    """
    import keras_hub

    from sft_keras.backbones.text import resolve_preset

    if not preset:
        raise ConfigError("model.backbone='hub_image' needs model.preset: a keras-hub image preset "
                          "name or a local preset folder. Received: model.preset=''")
    if os.path.isdir(preset) and not os.path.isfile(os.path.join(preset, "config.json")):
        raise ConfigError(f"model.preset folder {preset!r} is not a keras-hub preset (it has no "
                          f"config.json). Received: model.preset={preset!r}")
    return resolve_preset(preset, backbone_cls=keras_hub.models.ImageClassifier)


def build_hub_image_backbone(preset, pretrained=True):
    """Loads the backbone of a keras-hub image preset.

    Args:
        preset: str. A keras-hub preset name or local preset folder.
        pretrained: bool. Load the preset's weights; False builds the same
            architecture with random weights (a checkpoint sets them next).

    Returns:
        A `keras_hub.models.Backbone` (a functional `keras.Model` whose
        `layers` freezing indexes and matches by name).

    Raises:
        WeightsError: the preset cannot be loaded (naming it and why).
    """
    import keras_hub

    resolved = resolve_image_preset(preset)
    try:
        return keras_hub.models.Backbone.from_preset(resolved, load_weights=pretrained)
    except Exception as e:
        raise WeightsError(f"Could not load the image backbone of model.preset={preset!r}: {e}") from e


def preset_scaling(preset):
    """The `(scale, offset)` of a preset's image converter: pixels * scale + offset.

    Each is None, a float, or a per-channel list, as keras-hub stores them.
    A local preset without `image_converter.json` scales pixels to [0, 1].
    """
    resolved = resolve_image_preset(preset)
    if os.path.isdir(resolved):
        path = os.path.join(resolved, "image_converter.json")
        if not os.path.isfile(path):
            return 1.0 / 255.0, 0.0
        with open(path, encoding="utf-8") as f:
            config = json.load(f)["config"]
        return config.get("scale"), config.get("offset")
    import keras_hub

    converter = keras_hub.layers.ImageConverter.from_preset(resolved)
    return converter.scale, converter.offset


@keras.saving.register_keras_serializable(package="sft_keras")
class ScaleOffset(keras.layers.Layer):
    """`pixels * scale + offset`, per channel or overall: a keras-hub image converter's rescaling.

    Args:
        scale: None, float or list of floats (one per channel).
        offset: None, float or list of floats.

    Example:

    >>> import numpy as np
    >>> layer = ScaleOffset(scale=1 / 128, offset=-127 / 128)
    >>> np.asarray(layer(np.array([[[[127.0, 255.0, 0.0]]]])), "float64").round(4).tolist()
    [[[[0.0, 1.0, -0.9922]]]]
    """

    def __init__(self, scale=None, offset=None, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset

    def call(self, images):
        if self.scale is not None:
            images = images * keras.ops.convert_to_tensor(self.scale, images.dtype)
        if self.offset is not None:
            images = images + keras.ops.convert_to_tensor(self.offset, images.dtype)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "offset": self.offset})
        return config


BACKBONES.register(NAME, BackboneSpec(name=NAME, modality="image",
                                      constructor=build_hub_image_backbone))
