"""Evaluate a trained model: metrics, per-class reports, plots, worst examples.

`write_report` writes one report folder (`<workdir>/report/` after training,
or wherever `sft-eval` points it):

    metrics.json                      loss, task metrics, num_examples, split
    classification_report.txt/.json   per-class precision, recall, F1, support
    confusion_matrix.png              counts; true class per row
    confusion_matrix_normalized.png   each row divided by its true-class total
    predictions.png                   regression: predicted vs true values
    training_curves.png               loss and metrics per epoch, when a log exists
    misclassified.jsonl               the worst examples, one JSON object a line
"""

import json
import os

import numpy as np

from sft_keras.files import atomic_write_text

NUM_WORST_EXAMPLES = 20  # Lines of misclassified.jsonl.


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


def write_metrics(metrics, report_dir):
    """Writes `metrics` to `<report_dir>/metrics.json` atomically; returns the path."""
    path = os.path.join(report_dir, "metrics.json")
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def write_multilabel_report(model, dataset, labels, class_names, workdir, threshold=0.5):
    """Writes the per-label report of a multilabel model; returns its summary metrics.

    A label is predicted when its probability is >= `threshold` (or its
    entry of a per-label `threshold` list). Writes
    `<workdir>/classification_report.txt` and `.json` (scikit-learn's
    multilabel report: precision, recall, F1 and support per label, plus
    micro, macro, weighted and per-example "samples" averages).

    Args:
        model: a trained multilabel `keras.Model` (sigmoid outputs).
        dataset: an unshuffled batched `tf.data.Dataset` whose labels are `labels`.
        labels: array `[n, classes]` of 0/1, in dataset order.
        class_names: list of str.
        workdir: str.
        threshold: float, or list of float (one per label, in class order):
            `train.multilabel_threshold(s)`.

    Returns:
        dict with `micro_f1`, `macro_f1`, `weighted_f1`, `samples_f1` and
        `exact_match` (fraction of examples whose whole label set is right).
    """
    import numpy as np
    from sklearn import metrics as sk_metrics

    probabilities = model.predict(dataset, verbose=0)[: len(labels)]  # Drop batch padding.
    predicted = (probabilities >= np.asarray(threshold)).astype(int)
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


THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95.


def tune_thresholds(labels, probabilities, class_names, default=0.5, grid=THRESHOLD_GRID):
    """Per label, the threshold in `grid` that maximizes that label's F1.

    Predicted means probability >= threshold. Among thresholds with the same
    F1 the one closest to `default` wins; a label whose F1 is 0 at every
    threshold (e.g. no positive example) keeps `default`. Tuned on the
    validation split, the thresholds flatter that split's report.

    Args:
        labels: array `[n, classes]` of 0/1.
        probabilities: array `[n, classes]` of sigmoid outputs.
        class_names: list of str, in class order.
        default: float. `train.multilabel_threshold`.
        grid: sequence of float in (0, 1). The candidate thresholds.

    Returns:
        dict str -> float: one threshold per class, in class order.

    Example:

    >>> y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    >>> p = np.array([[0.32, 0.9], [0.35, 0.95], [0.1, 0.8], [0.2, 0.97]])
    >>> tune_thresholds(y, p, ["a", "b"])
    {'a': 0.3, 'b': 0.95}
    """
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, np.float64)
    grid = np.asarray(grid, np.float64)
    tuned = {}
    for j, name in enumerate(class_names):
        predicted = probabilities[:, j, None] >= grid[None, :]  # [n, len(grid)]
        truth = labels[:, j, None]
        tp = np.sum(predicted & truth, axis=0)
        wrong = np.sum(predicted != truth, axis=0)  # fp + fn.
        f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)
        if f1.max() <= 0:
            tuned[str(name)] = float(default)
            continue
        best = np.flatnonzero(f1 == f1.max())
        tuned[str(name)] = float(grid[best[np.argmin(np.abs(grid[best] - default))]])
    return tuned


