"""The backbone registry: a name -> `BackboneSpec` map shared by all modalities."""

import dataclasses
from typing import Callable, Optional

from sft_keras.registry import Registry


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What sft_keras needs to know to build one named backbone.

    Args:
        name: str. The `model.backbone` config value.
        modality: str. `"image"` or `"text"`.
        constructor: callable. Builds the Keras model (e.g.
            `keras.applications.VGG16`).
        preprocess_input: callable or None. Image backbones: their own input
            preprocessing (e.g. `keras.applications.vgg16.preprocess_input`),
            applied to float pixels in [0, 255]. None for text backbones, whose
            tokenizer comes with the preset.
    """

    name: str
    modality: str
    constructor: Callable
    preprocess_input: Optional[Callable] = None


BACKBONES = Registry("backbone", config_key="model.backbone")


def get_backbone_spec(name, modality=None):
    """Returns the `BackboneSpec` registered as `name`; unknown names list the known ones.

    Args:
        name: str. The `model.backbone` value.
        modality: str or None. When given, a backbone registered for another
            modality is a `ConfigError`.
    """
    from sft_keras.errors import ConfigError

    spec = BACKBONES.get(name)
    if modality not in (None, spec.modality):
        raise ConfigError(f"Backbone {name!r} is a {spec.modality} backbone, not a {modality} one. "
                          f"Received: model.backbone={name!r}")
    return spec
