"""Task types: what the output layer, loss, metrics and served outputs are.

A task type is independent of the modality, so image and text models share it.
"""

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class Task:
    """How one task type is trained and served.

    Args:
        name: str. The `task` config value.
        monitors: tuple of str. Metric names `train.monitor` may name.
        threshold: float. Multilabel: a label is predicted when its
            probability is >= this (`train.multilabel_threshold`).
        thresholds: tuple of float. Multilabel: one threshold per label, in
            class order, replacing `threshold` (`train.multilabel_thresholds`
            resolved by `resolve_thresholds`); empty: `threshold` for all.
        label_separator: str. Multilabel: joins the predicted labels in the
            served `labels` output (`data.label_separator`).
        retrieval_scale: float. Retrieval: the in-batch negatives loss's
            inverse temperature (`train.retrieval_scale`).
        retrieval_symmetric: bool. Retrieval: the loss also ranks contexts
            for each response (`train.retrieval_symmetric`).
    """

    name: str
    monitors: tuple
    threshold: float = 0.5
    label_separator: str = "|"
    thresholds: tuple = ()
    retrieval_scale: float = 20.0
    retrieval_symmetric: bool = False

    def label_thresholds(self, num_classes):
        """The per-label thresholds as a list of `num_classes` floats.

        Example:

        >>> get_task("multilabel", threshold=0.4).label_thresholds(2)
        [0.4, 0.4]
        >>> get_task("multilabel", thresholds=(0.3, 0.7)).label_thresholds(2)
        [0.3, 0.7]
        """
        if not self.thresholds:
            return [float(self.threshold)] * num_classes
        if len(self.thresholds) != num_classes:
            raise ValueError(f"{len(self.thresholds)} thresholds for {num_classes} classes. "
                             f"Received: thresholds={self.thresholds!r}")
        return [float(t) for t in self.thresholds]

    def output_units(self, num_classes):
        """Units of the output Dense layer."""
        return num_classes if self.name in ("classification", "multilabel") else 1

    def output_activation(self):
        return {"classification": "softmax", "binary": "sigmoid", "regression": "linear",
                "multilabel": "sigmoid"}[self.name]

    def loss(self, label_smoothing=0.0):
        """The training loss; `label_smoothing` (classification, binary) softens the targets."""
        if self.name == "retrieval":
            from sft_keras.models.retrieval import InBatchNegativesLoss

            return InBatchNegativesLoss(self.retrieval_scale, self.retrieval_symmetric)
        if self.name == "classification":
            if label_smoothing:
                return SparseCategoricalCrossentropyWithSmoothing(label_smoothing)
            return keras.losses.SparseCategoricalCrossentropy()
        if self.name in ("binary", "multilabel"):
            return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
        return keras.losses.MeanSquaredError()

    def metrics(self):
        if self.name == "retrieval":  # accuracy: a context's own reply ranks first in its batch.
            from sft_keras.models.retrieval import in_batch_accuracy

            return [keras.metrics.MeanMetricWrapper(in_batch_accuracy, name="accuracy")]
        if self.name == "classification":
            return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if self.name == "binary":
            return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
        if self.name == "multilabel" and self.thresholds:
            # Per-label thresholds: the metrics score binarized predictions.
            return [
                ThresholdedBinaryAccuracy(self.thresholds, name="accuracy"),
                keras.metrics.AUC(name="auc"),
                ThresholdedF1Score(self.thresholds, average="micro", name="f1_micro"),
                ThresholdedF1Score(self.thresholds, average="macro", name="f1_macro"),
            ]
        if self.name == "multilabel":
            # accuracy: over every (example, label) pair; auc: micro (pairs pooled).
            return [
                keras.metrics.BinaryAccuracy(name="accuracy", threshold=self.threshold),
                keras.metrics.AUC(name="auc"),
                keras.metrics.F1Score(average="micro", threshold=self.threshold, name="f1_micro"),
                keras.metrics.F1Score(average="macro", threshold=self.threshold, name="f1_macro"),
            ]
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def monitor_mode(self, monitor):
        """'max' for metrics where higher is better, else 'min'."""
        higher = ("accuracy", "auc", "f1_micro", "f1_macro")
        return "max" if monitor.removeprefix("val_") in higher else "min"

    def serving_outputs(self, model_outputs, class_names):
        """Maps the model's outputs to the named outputs of a serving signature.

        Classification and binary return `probabilities` (float32 [batch, classes]),
        `class_id` (int64 [batch]) and `label` (string [batch]); regression returns
        `prediction` (float32 [batch]). Multilabel returns `probabilities`
        (float32 [batch, classes], independent sigmoids), `predicted` (bool
        [batch, classes], probability >= `threshold`, or >= the label's entry
        of `thresholds`: a constant `[classes]` vector in the graph) and `labels` (string
        [batch]: the predicted class names joined by `label_separator`, in
        class order; empty when none passes).
        """
        import tensorflow as tf

        outputs = tf.cast(model_outputs, tf.float32)
        if self.name == "regression":
            return {"prediction": tf.reshape(outputs, [-1])}
        if self.name == "multilabel":
            if self.thresholds:
                predicted = outputs >= tf.constant(self.label_thresholds(len(class_names)),
                                                   tf.float32)
            else:
                predicted = outputs >= self.threshold
            names = tf.broadcast_to(tf.constant(list(class_names), tf.string), tf.shape(outputs))
            chosen = tf.ragged.boolean_mask(names, predicted)
            labels = tf.strings.reduce_join(chosen, axis=-1, separator=self.label_separator)
            return {"probabilities": outputs, "predicted": predicted, "labels": labels}
        if self.name == "binary":
            outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
        class_id = tf.argmax(outputs, axis=-1, output_type=tf.int64)
        label = tf.gather(tf.constant(list(class_names), dtype=tf.string), class_id)
        return {"probabilities": outputs, "class_id": class_id, "label": label}


