"""Training step time and trainable parameters: LoRA vs full fine-tuning of MiniLM.

Builds the configs/quickstart.py model twice (every weight trainable; LoRA
rank 8 on query/value), compiles both with the quickstart optimizer, and
times `train_on_batch` on the same real batch (32 utterances, 32 tokens),
alternating between the two models so that both see the same machine load.
Reports the median step time of each.

Run:

    python benchmarks/lora_step_time.py [steps]
"""

import importlib.util
import os
import sys
import time

import numpy as np

from sft_keras.models import lora
from sft_keras.training import optimizers
from sft_keras.backbones import build_text_backbone, load_text_tokenizer, make_preprocessor
from sft_keras.config import validate_config
from sft_keras.data import load_text_data, make_text_dataset
from sft_keras.models import build_text_model
from sft_keras.tasks import get_task


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def main(steps=10):
    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "configs", "quickstart.py"))
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    data_config = validate_config(quickstart.get_config())
    data = load_text_data(data_config.data, data_config.task, data_config.seed)
    tokenizer = load_text_tokenizer("bert", data_config.model.preset)
    preprocessor = make_preprocessor(tokenizer, data_config.data.sequence_length)
    dataset = make_text_dataset(data.train, preprocessor, batch_size=32, task=data_config.task)
    features, labels = next(iter(dataset))

    models, times = {}, {}
    for name, rank, learning_rate in (("full", 0, 1e-4), ("lora8", 8, 1e-3)):
        config = quickstart.get_config()
        config.model.lora_rank = rank
        config.train.learning_rate = learning_rate
        config = validate_config(config)
        model = build_text_model(config, build_text_backbone("bert", config.model.preset),
                                 len(data.class_names))
        task = get_task(config.task)
        model.compile(optimizer=optimizers.build_optimizer(config.train), loss=task.loss())
        model.train_on_batch(features, labels)  # Trace and build the optimizer.
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
              f"over {steps} steps (batch 32, 32 tokens)")
    print(lora.lora_summary(models["lora8"]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
