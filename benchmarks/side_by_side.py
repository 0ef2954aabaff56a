"""Side by side on the SST-2 budget run: sft-train, keras-hub's fit, the Hugging Face Trainer.

The same data (the first `--train_examples` sentences of SST-2's train.tsv,
the full dev set), the same model (all-MiniLM-L6-v2), sequence length,
batch size, learning rate (AdamW 5e-5, weight decay 0.01, constant) and
epochs, each variant in a fresh process, one after the other:

- `sft_padded`: `sft-train` (configs/sst2.py) with `data.length_buckets=()`:
  every batch padded to the sequence length (sft_keras before length buckets).
- `sft_bucketed`: `sft-train` as it is by default: length-sorted batches cut
  to 16/32/64 tokens (`data.length_buckets`, `data.length_sort_window`).
- `sft_auto`: `sft_bucketed` with the optimizer keys left to sft_keras's default
  recipe for text encoders (AdamW, weight decay 0.01, linear decay after a 10%
  warmup, 1e-4 for MiniLM's hidden size 384;
  `sft_keras.training.optimizers.resolve_recipe`) instead of the config's.
- `keras_hub`: keras-hub's `BertTextClassifier` (its preprocessor, padding to
  the sequence length; [CLS] pooler head) `.fit` on the raw strings.
- `keras_hub_defaults`: the same classifier with keras-hub's own defaults:
  `compile()` with no arguments (Adam 5e-5, no weight decay).
- `hf_trainer`: `transformers.Trainer` with its default dynamic padding
  (`DataCollatorWithPadding`), run by `--hf_python` (torch + transformers are
  benchmark-only: not sft_keras dependencies). Skipped, with a line saying
  so, when that Python cannot import them.

`train s` is the training steps only (tracing included; validation, model
loading and tokenization excluded); `total s` the variant's whole process.
Run (from the repository root; the 1-minute load average before and after
each variant is printed, since a shared machine skews timings):

    python benchmarks/side_by_side.py --hf_python=/work/venv_hf/bin/python \\
        --output=/tmp/side_by_side            # writes .md and .csv
    python benchmarks/side_by_side.py --smoke    # or SFT_SMOKE=1

`--smoke`: a tiny random-init BERT on 64 generated sentences, a few steps per
variant (no download, no MiniLM, no SST-2 files); its numbers mean nothing.
"""

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import REPO_ROOT, smoke_requested, tiny_vocabulary  # noqa: E402

VARIANTS = ("sft_padded", "sft_bucketed", "sft_auto", "keras_hub", "keras_hub_defaults",
            "hf_trainer")
# ../shared beside the checkout (or beside the folder of git worktrees).
SST2_DIR = next((d for d in (os.path.join(REPO_ROOT, *[".."] * up, "shared", "data", "sst2")
                             for up in (1, 2)) if os.path.isdir(d)),
                os.path.join(REPO_ROOT, "..", "shared", "data", "sst2"))
RESULT = "RESULT "  # Prefix of the line a variant's process prints its result on.


# === Data: the first N training sentences, the dev set, as lists ===

def read_tsv(path, text_column, limit=0):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit else rows
    return [r[text_column] for r in rows], [int(r["label"]) for r in rows]


def smoke_data(root):
    """64 training and 32 dev sentences; the label is set by one word; written as SST-2 TSVs."""
    import numpy as np

    rng = np.random.RandomState(0)
    words = ["the", "movie", "was", "a", "film", "plot", "really", "very", "and"]
    for name, n, column in (("train.tsv", 64, "sentence"), ("dev.tsv", 32, "content")):
        with open(os.path.join(root, name), "w", encoding="utf-8") as f:
            f.write(f"label\t{column}\n")
            for i in range(n):
                text = list(rng.choice(words, size=rng.randint(1, 8)))
                text.insert(rng.randint(0, len(text)), ["bad", "good"][i % 2])
                f.write(f"{i % 2}\t{' '.join(text)}\n")
    return root




# === One variant, in this process ===

def run_variant(name, args):
    """Runs one variant; returns a dict of its figures."""
    train_texts, train_labels = read_tsv(os.path.join(args.data_dir, "train.tsv"), "sentence",
                                         args.train_examples)
    dev_texts, dev_labels = read_tsv(os.path.join(args.data_dir, "dev.tsv"), "content")
    runner = {"keras_hub": run_keras_hub, "keras_hub_defaults": run_keras_hub,
              "hf_trainer": run_hf_trainer}.get(name, run_sft)
    result = runner(name, args, (train_texts, train_labels), (dev_texts, dev_labels))
    result.update(train_examples=len(train_texts), dev_examples=len(dev_texts))
    return result


