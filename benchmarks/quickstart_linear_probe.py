"""Baseline for configs/quickstart.py: a linear probe on frozen MiniLM embeddings.

Embeds every utterance with the pretrained all-MiniLM-L6-v2 (mean pooling over
tokens, as sentence-transformers does), fits a logistic regression on the
training split and scores the validation split: the same split, seed and
sequence length as the quickstart. Fine-tuning should beat it.

Run:

    python benchmarks/quickstart_linear_probe.py
"""

import importlib.util
import os
import sys
import time


import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from sft_keras.backbones import MaskedAveragePooling, build_text_backbone, load_text_tokenizer, make_preprocessor  # noqa: E402,E501
from sft_keras.config import validate_config  # noqa: E402
from sft_keras.data import load_text_data, make_text_dataset  # noqa: E402


def main():
    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "configs", "quickstart.py"))
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    config = validate_config(quickstart.get_config())
    start = time.time()
    data = load_text_data(config.data, config.task, config.seed)
    tokenizer = load_text_tokenizer("bert", config.model.preset)
    preprocessor = make_preprocessor(tokenizer, config.data.sequence_length)
    backbone = build_text_backbone("bert", config.model.preset)
    pool = MaskedAveragePooling()

    def embed(examples):
        dataset = make_text_dataset(examples, preprocessor, batch_size=64)
        chunks = []
        for features, _ in dataset:
            out = backbone(features, training=False)
            chunks.append(np.asarray(pool(out["sequence_output"], features["padding_mask"])))
        return np.concatenate(chunks)

    train_x, val_x = embed(data.train), embed(data.validation)
    probe = LogisticRegression(max_iter=2000, C=10.0).fit(train_x, data.train.labels)
    accuracy = probe.score(val_x, data.validation.labels)
    majority = np.bincount(data.validation.labels).max() / len(data.validation)
    print(f"train={len(data.train)} validation={len(data.validation)} classes={data.class_names}")
    print(f"majority-class accuracy: {majority:.4f}")
    print(f"linear probe accuracy:   {accuracy:.4f}  ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
