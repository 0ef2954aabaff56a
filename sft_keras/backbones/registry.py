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


def get_backbone_spec(name):
    """Returns the `BackboneSpec` registered as `name`; unknown names list the known ones."""
    return BACKBONES.get(name)
