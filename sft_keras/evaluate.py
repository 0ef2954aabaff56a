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


def write_classification_report(model, dataset, labels, class_names, task, workdir):
    """Writes the per-class report of `model` on `dataset`; returns its summary metrics.

    Writes `<workdir>/classification_report.txt` (scikit-learn's table) and
    `classification_report.json` (precision, recall, F1 and support per
    class, plus macro and weighted averages).

    Args:
        model: a trained `keras.Model`.
        dataset: an unshuffled batched `tf.data.Dataset` whose labels are `labels`.
        labels: array of int. True class ids, in dataset order.
        class_names: list of str.
        task: str. `"classification"` or `"binary"`.
        workdir: str.

    Returns:
        dict with `macro_precision`, `macro_recall`, `macro_f1`, `weighted_f1`.
    """
    import numpy as np
    from sklearn import metrics as sk_metrics

    probabilities = model.predict(dataset, verbose=0)
    if task == "binary":
        predicted = (probabilities[:, 0] >= 0.5).astype(int)
    else:
        predicted = np.argmax(probabilities, axis=-1)
    kwargs = dict(
        y_true=np.asarray(labels).astype(int),
        y_pred=predicted,
        labels=list(range(len(class_names))),
        target_names=[str(c) for c in class_names],
        zero_division=0,
        digits=4,
    )
    text = sk_metrics.classification_report(**kwargs)
    report = sk_metrics.classification_report(output_dict=True, **kwargs)
    atomic_write_text(os.path.join(workdir, "classification_report.txt"), text)
    atomic_write_text(
        os.path.join(workdir, "classification_report.json"), json.dumps(report, indent=2) + "\n"
    )
    macro, weighted = report["macro avg"], report["weighted avg"]
    return {
        "macro_precision": float(macro["precision"]),
        "macro_recall": float(macro["recall"]),
        "macro_f1": float(macro["f1-score"]),
        "weighted_f1": float(weighted["f1-score"]),
    }


def write_multilabel_report(model, dataset, labels, class_names, workdir, threshold=0.5):
    """Writes the per-label report of a multilabel model; returns its summary metrics.

    A label is predicted when its probability is >= `threshold`. Writes
    `<workdir>/classification_report.txt` and `.json` (scikit-learn's
    multilabel report: precision, recall, F1 and support per label, plus
    micro, macro, weighted and per-example "samples" averages).

    Args:
        model: a trained multilabel `keras.Model` (sigmoid outputs).
        dataset: an unshuffled batched `tf.data.Dataset` whose labels are `labels`.
        labels: array `[n, classes]` of 0/1, in dataset order.
        class_names: list of str.
        workdir: str.
        threshold: float. `train.multilabel_threshold`.

    Returns:
        dict with `micro_f1`, `macro_f1`, `weighted_f1`, `samples_f1` and
        `exact_match` (fraction of examples whose whole label set is right).
    """
    import numpy as np
    from sklearn import metrics as sk_metrics

    predicted = (model.predict(dataset, verbose=0) >= threshold).astype(int)
    y_true = np.asarray(labels).astype(int)
    kwargs = dict(y_true=y_true, y_pred=predicted, target_names=[str(c) for c in class_names],
                  zero_division=0, digits=4)
    text = sk_metrics.classification_report(**kwargs)
    report = sk_metrics.classification_report(output_dict=True, **kwargs)
    atomic_write_text(os.path.join(workdir, "classification_report.txt"), text)
    atomic_write_text(
        os.path.join(workdir, "classification_report.json"), json.dumps(report, indent=2) + "\n"
    )
    summary = {f"{avg}_f1": float(report[f"{avg} avg"]["f1-score"])
               for avg in ("micro", "macro", "weighted", "samples")}
    summary["exact_match"] = float(np.mean(np.all(predicted == y_true, axis=1)))
    return summary
