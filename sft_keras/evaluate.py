"""Evaluate a trained model and write `metrics.json`."""

import json
import os

from sft_keras.files import atomic_write_text


def evaluate_model(model, dataset, num_examples, split="validation"):
    """Evaluates `model` on `dataset`; returns the metrics as plain floats.

    Args:
        model: a compiled `keras.Model`.
        dataset: a batched `tf.data.Dataset` of `(inputs, labels)`.
        num_examples: int. Number of examples in `dataset`, recorded as
            `num_examples`.
        split: str. Name of the evaluated split, recorded as `split`.

    Returns:
        dict with `loss`, the task's metrics (e.g. `accuracy`), `num_examples`
        and `split`.
    """
    results = model.evaluate(dataset, return_dict=True, verbose=0)
    metrics = {name: float(value) for name, value in results.items()}
    metrics.update(num_examples=int(num_examples), split=split)
    return metrics


def write_metrics(metrics, workdir):
    """Writes `metrics` to `<workdir>/metrics.json` atomically; returns the path."""
    path = os.path.join(workdir, "metrics.json")
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