def _train_timer():
    import keras

    class TrainTimer(keras.callbacks.Callback):
        """Seconds spent in training steps: epoch start to its last batch (no validation)."""

        def __init__(self):
            super().__init__()
            self.seconds, self._start, self._last = 0.0, None, None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = self._last = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds += self._last - self._start

    return TrainTimer()


def run_sft(name, args, train, dev):
    from sft_keras.config import validate_config
    from sft_keras.training import train_and_evaluate

    spec = importlib.util.spec_from_file_location("sst2", os.path.join(REPO_ROOT, "configs",
                                                                       "sst2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    workdir = tempfile.mkdtemp(prefix=f"sft_side_by_side_{name}_")
    subset = os.path.join(workdir, "train_subset.tsv")  # The first N sentences, as read.
    with open(subset, "w", encoding="utf-8") as f:
        f.write("label\tsentence\n" + "".join(f"{y}\t{t}\n" for t, y in zip(*train)))
    config.data.path = subset
    config.data.validation_path = os.path.join(args.data_dir, "dev.tsv")
    config.data.max_train_examples = 0
    config.data.sequence_length = args.sequence_length
    config.model.preset = args.preset
    config.train.batch_size = args.batch_size
    config.train.epochs = args.epochs
    config.train.early_stopping_patience = 0
    config.export.enabled = False
    if name == "sft_padded":
        config.data.length_buckets = ()
    if name == "sft_auto":  # The default recipe, as a config that sets none of it gets.
        config.train.optimizer, config.train.schedule = "auto", "auto"
        config.train.learning_rate = None
        config.train.weight_decay = None
        config.train.warmup_fraction = None
    timer = _train_timer()
    metrics = train_and_evaluate(validate_config(config), os.path.join(workdir, "run"),
                                 callbacks=[timer])
    return {"train_s": timer.seconds, "dev_accuracy": metrics["accuracy"]}


def run_keras_hub(name, args, train, dev):
    import keras
    import keras_hub
    import numpy as np

    from sft_keras.backbones import build_text_backbone, load_text_tokenizer

    keras.utils.set_random_seed(0)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        load_text_tokenizer("bert", args.preset), sequence_length=args.sequence_length)
    classifier = keras_hub.models.BertTextClassifier(
        build_text_backbone("bert", args.preset), num_classes=2, preprocessor=preprocessor)
    if name == "keras_hub_defaults":
        classifier.compile()  # keras-hub's "auto": Adam(5e-5), cross-entropy on logits.
    else:
        classifier.compile(
            optimizer=keras.optimizers.AdamW(5e-5, weight_decay=0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["sparse_categorical_accuracy"],
        )
    timer = _train_timer()
    classifier.fit(np.array(train[0]), np.array(train[1]), batch_size=args.batch_size,
                   epochs=args.epochs, callbacks=[timer], verbose=2)
    logits = classifier.predict(np.array(dev[0]), batch_size=args.batch_size, verbose=0)
    return {"train_s": timer.seconds,
            "dev_accuracy": float(np.mean(np.argmax(logits, -1) == np.array(dev[1])))}


def _hf_model(args):
    """(tokenizer, model): the preset folder (MiniLM is stored in HF format), or a tiny BERT."""
    import transformers

    if not args.smoke:
        return (transformers.AutoTokenizer.from_pretrained(args.preset),
                transformers.AutoModelForSequenceClassification.from_pretrained(
                    args.preset, num_labels=2))
    vocab = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(tiny_vocabulary()) + "\n")
    config = transformers.BertConfig(vocab_size=len(tiny_vocabulary()), hidden_size=16,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64,
                                     num_labels=2)
    return (transformers.BertTokenizerFast(vocab), transformers.BertForSequenceClassification(config))


def run_hf_trainer(name, args, train, dev):
    import numpy as np
    import transformers

    transformers.set_seed(0)
    tokenizer, model = _hf_model(args)

    def encode(texts, labels):  # Truncated, not padded: the collator pads each batch.
        encoded = tokenizer(texts, truncation=True, max_length=args.sequence_length)
        return [{**{k: v[i] for k, v in encoded.items()}, "labels": labels[i]}
                for i in range(len(texts))]

    training_args = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="sft_side_by_side_hf_"),
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.epochs, learning_rate=5e-5, weight_decay=0.01,
        lr_scheduler_type="constant", save_strategy="no", eval_strategy="no",
        logging_strategy="no", report_to=[], seed=0, use_cpu=True, disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model, args=training_args, train_dataset=encode(*train),
        data_collator=transformers.DataCollatorWithPadding(tokenizer),  # The default.
    )
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    logits = trainer.predict(encode(*dev)).predictions
    return {"train_s": train_s,
            "dev_accuracy": float(np.mean(np.argmax(logits, -1) == np.array(dev[1])))}


