"""Data sources and tf.data pipelines."""

from sft_keras.data.images import (
    IMAGE_EXTENSIONS,
    ImageData,
    ImageExamples,
    check_images_decode,
    decode_image_bytes,
    load_digits,
    load_image_data,
    read_csv_manifest,
    read_image_folder,
    split_examples,
)
from sft_keras.data.pipeline import make_image_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ImageExamples",
    "check_images_decode",
    "decode_image_bytes",
    "load_digits",
    "load_image_data",
    "make_image_dataset",
    "read_csv_manifest",
    "read_image_folder",
    "split_examples",
]
