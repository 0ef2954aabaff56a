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
        label_separator: str. Multilabel: joins the predicted labels in the
            served `labels` output (`data.label_separator`).
    """

    name: str
    monitors: tuple
    threshold: float = 0.5
    label_separator: str = "|"

    def output_units(self, num_classes):
        """Units of the output Dense layer."""
        return num_classes if self.name in ("classification", "multilabel") else 1

    def output_activation(self):
        return {"classification": "softmax", "binary": "sigmoid", "regression": "linear",
                "multilabel": "sigmoid"}[self.name]

    def loss(self, label_smoothing=0.0):
        """The training loss; `label_smoothing` (classification, binary) softens the targets."""
        if self.name == "classification":
            if label_smoothing:
                return SparseCategoricalCrossentropyWithSmoothing(label_smoothing)
            return keras.losses.SparseCategoricalCrossentropy()
        if self.name in ("binary", "multilabel"):
            return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
        return keras.losses.MeanSquaredError()

    def metrics(self):
        if self.name == "classification":
            return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if self.name == "binary":
            return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
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
        [batch, classes], probability >= `threshold`) and `labels` (string
        [batch]: the predicted class names joined by `label_separator`, in
        class order; empty when none passes).
        """
        import tensorflow as tf

        outputs = tf.cast(model_outputs, tf.float32)
        if self.name == "regression":
            return {"prediction": tf.reshape(outputs, [-1])}
        if self.name == "multilabel":
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


def task_from_config(config):
    """Returns the config's `Task`, with its multilabel threshold and label separator."""
    return get_task(
        config.task,
        threshold=float(config.train.multilabel_threshold),
        label_separator=config.data.label_separator,
    )
