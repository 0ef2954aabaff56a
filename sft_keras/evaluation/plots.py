"""Plots for the evaluation report: confusion matrices, training curves, predictions.

Every function returns a `matplotlib.figure.Figure` (so tests and notebooks
can inspect its axes) and never opens a window: figures are built with the
non-interactive Agg canvas, independent of `pyplot`'s global state.
"""

import csv
import os

import numpy as np

# Classes up to which each cell of a confusion matrix shows its value.
MAX_CLASSES_WITH_CELL_TEXT = 15


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path, dpi=100):
    """Writes `figure` to `path` (PNG by extension) and returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def plot_confusion_matrix(matrix, class_names, normalize=False, title=None):
    """Draws a confusion matrix: true class per row, predicted class per column.

    The figure grows with the number of classes (about 0.4 inch per class),
    predicted-class tick labels are rotated, and cells show their value only
    up to `MAX_CLASSES_WITH_CELL_TEXT` classes (beyond that the colour scale
    carries it); normalized, zero cells stay blank.

    Args:
        matrix: array `[n, n]` of counts, `matrix[i, j]` = examples of true
            class i predicted as j.
        class_names: list of str, length n.
        normalize: bool, default False. Divide each row by its total, so a
            cell is the fraction of the true class predicted as j (rows with
            no examples stay 0).
        title: str or None. Defaults to "Confusion matrix" (+ "normalized by
            true class").

    Returns:
        `matplotlib.figure.Figure`.

    Example:

    >>> figure = plot_confusion_matrix([[5, 1], [0, 4]], ["cat", "dog"])
    >>> ax = figure.axes[0]
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('Predicted label', 'True label')
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['cat', 'dog']
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix must be [{n}, {n}] for {n} class names. Received shape {matrix.shape}")
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = min(max(5.0, 0.4 * n + 2.5), 40.0)
    figure = _new_figure(side + 1.0, side)
    ax = figure.add_subplot()
    vmax = 1.0 if normalize else max(float(matrix.max()), 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8,
                    label="fraction of true class" if normalize else "examples")
    names = [str(c) for c in class_names]
    font = 10 if n <= 10 else 8 if n <= 30 else 6
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=45 if n <= 30 else 90, ha="right" if n <= 30 else "center",
                       rotation_mode="anchor" if n <= 30 else "default", fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    if title is None:
        title = "Confusion matrix" + (", normalized by true class" if normalize else "")
    ax.set_title(title)
    if n <= MAX_CLASSES_WITH_CELL_TEXT:
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                if normalize and value == 0:
                    continue  # Blank, so the few non-zero fractions stand out.
                text = f"{value:.2f}" if normalize else f"{int(round(value))}"
                color = "white" if value > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=font)
    return figure


def read_training_log(path):
    """Reads a Keras `CSVLogger` file into `{column: [float, ...]}` (empty values -> nan).

    Args:
        path: str. E.g. `<workdir>/training_log.csv`.

    Returns:
        dict of column name -> list of float, in epoch order.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            columns.setdefault(key, []).append(number)
    return columns


def plot_training_curves(log):
    """Draws loss and each metric per epoch, training and validation, one panel each.

    Args:
        log: dict `{column: [values per epoch]}` as from `read_training_log`,
            or the path of a `training_log.csv`. Columns `x` and `val_x` share
            panel `x`; `epoch` is the x axis (1-based on the plot); columns
            such as `learning_rate` get their own panel.

    Returns:
        `matplotlib.figure.Figure` with one axes per metric; each has a line
        labelled "train" and, when logged, one labelled "validation".

    Example:

    >>> log = {"epoch": [0, 1, 2], "loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7],
    ...        "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    >>> figure = plot_training_curves(log)
    >>> [ax.get_title() for ax in figure.axes]
    ['loss', 'accuracy']
    >>> [line.get_label() for line in figure.axes[0].get_lines()]
    ['train', 'validation']
    """
    if isinstance(log, (str, os.PathLike)):
        log = read_training_log(log)
    epochs = log.get("epoch")
    length = max((len(v) for v in log.values()), default=0)
    epochs = [e + 1 for e in epochs] if epochs else list(range(1, length + 1))
    names = []
    for key in log:
        if key == "epoch":
            continue
        name = key[4:] if key.startswith("val_") else key
        if name not in names:
            names.append(name)
    names.sort(key=lambda name: name != "loss")  # Loss first, then the log's order.
    columns = min(len(names), 3) or 1
    rows = max(1, -(-len(names) // columns))
    figure = _new_figure(4.5 * columns, 3.5 * rows)
    marker = "o" if len(epochs) <= 30 else None
    for i, name in enumerate(names):
        ax = figure.add_subplot(rows, columns, i + 1)
        pairs = ((name, "train"), (f"val_{name}", "validation"))
        if f"val_{name}" not in log:  # e.g. learning_rate: one series, named for itself.
            pairs = ((name, name),)
        for key, label in pairs:
            if key in log:
                ax.plot(epochs, log[key], marker=marker, label=label)
        ax.set_title(name)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        ax.legend()
    return figure


def plot_predictions(targets, predictions, title="Predictions vs targets"):
    """Regression: a scatter of predicted against true values, with the y = x line.

    Args:
        targets: array `[n]` of true values.
        predictions: array `[n]` of predicted values.
        title: str.

    Returns:
        `matplotlib.figure.Figure`.

    Example:

    >>> figure = plot_predictions([1.0, 2.0, 3.0], [1.1, 1.8, 3.4])
    >>> figure.axes[0].get_xlabel()
    'True value'
    """
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    figure = _new_figure(5.5, 5.0)
    ax = figure.add_subplot()
    ax.scatter(targets, predictions, s=12, alpha=0.6)
    if len(targets):
        low = float(min(targets.min(), predictions.min()))
        high = float(max(targets.max(), predictions.max()))
        ax.plot([low, high], [low, high], color="gray", linestyle="--", label="y = x")
        ax.legend()
    ax.set_xlabel("True value")
    ax.set_ylabel("Predicted value")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return figure
