"""Deterministic train/validation splits and subsets of labelled examples.

The functions here only need `len(examples)`, `examples.labels`,
`examples.class_names` and `examples.subset(indices)`, so they work for
`ImageExamples` and `TextExamples` alike.
"""

import numpy as np

from sft_keras.errors import ConfigError, DataError


def split_examples(examples, validation_fraction, seed, stratify=True):
    """Splits examples into train and validation, deterministically for a seed.

    With `stratify`, each class keeps the same fraction in validation (at
    least one example of each class with two or more examples).

    Args:
        examples: `ImageExamples` or `TextExamples`.
        validation_fraction: float in (0, 1). Fraction held out for validation.
        seed: int. The same seed gives the same split.
        stratify: bool. Split each class separately (classification); False
            for regression labels. Multi-hot labels (`[n, classes]`,
            multi-label) always get a seeded random split.

    Returns:
        `(train, validation)`, each of the type of `examples`, every example
        in exactly one of them, in their original order.

    Example:

    >>> import numpy as np
    >>> from sft_keras.data import TextExamples
    >>> examples = TextExamples(np.array(list("abcdef"), object),
    ...                         np.array([0, 0, 0, 1, 1, 1], np.int32), ["x", "y"])
    >>> train, validation = split_examples(examples, 0.34, seed=0)
    >>> len(train), len(validation), sorted(validation.labels.tolist())
    (4, 2, [0, 1])
    """
    rng = np.random.RandomState(seed)
    n = len(examples)
    if stratify and np.ndim(examples.labels) == 1:
        val_idx = []
        for label in np.unique(examples.labels):
            idx = np.flatnonzero(examples.labels == label)
            idx = idx[rng.permutation(len(idx))]
            k = int(round(len(idx) * validation_fraction))
            if len(idx) >= 2:
                k = min(max(k, 1), len(idx) - 1)
            else:
                k = 0
            val_idx.extend(idx[:k].tolist())
        val_mask = np.zeros(n, bool)
        val_mask[val_idx] = True
    else:
        order = rng.permutation(n)
        val_mask = np.zeros(n, bool)
        val_mask[order[: int(round(n * validation_fraction))]] = True
    train_idx = np.flatnonzero(~val_mask)
    val_idx = np.flatnonzero(val_mask)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DataError(
            f"Cannot split {n} example(s) into train and validation with "
            f"data.validation_split={validation_fraction}; add data or set data.validation_path."
        )
    return examples.subset(train_idx), examples.subset(val_idx)


def limit_examples(examples, n, seed):
    """Keeps a deterministic subset of `n` examples (for `data.max_train_examples`).

    For classification (`examples.class_names` not empty) the subset is
    stratified: each class keeps its share of the `n` examples (largest
    remainders round), and every class keeps at least one example when
    `n >= number of classes`. For regression and multi-label (multi-hot
    labels) the `n` examples are drawn uniformly. The kept examples stay in their original order.

    Args:
        examples: `ImageExamples` or `TextExamples`.
        n: int >= 0. How many examples to keep; 0, or `n >= len(examples)`,
            returns `examples` unchanged.
        seed: int. The same seed keeps the same examples.

    Returns:
        Examples of the type of `examples`, `min(n, len(examples))` of them.

    Example:

    >>> import numpy as np
    >>> from sft_keras.data import TextExamples
    >>> examples = TextExamples(np.array(list("abcdefgh"), object),
    ...                         np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int32), ["x", "y"])
    >>> small = limit_examples(examples, 4, seed=0)
    >>> len(small), small.labels.tolist()
    (4, [0, 0, 0, 1])
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(
            f"data.max_train_examples must be an integer >= 0 (0: use all). "
            f"Received: data.max_train_examples={n!r}"
        )
    total = len(examples)
    if n == 0 or n >= total:
        return examples
    rng = np.random.RandomState(seed)
    if not examples.class_names or np.ndim(examples.labels) > 1:  # Regression, multi-label.
        keep = rng.permutation(total)[:n]
        return examples.subset(np.sort(keep))

    labels = np.asarray(examples.labels)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * (n / total)
    take = np.floor(quotas).astype(int)
    # Largest remainders get the examples left over (ties: smaller class id first).
    for i in np.argsort(-(quotas - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    if n >= len(classes):
        # Every class keeps at least one example; take them from the largest shares.
        for i in np.flatnonzero(take == 0):
            take[np.argmax(take)] -= 1
            take[i] = 1
    keep = []
    for label, k in zip(classes, take):
        idx = np.flatnonzero(labels == label)
        keep.extend(idx[rng.permutation(len(idx))[:k]].tolist())
    return examples.subset(np.sort(np.asarray(keep, np.int64)))
