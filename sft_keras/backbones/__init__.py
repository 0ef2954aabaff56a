"""Pretrained backbones by name.

`BACKBONES` maps a name to a `BackboneSpec`: image backbones from
`keras.applications` and keras-hub presets (`hub_image`), text encoders from
keras-hub.
"""

from sft_keras.backbones.registry import BACKBONES, BackboneSpec, get_backbone_spec
from sft_keras.backbones.images import (
    ImagePreprocessing,
    build_image_backbone,
)

from sft_keras.backbones import hub_images  # noqa: F401  (registers "hub_image")
from sft_keras.backbones.hub_images import ScaleOffset
from sft_keras.backbones.text import (
    MaskedAveragePooling,
    MaskedMaxPooling,
    FirstTokenPooling,
    TEXT_FAMILIES,
    TextFamily,
    build_text_backbone,
    copy_encoder_layers,
    kept_layers,
    text_family,
    load_text_tokenizer,
    make_preprocessor,
    save_tiny_bert_preset,
    save_tiny_text_preset,
)

__all__ = [
    "MaskedAveragePooling",
    "MaskedMaxPooling",
    "FirstTokenPooling",
    "TEXT_FAMILIES",
    "TextFamily",
    "text_family",
    "save_tiny_text_preset",
    "build_text_backbone",
    "copy_encoder_layers",
    "kept_layers",
    "load_text_tokenizer",
    "make_preprocessor",
    "save_tiny_bert_preset",
    "BACKBONES",
    "BackboneSpec",
    "ImagePreprocessing",
    "ScaleOffset",
    "build_image_backbone",
    "get_backbone_spec",
]