# === The comparison: every variant in a fresh process, then the table ===

def hf_available(python):
    check = "import torch, transformers, accelerate"
    return subprocess.run([python, "-c", check], capture_output=True).returncode == 0


def run_in_subprocess(name, args, argv):
    python = args.hf_python if name == "hf_trainer" else sys.executable
    start, load = time.perf_counter(), os.getloadavg()[0]
    process = subprocess.run([python, os.path.abspath(__file__), f"--variant={name}", *argv],
                             capture_output=True, text=True, cwd=REPO_ROOT)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT)]
    if process.returncode or not lines:
        sys.stderr.write(process.stdout[-3000:] + process.stderr[-3000:])
        raise SystemExit(f"{name} failed (exit {process.returncode}); its output is above.")
    result = json.loads(lines[-1][len(RESULT):])
    result.update(total_s=time.perf_counter() - start, load_before=load,
                  load_after=os.getloadavg()[0])
    return result


def table(rows, args):
    header = ["variant", "train s", "train examples/s", "dev accuracy", "total s",
              "load before/after"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    body = []
    for name, r in rows:
        cells = [name, f"{r['train_s']:.1f}", f"{r['train_examples'] * args.epochs / r['train_s']:.1f}",
                 f"{r['dev_accuracy']:.4f}", f"{r['total_s']:.1f}",
                 f"{r['load_before']:.1f}/{r['load_after']:.1f}"]
        body.append(cells)
        lines.append("| " + " | ".join(cells) + " |")
    return header, body, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny BERT, tiny data (SFT_SMOKE=1).")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--train_examples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--sequence_length", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--data_dir", default=os.path.normpath(SST2_DIR))
    parser.add_argument("--preset", default="", help="Default: all-MiniLM-L6-v2.")
    parser.add_argument("--hf_python", default=sys.executable,
                        help="A Python with torch, transformers and accelerate.")
    parser.add_argument("--output", default="", help="Writes OUTPUT.md and OUTPUT.csv.")
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)  # One, in this process.
    args = parser.parse_args(argv)
    args.smoke = smoke_requested(args.smoke)
    if args.smoke and not args.variant:
        args.data_dir = smoke_data(tempfile.mkdtemp(prefix="sft_side_by_side_data_"))
        args.train_examples, args.batch_size, args.sequence_length = 64, 16, 32
    if args.variant:
        if not args.preset:
            from benchmarks.common import tiny_bert_preset
            from sft_keras.backbones.text import minilm_preset

            args.preset = (tiny_bert_preset(max_sequence_length=64) if args.smoke
                           else minilm_preset())
        print(RESULT + json.dumps(run_variant(args.variant, args)), flush=True)
        return

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"Unknown --variants {unknown}; known: {', '.join(VARIANTS)}")
    forwarded = [f"--train_examples={args.train_examples}", f"--epochs={args.epochs}",
                 f"--sequence_length={args.sequence_length}", f"--batch_size={args.batch_size}",
                 f"--data_dir={args.data_dir}"] + (["--smoke"] if args.smoke else []) + (
                     [f"--preset={args.preset}"] if args.preset else [])
    print(f"SST-2 budget run{' (smoke: tiny BERT, generated data)' if args.smoke else ''}: "
          f"first {args.train_examples} training sentences, {args.epochs} epoch(s), sequence "
          f"length {args.sequence_length}, batch {args.batch_size}, data {args.data_dir}",
          flush=True)
    rows = []
    for name in names:
        if name == "hf_trainer" and not hf_available(args.hf_python):
            print(f"hf_trainer: skipped: {args.hf_python} cannot import torch, transformers and "
                  "accelerate (benchmark-only; see benchmarks/README.md).", flush=True)
            continue
        rows.append((name, run_in_subprocess(name, args, forwarded)))
        print(f"{name}: done in {rows[-1][1]['total_s']:.0f} s: {json.dumps(rows[-1][1])}",
              flush=True)
    header, body, markdown = table(rows, args)
    print(markdown)
    if args.output:
        with open(args.output + ".md", "w") as f:
            f.write(markdown + "\n")
        with open(args.output + ".csv", "w", newline="") as f:
            csv.writer(f).writerows([header] + body)
        print(f"Wrote {args.output}.md and {args.output}.csv")


if __name__ == "__main__":
    main()
