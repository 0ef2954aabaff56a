"""Tiny finished runs (a workdir as sft-train leaves it) for export, serving and predict tests."""

import os

from sft_keras.backbones import text as text_backbones
from sft_keras.config import validate_config
from sft_keras.training import train_and_evaluate

from conftest import write_image_folder
from test_text_train import VOCAB, write_sentiment_csv


def train_image_run(root, epochs=2):
    """Trains small_cnn on 32x32 generated images (3 classes); returns (workdir, image folder)."""
    images = write_image_folder(os.path.join(root, "images"), per_class=8)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25,
                 "image_size": (32, 32)},
        "model": {"backbone": "small_cnn"},
        "train": {"epochs": epochs, "batch_size": 8, "early_stopping_patience": 0},
    })
    workdir = os.path.join(root, "image_run")
    train_and_evaluate(config, workdir)
    return workdir, images


def train_text_run(root, epochs=1, sequence_length=16):
    """Trains a 2-layer tiny BERT on a generated sentiment CSV; returns (workdir, csv path)."""
    preset = text_backbones.save_tiny_bert_preset(
        os.path.join(root, "tiny_bert"), VOCAB, hidden_dim=32, intermediate_dim=64)
    csv_path = write_sentiment_csv(os.path.join(root, "train.csv"), n=48)
    config = validate_config({
        "data": {"source": "text_file", "path": csv_path, "sequence_length": sequence_length,
                 "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": epochs, "batch_size": 16, "learning_rate": 3e-3,
                  "early_stopping_patience": 0},
    })
    workdir = os.path.join(root, "text_run")
    train_and_evaluate(config, workdir)
    return workdir, csv_path
