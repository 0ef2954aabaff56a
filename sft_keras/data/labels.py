"""Class names and multi-label targets, the same for every data source.

`check_class_count` is the one rule on how many classes a task needs, for
image folders, CSV manifests, text files and folders, TFDS and chatterbot alike.

Multi-label cells hold their labels separated by `data.label_separator`
(`"a|c"`), or, in JSON lines, a JSON list (`["a", "c"]`); they become
multi-hot vectors. Used by the text tables and the image CSV manifests for
`task="multilabel"`.
"""

import numpy as np

from sft_keras.errors import DataError


def check_class_count(class_names, task, source):
    """Raises `DataError` unless the training data has as many classes as `task` needs.

    `task="binary"` needs exactly 2 classes; `"classification"` at least 2
    (one class would train a softmax that always says 1.0); `"multilabel"` at
    least 2 labels. Regression has no classes and is not checked.

    Args:
        class_names: list of str. The classes (labels) found in the training data.
        task: str. The `task` config value.
        source: str. Where the classes were found, for the message, e.g.
            `"data.path='/data/pets'"`.

    Example:

    >>> check_class_count(["cat", "dog"], "binary", "data.path='pets'")
    >>> check_class_count(["cat"], "classification", "data.path='pets'")
    Traceback (most recent call last):
    ...
    sft_keras.errors.DataError: task='classification' needs at least 2 classes, but data.path='pets' has 1 class: ['cat']. Add examples of every class the model should tell apart.
    """
    n = len(class_names)
    singular, plural = ("label", "labels") if task == "multilabel" else ("class", "classes")
    if task == "binary" and n != 2:
        need = "exactly 2 classes"
    elif task in ("classification", "multilabel") and n < 2:
        need = f"at least 2 {plural}"
    else:
        return
    if task == "binary" and n > 2:
        hint = "Use task='classification' for more than 2 classes."
    else:
        hint = f"Add examples of every {singular} the model should tell apart."
    raise DataError(
        f"task={task!r} needs {need}, but {source} has {n} {singular if n == 1 else plural}: "
        f"{list(class_names)}. {hint}"
    )


def split_label_cell(value, separator, where, label_name):
    """Returns the labels of one cell as a list of distinct, stripped str.

    Args:
        value: str (labels joined by `separator`) or list/tuple of labels
            (JSON lines).
        separator: str. `data.label_separator`.
        where: str. Start of an error message, e.g. `'train.csv:3'`.
        label_name: str. The label column, for error messages.

    Raises:
        DataError: the cell holds no label, or an empty one (`'a||b'`).

    Example:

    >>> split_label_cell(" sports | news ", "|", "f.csv:2", "tags")
    ['sports', 'news']
    >>> split_label_cell("sports||news", "|", "f.csv:2", "tags")
    Traceback (most recent call last):
    ...
    sft_keras.errors.DataError: f.csv:2: empty label in tags='sports||news' (labels separated by '|').
    """
    if isinstance(value, (list, tuple)):
        parts = [str(v).strip() for v in value]
    else:
        parts = [part.strip() for part in str(value).split(separator)]
    if not parts or any(part == "" for part in parts):
        raise DataError(
            f"{where}: empty label in {label_name}={value!r} (labels separated by "
            f"{separator!r})."
        )
    return list(dict.fromkeys(parts))


def encode_multilabel(raw_labels, class_names, where, label_name, separator="|"):
    """Encodes label cells as multi-hot vectors.

    Args:
        raw_labels: list of `(location, cell)`; `cell` as in `split_label_cell`.
        class_names: list of str or None. For validation data: the training
            labels; any other label is an error. None: the sorted distinct
            labels.
        where: callable `location -> str`, e.g. `lambda line: f"{path}:{line}"`.
        label_name: str. The label column, for error messages.
        separator: str. `data.label_separator`.

    Returns:
        `(labels, class_names)`: float32 `[n, num_classes]` of 0/1, list of str.

    Example:

    >>> labels, names = encode_multilabel([(2, "b|a"), (3, "c")], None, str, "tags")
    >>> names, labels.tolist()
    (['a', 'b', 'c'], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    """
    cells = [(loc, split_label_cell(cell, separator, where(loc), label_name))
             for loc, cell in raw_labels]
    if class_names is None:
        class_names = sorted({label for _, labels in cells for label in labels})
    index = {name: i for i, name in enumerate(class_names)}
    multi_hot = np.zeros((len(cells), len(class_names)), np.float32)
    for row, (loc, labels) in enumerate(cells):
        for label in labels:
            if label not in index:
                raise DataError(
                    f"{where(loc)}: label {label!r} was never seen in training. "
                    f"Known labels: {list(class_names)}."
                )
            multi_hot[row, index[label]] = 1.0
    return multi_hot, list(class_names)
