"""Training step time and trainable parameters: LoRA vs full fine-tuning of MiniLM.

Builds the configs/quickstart.py model twice, as `sft-train` does (the
modality's `build_model`, the config's optimizer, `compile_for_task`): every
weight trainable (learning rate 1e-4), and LoRA rank 8 on query/value
(1e-3). Times `train_on_batch` on the same real batch (the first training
batch of the quickstart's pipeline: 32 utterances, 32 tokens), alternating
between the two models so that both see the same machine load, and reports
the median step time of each, then the LoRA summary.

Run (from the repository root):

    python benchmarks/lora_step_time.py [steps]     # default 10
    python benchmarks/lora_step_time.py --smoke     # or SFT_SMOKE=1

`--smoke` uses a tiny random-init BERT (`benchmarks/common.py`; no download,
no MiniLM package needed), 16 tokens, batches of 8, and 1 timed step: a check
that the script works (`tests/test_benchmarks.py` runs it), not a measurement.
"""

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.common import quickstart_config, smoke_requested, tiny_bert_preset  # noqa: E402
from sft_keras.config import validate_config  # noqa: E402
from sft_keras.modalities import get_modality  # noqa: E402
from sft_keras.models import lora  # noqa: E402
from sft_keras.tasks import compile_for_task  # noqa: E402
from sft_keras.training import optimizers  # noqa: E402

VARIANTS = (("full", 0, 1e-4), ("lora8", 8, 1e-3))  # name, model.lora_rank, learning rate


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def base_config(smoke):
    """The quickstart config; in smoke mode with a tiny BERT, 16 tokens, batches of 8."""
    config = quickstart_config()
    if smoke:
        config.model.preset = tiny_bert_preset(max_sequence_length=16)
        config.data.sequence_length = 16
        config.data.max_train_examples = 32
        config.train.batch_size = 8
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("steps", nargs="?", type=int, default=10, help="Timed steps per model.")
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny BERT, 1 step (also SFT_SMOKE=1): a check, not a measurement.")
    args = parser.parse_args(argv)
    smoke = smoke_requested(args.smoke)
    steps = 1 if smoke else args.steps

    base = base_config(smoke)
    modality = get_modality(validate_config(copy.deepcopy(base)))
    data = modality.load_data()
    features, labels = next(iter(modality.make_dataset(data.train)))
    batch, tokens = int(labels.shape[0]), base.data.sequence_length

    models, times = {}, {}
    for name, rank, learning_rate in VARIANTS:
        config = copy.deepcopy(base)
        config.model.lora_rank = rank
        config.train.learning_rate = learning_rate
        config, _ = optimizers.resolve_recipe(validate_config(config))
        model = get_modality(config).build_model(len(data.class_names))
        optimizer = optimizers.build_optimizer(config.train, model)
        compile_for_task(model, config, data.class_names, optimizer)
        optimizer.build(model.trainable_variables)  # Then the first step traces once, not twice.
        model.train_on_batch(features, labels)  # Trace (untimed).
        models[name], times[name] = model, []
        print(f"{name}: {_count(model.trainable_weights):,} trainable of "
              f"{_count(model.weights):,} parameters", flush=True)
    for _ in range(steps):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(features, labels)
            times[name].append(time.perf_counter() - start)
    for name in models:
        print(f"{name}: median {1000 * np.median(times[name]):.0f} ms/step "
              f"over {steps} steps (batch {batch}, {tokens} tokens)"
              f"{' (smoke: not a measurement)' if smoke else ''}")
    print(lora.lora_summary(models["lora8"]))


if __name__ == "__main__":
    main()