def summary_metrics(labels, outputs, task, num_classes):
    """Computes the report's metrics from true labels and model outputs.

    Args:
        labels: array `[n]`: class ids, or targets for regression.
        outputs: array `[n, units]` of model outputs: class probabilities
            (classification), P(class 1) `[n, 1]` (binary), or predictions
            (regression).
        task: str. `"classification"`, `"binary"` or `"regression"`.
        num_classes: int. Number of classes (ignored for regression).

    Returns:
        dict of float: classification and binary: `accuracy`,
        `macro_{precision,recall,f1}`, `weighted_{precision,recall,f1}` and,
        with two classes, `roc_auc` (None when only one class is present);
        binary also `auc` (= `roc_auc`). Regression: `mse`, `mae`, `r2`.

    Example:

    >>> import numpy as np
    >>> m = summary_metrics(np.array([0, 1, 1]), np.array([[0.2], [0.9], [0.4]]), "binary", 2)
    >>> m["accuracy"], m["roc_auc"]
    (0.6666666666666666, 1.0)
    """
    from sklearn import metrics as sk

    labels = np.asarray(labels)
    if task == "regression":
        predictions = np.asarray(outputs, np.float64).reshape(-1)
        targets = labels.astype(np.float64)
        return {
            "mse": float(sk.mean_squared_error(targets, predictions)),
            "mae": float(sk.mean_absolute_error(targets, predictions)),
            "r2": float(sk.r2_score(targets, predictions)) if len(targets) > 1 else None,
        }
    probabilities = class_probabilities(outputs, task)
    labels = labels.astype(int)
    predicted = np.argmax(probabilities, axis=-1)
    result = {"accuracy": float(sk.accuracy_score(labels, predicted))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = sk.precision_recall_fscore_support(
            labels, predicted, labels=list(range(num_classes)), average=average, zero_division=0
        )
        result.update({f"{average}_precision": float(precision), f"{average}_recall": float(recall),
                       f"{average}_f1": float(f1)})
    if num_classes == 2:
        present = len(set(labels.tolist())) == 2
        result["roc_auc"] = float(sk.roc_auc_score(labels, probabilities[:, 1])) if present else None
        if task == "binary":
            result["auc"] = result["roc_auc"]
    return result


def class_probabilities(outputs, task):
    """Returns `[n, classes]` probabilities; binary `[n, 1]` outputs become `[1 - p, p]`."""
    outputs = np.asarray(outputs, np.float64)
    if task == "binary":
        p = outputs.reshape(-1)
        return np.stack([1.0 - p, p], axis=-1)
    return outputs


def _example_input(examples, index, report_dir):
    """Text, text pair, image path, or (in-memory images) the path of a PNG written here."""
    if hasattr(examples, "texts"):
        text = examples.texts[index]
        return [str(t) for t in text] if np.ndim(text) else str(text)
    images = examples.images
    if isinstance(images, np.ndarray):
        import tensorflow as tf

        path = os.path.join(os.path.abspath(report_dir), "misclassified", f"{index:05d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(tf.io.encode_png(np.asarray(images[index], np.uint8)).numpy())
        return path
    return str(images[index])


def worst_examples(examples, outputs, task, class_names, report_dir, k=NUM_WORST_EXAMPLES):
    """Returns the `k` worst examples as dicts, worst first.

    Classification and binary: the misclassified examples with the lowest
    probability of their true class (= highest loss). Regression: the
    largest absolute errors.

    Args:
        examples: `ImageExamples` or `TextExamples`, in the order of `outputs`.
        outputs: array of model outputs, as for `summary_metrics`.
        task: str.
        class_names: list of str.
        report_dir: str. In-memory images (digits) are written here as
            `misclassified/<index>.png` so each line can name a file.
        k: int.

    Returns:
        list of dict with `index` (position in `examples`), `input` (text,
        `[text, text_pair]`, or image path), `true_label`,
        `predicted_label`, and `probability` (of the predicted label),
        `true_label_probability`, `loss`; regression `abs_error` instead.
    """
    labels = np.asarray(examples.labels)
    if task == "regression":
        predictions = np.asarray(outputs, np.float64).reshape(-1)
        errors = np.abs(predictions - labels.astype(np.float64))
        order = np.argsort(-errors, kind="stable")[:k]
        return [
            {"index": int(i), "input": _example_input(examples, i, report_dir),
             "true_label": float(labels[i]), "predicted_label": float(predictions[i]),
             "abs_error": float(errors[i])}
            for i in order
        ]
    probabilities = class_probabilities(outputs, task)
    labels = labels.astype(int)
    predicted = np.argmax(probabilities, axis=-1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(true_probability[wrong], kind="stable")][:k]
    return [
        {"index": int(i), "input": _example_input(examples, i, report_dir),
         "true_label": str(class_names[labels[i]]),
         "predicted_label": str(class_names[predicted[i]]),
         "probability": float(probabilities[i, predicted[i]]),
         "true_label_probability": float(true_probability[i]),
         "loss": float(-np.log(max(true_probability[i], 1e-7)))}
        for i in order
    ]


def write_report(model, dataset, examples, class_names, task, report_dir, split="validation",
                 training_log=None, num_worst=NUM_WORST_EXAMPLES, threshold=0.5):
    """Evaluates `model` on `dataset` and writes the report folder; returns the metrics.

    Args:
        model: a compiled `keras.Model` (the task's loss and metrics).
        dataset: an unshuffled batched `tf.data.Dataset` of `examples`, in order.
        examples: `ImageExamples` or `TextExamples` behind `dataset`.
        class_names: list of str (empty for regression).
        task: str. `"classification"`, `"binary"` or `"regression"`.
        report_dir: str. Created if needed; files in it are replaced.
        split: str. Name recorded as `split` in `metrics.json`.
        training_log: str or None. A `training_log.csv`; when it exists and
            has rows, `training_curves.png` is drawn from it.
        num_worst: int. Lines of `misclassified.jsonl`.
        threshold: float, or list of float per label. Multilabel only: a
            label is predicted when its probability is >= `threshold`
            (`train.multilabel_threshold`, or the per-label thresholds).

    Returns:
        dict: `evaluate_model`'s metrics (`loss`, Keras metrics,
        `num_examples`, `split`) updated with `summary_metrics`.

    Example:

    >>> import tempfile
    >>> from sft_keras.config import get_default_config
    >>> from sft_keras.data import ImageExamples, make_image_dataset
    >>> from sft_keras.models import build_image_model
    >>> from sft_keras.tasks import get_task
    >>> config = get_default_config()
    >>> config.model.backbone = "small_cnn"
    >>> model = build_image_model(config, num_classes=2)
    >>> task = get_task("classification")
    >>> model.compile(loss=task.loss(), metrics=task.metrics())
    >>> examples = ImageExamples(np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 0, 1]),
    ...                          ["cat", "dog"])
    >>> dataset = make_image_dataset(examples, (32, 32), batch_size=2)
    >>> report_dir = tempfile.mkdtemp()
    >>> metrics = write_report(model, dataset, examples, ["cat", "dog"], "classification",
    ...                        report_dir)
    >>> metrics["num_examples"], metrics["split"]
    (4, 'validation')
    >>> print("\\n".join(sorted(os.listdir(report_dir))))
    classification_report.json
    classification_report.txt
    confusion_matrix.png
    confusion_matrix_normalized.png
    metrics.json
    misclassified
    misclassified.jsonl
    """
    from sft_keras.evaluation import plots

    import shutil

    os.makedirs(report_dir, exist_ok=True)
    shutil.rmtree(os.path.join(report_dir, "misclassified"), ignore_errors=True)  # A past run's PNGs.
    metrics = evaluate_model(model, dataset, len(examples), split)
    if task == "multilabel":  # Per-label report and curves; no single "worst" ranking.
        metrics.update(write_multilabel_report(model, dataset, examples.labels, class_names,
                                               report_dir, threshold=threshold))
        write_metrics(metrics, report_dir)
        _write_training_curves(training_log, report_dir)
        return metrics
    outputs = model.predict(dataset, verbose=0)[: len(examples)]  # Drop batch padding.
    if len(outputs) != len(examples):
        raise ValueError(f"The model gave {len(outputs)} outputs for {len(examples)} examples.")
    metrics.update(summary_metrics(examples.labels, outputs, task, len(class_names)))
    write_metrics(metrics, report_dir)

    if task == "regression":
        figure = plots.plot_predictions(examples.labels, outputs, title=f"Predictions ({split})")
        plots.save_figure(figure, os.path.join(report_dir, "predictions.png"))
    else:
        _write_per_class_report(examples.labels, outputs, class_names, task, report_dir, split)
    _write_training_curves(training_log, report_dir)
    worst = worst_examples(examples, outputs, task, class_names, report_dir, num_worst)
    atomic_write_text(os.path.join(report_dir, "misclassified.jsonl"),
                      "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in worst))
    return metrics


def _write_training_curves(training_log, report_dir):
    from sft_keras.evaluation import plots

    if training_log and os.path.exists(training_log):
        log = plots.read_training_log(training_log)
        if log.get("epoch"):
            plots.save_figure(plots.plot_training_curves(log),
                              os.path.join(report_dir, "training_curves.png"))


def _write_per_class_report(labels, outputs, class_names, task, report_dir, split):
    from sklearn import metrics as sk_metrics

    from sft_keras.evaluation import plots

    labels = np.asarray(labels).astype(int)
    predicted = np.argmax(class_probabilities(outputs, task), axis=-1)
    classes = list(range(len(class_names)))
    kwargs = dict(y_true=labels, y_pred=predicted, labels=classes,
                  target_names=[str(c) for c in class_names], zero_division=0, digits=4)
    atomic_write_text(os.path.join(report_dir, "classification_report.txt"),
                      sk_metrics.classification_report(**kwargs))
    report = sk_metrics.classification_report(output_dict=True, **kwargs)
    atomic_write_text(os.path.join(report_dir, "classification_report.json"),
                      json.dumps(report, indent=2) + "\n")
    matrix = sk_metrics.confusion_matrix(labels, predicted, labels=classes)
    for normalize, name in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
        title = f"Confusion matrix ({split}" + (", normalized by true class)" if normalize else ")")
        figure = plots.plot_confusion_matrix(matrix, class_names, normalize=normalize, title=title)
        plots.save_figure(figure, os.path.join(report_dir, name))