@keras.saving.register_keras_serializable(package="sft_keras")
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy of integer class ids against softmax outputs, with label smoothing.

    Keras's `SparseCategoricalCrossentropy` has no `label_smoothing`; this
    one-hot encodes the ids and uses `categorical_crossentropy`, whose
    smoothing mixes the target with the uniform distribution:
    `(1 - s) * one_hot + s / num_classes`.

    Args:
        label_smoothing: float in [0, 1).

    Example:

    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropyWithSmoothing(0.1)
    >>> round(float(loss(np.array([0]), np.array([[0.9, 0.1]]))), 4)  # Targets [0.95, 0.05].
    0.2152
    """

    def __init__(self, label_smoothing=0.0, name="sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        ids = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(ids, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _binarize(y_pred, thresholds):
    y_pred = keras.ops.convert_to_tensor(y_pred)
    return keras.ops.cast(y_pred >= keras.ops.cast(list(thresholds), y_pred.dtype), y_pred.dtype)


@keras.saving.register_keras_serializable(package="sft_keras")
class ThresholdedBinaryAccuracy(keras.metrics.BinaryAccuracy):
    """Binary accuracy over every (example, label) pair, with one threshold per label.

    Label j counts as predicted when its probability is >= `thresholds[j]`.

    Args:
        thresholds: list of float, one per label.
        name: str.
        dtype: the metric's dtype.

    Example:

    >>> m = ThresholdedBinaryAccuracy([0.3, 0.7])
    >>> m.update_state([[1.0, 0.0]], [[0.4, 0.6]])
    >>> float(m.result())
    1.0
    """

    def __init__(self, thresholds, name="binary_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype, threshold=0.5)
        self.thresholds = [float(t) for t in thresholds]

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, _binarize(y_pred, self.thresholds), sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("threshold", None)
        return {**config, "thresholds": self.thresholds}


@keras.saving.register_keras_serializable(package="sft_keras")
class ThresholdedF1Score(keras.metrics.F1Score):
    """Keras's `F1Score` with one threshold per label (probability >= `thresholds[j]`).

    Args:
        thresholds: list of float, one per label.
        average: None, 'micro', 'macro' or 'weighted', as in `keras.metrics.F1Score`.
        name: str.
        dtype: the metric's dtype.

    Example:

    >>> m = ThresholdedF1Score([0.3, 0.7], average="micro")
    >>> m.update_state([[1.0, 0.0]], [[0.4, 0.6]])
    >>> round(float(m.result()), 4)
    1.0
    """

    def __init__(self, thresholds, average=None, name="f1_score", dtype=None):
        super().__init__(average=average, threshold=0.5, name=name, dtype=dtype)
        self.thresholds = [float(t) for t in thresholds]

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, _binarize(y_pred, self.thresholds), sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("threshold", None)
        return {**config, "thresholds": self.thresholds}


def parse_thresholds(spec, key="train.multilabel_thresholds"):
    """Parses per-label thresholds `"label:0.3,other:0.7"` into a dict (syntax and range only).

    Args:
        spec: str. `""` (none), `"tune"` (returns `{}`: tuned after training),
            or comma-separated `name:threshold` items, each threshold in (0, 1).
        key: str. The config key named in errors.

    Returns:
        dict str -> float, in the order given.

    Raises:
        ConfigError: not a string, an item without `:`, an empty name, a
            repeated name, or a threshold that is not a number in (0, 1).

    Example:

    >>> parse_thresholds("sports:0.3, news:0.7")
    {'sports': 0.3, 'news': 0.7}
    >>> parse_thresholds("sports=0.3")
    Traceback (most recent call last):
    ...
    sft_keras.errors.ConfigError: train.multilabel_thresholds item 'sports=0.3' is not 'label:threshold'. Use '', 'tune', or 'label:threshold,...' with each threshold in (0, 1), e.g. 'news:0.3,sports:0.7'. Received: train.multilabel_thresholds='sports=0.3'
    """
    import math

    from sft_keras.errors import ConfigError

    def bad(why):
        return ConfigError(
            f"{key} {why}. Use '', 'tune', or 'label:threshold,...' with each threshold in "
            f"(0, 1), e.g. 'news:0.3,sports:0.7'. Received: {key}={spec!r}"
        )

    if not isinstance(spec, str):
        raise bad("must be a string")
    if spec.strip() in ("", "tune"):
        return {}
    thresholds = {}
    for item in spec.split(","):
        item = item.strip()
        if ":" not in item:
            raise bad(f"item {item!r} is not 'label:threshold'")
        name, value = (x.strip() for x in item.rsplit(":", 1))
        if not name:
            raise bad(f"item {item!r} has no label name")
        if name in thresholds:
            raise bad(f"names label {name!r} twice")
        try:
            number = float(value)
        except ValueError:
            raise bad(f"gives label {name!r} the threshold {value!r}, which is not a number") from None
        if not math.isfinite(number) or not 0.0 < number < 1.0:
            raise bad(f"gives label {name!r} the threshold {number}, outside (0, 1)")
        thresholds[name] = number
    return thresholds


def resolve_thresholds(spec, class_names, default=0.5, tuned=None):
    """Turns `train.multilabel_thresholds` into one threshold per class, in class order.

    Args:
        spec: str. As in `parse_thresholds`; unnamed labels get `default`.
        class_names: list of str, in class-index order.
        default: float. `train.multilabel_threshold`.
        tuned: dict str -> float or None. For `spec="tune"`: the tuned
            thresholds (e.g. `RunDir.read_thresholds()`); None means
            not tuned yet, so every label gets `default`.

    Returns:
        tuple of float, one per class.

    Raises:
        ConfigError: a bad spec, or a label that is not one of `class_names`
            (the message lists the classes).

    Example:

    >>> resolve_thresholds("b:0.2", ["a", "b", "c"], default=0.6)
    (0.6, 0.2, 0.6)
    """
    from sft_keras.errors import ConfigError

    class_names = [str(c) for c in class_names]
    if isinstance(spec, str) and spec.strip() == "tune":
        given, key = dict(tuned or {}), "thresholds.json"
    else:
        given, key = parse_thresholds(spec), "train.multilabel_thresholds"
    for name in given:
        if name not in class_names:
            raise ConfigError(
                f"{key} names label {name!r}, which is not one of the classes {class_names}. "
                f"Received: {key}={spec if key.startswith('train') else given!r}"
            )
    return tuple(float(given.get(name, default)) for name in class_names)


def resolve_class_weight(spec, labels, class_names):
    """Turns `train.class_weight` into the `{class_id: weight}` dict `model.fit` takes.

    Args:
        spec: str. `""` (no weights), `"balanced"` (`n / (num_classes *
            count)` from the training labels, as scikit-learn's
            `compute_class_weight`), weights in class-index order
            (`"1,4"`), or by class name (`"neg:1,pos:4"`).
        labels: array of int. The training labels.
        class_names: list of str, in class-index order.

    Returns:
        dict int -> float, or None for `""`.

    Raises:
        ConfigError: a malformed spec, an unknown class name, or a count that
            does not match the classes (the message lists the classes).

    Example:

    >>> import numpy as np
    >>> resolve_class_weight("balanced", np.array([0, 0, 0, 1]), ["neg", "pos"])
    {0: 0.6667, 1: 2.0}
    >>> resolve_class_weight("pos:3", np.array([0, 1]), ["neg", "pos"])
    {0: 1.0, 1: 3.0}
    """
    import numpy as np

    from sft_keras.errors import ConfigError

    if not spec:
        return None
    num_classes = len(class_names)
    if spec == "balanced":
        counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=num_classes)
        total = counts.sum()
        return {
            i: round(float(total / (num_classes * c)), 4) if c else 1.0
            for i, c in enumerate(counts)
        }

    def bad(why):
        return ConfigError(
            f"train.class_weight {why}. Use '', 'balanced', weights in class order like "
            f"'1,4', or 'name:weight,...' with names from {list(class_names)}. "
            f"Received: train.class_weight={spec!r}"
        )

    items = [item.strip() for item in spec.split(",") if item.strip()]
    weights = {}
    try:
        if all(":" in item for item in items):
            for item in items:
                name, value = (x.strip() for x in item.rsplit(":", 1))
                if name not in class_names:
                    raise bad(f"names an unknown class {name!r}")
                weights[class_names.index(name)] = float(value)
            weights = {i: weights.get(i, 1.0) for i in range(num_classes)}
        else:
            if len(items) != num_classes:
                raise bad(f"lists {len(items)} weights for {num_classes} classes")
            weights = {i: float(value) for i, value in enumerate(items)}
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise bad("holds a weight that is not a number") from None
    if any(not np.isfinite(w) or w < 0 for w in weights.values()):
        raise bad("holds a negative or non-finite weight")
    return weights


TASKS = {
    "classification": Task("classification", monitors=("val_loss", "val_accuracy")),
    "binary": Task("binary", monitors=("val_loss", "val_accuracy", "val_auc")),
    "regression": Task("regression", monitors=("val_loss", "val_mae")),
    "multilabel": Task(
        "multilabel",
        monitors=("val_loss", "val_accuracy", "val_auc", "val_f1_micro", "val_f1_macro"),
    ),
    # A dual encoder of (context, response) pairs: sft_keras.modalities.retrieval.
    "retrieval": Task("retrieval", monitors=("val_loss", "val_accuracy")),
}


def get_task(name, **options):
    """Returns the `Task` named `name`, with `options` (e.g. `threshold`) set.

    Args:
        name: str or `Task`. One of 'classification', 'binary', 'regression',
            'multilabel'; a `Task` is returned as is (with `options` applied).
        **options: `Task` fields to override: `threshold`, `label_separator`.

    Example:

    >>> get_task("multilabel", threshold=0.3).output_activation()
    'sigmoid'
    """
    task = name if isinstance(name, Task) else TASKS[name]
    return dataclasses.replace(task, **options) if options else task


def task_from_config(config, class_names=None, tuned=None):
    """Returns the config's `Task`, with its multilabel threshold(s) and label separator.

    Args:
        config: a validated config.
        class_names: list of str or None. When given (multilabel), the
            per-label `train.multilabel_thresholds` are resolved against them
            (an unknown label is a `ConfigError` listing the classes); None
            leaves `thresholds` empty (`train.multilabel_threshold` for all).
        tuned: dict str -> float or None. With `multilabel_thresholds="tune"`:
            the tuned thresholds (see `resolve_thresholds`).
    """
    thresholds = ()
    if config.task == "multilabel" and class_names is not None and (
        config.train.multilabel_thresholds.strip() or tuned
    ):
        thresholds = resolve_thresholds(
            config.train.multilabel_thresholds, class_names,
            default=float(config.train.multilabel_threshold), tuned=tuned,
        )
    return get_task(
        config.task,
        threshold=float(config.train.multilabel_threshold),
        label_separator=config.data.label_separator,
        thresholds=thresholds,
        retrieval_scale=float(config.train.retrieval_scale),
        retrieval_symmetric=bool(config.train.retrieval_symmetric),
    )


def compile_for_task(model, config, class_names=None, optimizer=None, tuned=None,
                     weighted=False, distill=False):
    """Compiles `model` for `config.task`: the one place a model gets its loss and metrics.

    Training, `sft-eval` and `load_run` all compile through here, so the
    loss they report is the training loss (`train.label_smoothing`
    included) and the multilabel metrics use the run's thresholds.

    Args:
        model: a `keras.Model`. Call inside the strategy scope it trains in.
        config: a validated config.
        class_names: list of str or None. Resolves multilabel per-label
            thresholds (see `task_from_config`).
        optimizer: a Keras optimizer, or None to evaluate only.
        tuned: dict str -> float or None. Tuned multilabel thresholds
            (`report/thresholds.json`).
        weighted: bool. Compile the metrics as `weighted_metrics`, so they
            honour sample weights: evaluation batches padded with
            zero-weight examples (multi-replica strategies) count only the
            real ones.
        distill: bool. Training a student (`model.distill_from`): the loss
            and metrics also read targets that carry the teacher's
            log-probabilities (`sft_keras.training.distill`).

    Returns:
        The `Task` the model was compiled for.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.train.label_smoothing = 0.1
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, "softmax")])
    >>> compile_for_task(model, config, ["a", "b", "c"]).name
    'classification'
    >>> type(model.loss).__name__, model.loss.label_smoothing
    ('SparseCategoricalCrossentropyWithSmoothing', 0.1)
    """
    from sft_keras.training.distribute import jit_compile_arg, steps_per_execution_arg

    task = task_from_config(config, class_names, tuned=tuned)
    metrics, loss = task.metrics(), task.loss(config.train.label_smoothing)
    if distill:
        from sft_keras.training.distill import wrap_for_distillation

        loss, metrics = wrap_for_distillation(loss, metrics, len(class_names),
                                              config.train.distill_temperature,
                                              config.train.distill_alpha)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=None if weighted else metrics,
        weighted_metrics=metrics if weighted else None,
        jit_compile=jit_compile_arg(config.runtime),
        steps_per_execution=steps_per_execution_arg(config.runtime, model),
    )
    return task
