"""Pretrained backbones by name.

`BACKBONES` maps a name to a `BackboneSpec`; image backbones come from
`keras.applications`. Text encoders (keras-hub) join the same registry.
"""

from sft_keras.backbones.registry import BACKBONES, BackboneSpec, get_backbone_spec
from sft_keras.backbones.images import (
    ImagePreprocessing,
    build_image_backbone,
)

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "ImagePreprocessing",
    "build_image_backbone",
    "get_backbone_spec",
]
