"""Models: a pretrained backbone, freezing (`freezing`), LoRA (`lora`) and a Dense head
(`heads`), assembled into one functional Keras model (`build`)."""

from sft_keras.models.build import (
    apply_freeze_config,
    build_augmentation,
    build_image_model,
    build_model,
    build_text_model,
    find_backbone,
    freeze_unused_pooler,
)

__all__ = [
    "apply_freeze_config",
    "build_augmentation",
    "build_image_model",
    "build_model",
    "build_text_model",
    "find_backbone",
    "freeze_unused_pooler",
]
