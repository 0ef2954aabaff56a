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
    """

    name: str
    monitors: tuple

    def output_units(self, num_classes):
        """Units of the output Dense layer."""
        return num_classes if self.name == "classification" else 1

    def output_activation(self):
        return {"classification": "softmax", "binary": "sigmoid", "regression": "linear"}[
            self.name
        ]

    def loss(self):
        if self.name == "classification":
            return keras.losses.SparseCategoricalCrossentropy()
        if self.name == "binary":
            return keras.losses.BinaryCrossentropy()
        return keras.losses.MeanSquaredError()

    def metrics(self):
        if self.name == "classification":
            return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if self.name == "binary":
            return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def monitor_mode(self, monitor):
        """'max' for metrics where higher is better, else 'min'."""
        return "max" if monitor.removeprefix("val_") in ("accuracy", "auc") else "min"

    def serving_outputs(self, model_outputs, class_names):
        """Maps the model's outputs to the named outputs of a serving signature.

        Classification and binary return `probabilities` (float32 [batch, classes]),
        `class_id` (int64 [batch]) and `label` (string [batch]); regression returns
        `prediction` (float32 [batch]).
        """
        import tensorflow as tf

        outputs = tf.cast(model_outputs, tf.float32)
        if self.name == "regression":
            return {"prediction": tf.reshape(outputs, [-1])}
        if self.name == "binary":
            outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
        class_id = tf.argmax(outputs, axis=-1, output_type=tf.int64)
        label = tf.gather(tf.constant(list(class_names), dtype=tf.string), class_id)
        return {"probabilities": outputs, "class_id": class_id, "label": label}


TASKS = {
    "classification": Task("classification", monitors=("val_loss", "val_accuracy")),
    "binary": Task("binary", monitors=("val_loss", "val_accuracy", "val_auc")),
    "regression": Task("regression", monitors=("val_loss", "val_mae")),
}


def get_task(name):
    """Returns the `Task` named `name` (one of 'classification', 'binary', 'regression')."""
    return TASKS[name]
