"""Digits: train an image classifier on real handwritten digits, fully offline.

Uses scikit-learn's 1,797 8x8 digit images (shipped with scikit-learn, so no
network is needed), upsampled to 32x32, and the small CNN backbone trained
from random init (no pretrained weights exist offline, so BatchNorm trains
too). For real transfer learning see configs/vgg16_image_folder.py.

Run:

    sft-train --config=configs/digits.py --workdir=/tmp/sft_digits

Expected: validation accuracy 0.936 (359 examples) after 10 epochs, in about
60 s on 2 busy AMD EPYC cores (measured with the command above; identical
before and after the 0.3 restructuring; an earlier Intel machine measured
0.978, oneDNN's kernels differ by CPU). Smoke run: append `:runlocal`.
"""

from sft_keras.config import get_default_config


def get_config(arg=None):
    config = get_default_config()
    config.data.source = "digits"
    config.data.image_size = (32, 32)
    config.model.backbone = "small_cnn"
    config.model.weights = None
    config.model.freeze.batchnorm = False  # Training from scratch: BN must learn.
    config.model.head.dropout = 0.1
    config.train.epochs = 10
    config.train.batch_size = 64
    config.train.learning_rate = 2e-3
    config.train.early_stopping_patience = 3
    if arg == "runlocal":
        config.train.epochs = 1
    return config
