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
)
from sft_keras.data.pipeline import make_image_dataset, make_text_dataset
from sft_keras.data.split import limit_examples, split_examples
from sft_keras.data.text import (
    TEXT_TABLE_EXTENSIONS,
    TextData,
    TextExamples,
    load_chatterbot_topics,
    load_text_data,
    load_tfds_text,
    read_text_columns,
    read_text_folder,
    read_text_table,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageData",
    "ImageExamples",
    "TEXT_TABLE_EXTENSIONS",
    "TextData",
    "TextExamples",
    "check_images_decode",
    "decode_image_bytes",
    "limit_examples",
    "load_chatterbot_topics",
    "load_digits",
    "load_image_data",
    "load_text_data",
    "load_tfds_text",
    "make_image_dataset",
    "make_text_dataset",
    "read_csv_manifest",
    "read_image_folder",
    "read_text_columns",
    "read_text_folder",
    "read_text_table",
    "split_examples",
]
