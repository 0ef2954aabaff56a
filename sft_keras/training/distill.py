"""Knowledge distillation from a finished run (`model.distill_from`).

The configured model (the student) trains on the same data as usual, with a
loss that mixes the task's loss on the labels and the teacher's softened
probabilities (Hinton et al., 2015):

    alpha * task_loss(label, p) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where `t` and `s` are the teacher's and the student's logits (the log of
their softmax outputs), `T` is `train.distill_temperature` and `alpha`
`train.distill_alpha`.

The teacher is rebuilt once with `sft_keras.run.load_run`, its predictions on
the training examples are computed once (through the teacher's own
preprocessing, so it may have another tokenizer, image size or backbone) and
travel with each example in the tf.data pipeline, packed after the label:
`y = [label, teacher log-probabilities...]`. Nothing of the teacher is in the
student model, its checkpoints or its export.

`keras.distillation.Distiller` (Keras 3.15) is not used: it is a `Model`
holding teacher and student and runs the teacher at every step, so the run's
checkpoints, resume, `load_run` and export would have to unwrap it, and the
teacher's cost would be paid every epoch. Its loss (`LogitsDistillation`) is
the same KL term.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sft_keras.errors import ConfigError


def load_teacher(config, class_names):
    """Rebuilds the teacher run named by `model.distill_from` and checks it fits the data.

    Args:
        config: a validated config with `model.distill_from` set.
        class_names: list of str. The student's data labels.

    Returns:
        The teacher's `sft_keras.run.Run` (best checkpoint).

    Raises:
        ConfigError: the folder is missing, holds no finished run, or its
            labels differ from `class_names`; the error names
            `model.distill_from` and its value.
    """
    from sft_keras.run import RunDir, load_run

    path = config.model.distill_from
    key = f"Received: model.distill_from={path!r}"
    if not os.path.isdir(path):
        raise ConfigError(f"model.distill_from must be the workdir of a finished run; no such "
                          f"folder. {key}")
    state = RunDir(path).checkpoints.read_state()
    if not (state and state.get("complete")):
        raise ConfigError(f"model.distill_from must be the workdir of a finished run; {path} "
                          f"holds no finished training run (train it to the end first). {key}")
    run = load_run(path)
    if list(run.class_names) != list(class_names):
        raise ConfigError(
            f"model.distill_from: the teacher's labels.txt {list(run.class_names)} differs from "
            f"the student's data labels {list(class_names)}: distil on the teacher's data, with "
            f"the same classes in the same order. {key}")
    if run.config.task != "classification":
        raise ConfigError(f"model.distill_from must be a task='classification' run; it is a "
                          f"task={run.config.task!r} run. {key}")
    logging.info("Teacher %s: %s, %d parameters.", path, run.config.model.backbone,
                 run.model.count_params())
    return run


def teacher_log_probs(teacher, examples):
    """The teacher's log-probabilities of `examples`, in their order.

    Args:
        teacher: `sft_keras.run.Run` (from `load_teacher`).
        examples: the student's examples (e.g. `data.train`); read through the
            teacher's modality, i.e. its own preprocessing.

    Returns:
        float32 array `[len(examples), num_classes]`.
    """
    dataset = teacher.modality.make_dataset(examples, cache=False)
    probabilities = teacher.model.predict(dataset, verbose=0)[: len(examples)]
    return np.log(np.clip(probabilities.astype("float32"), 1e-30, 1.0))


def with_teacher(examples, log_probs):
    """Packs each example's teacher log-probabilities after its label: `(x, [y, t...])`.

    Args:
        examples: unbatched `tf.data.Dataset` of `(x, y)`, `y` an integer class
            id, in the order of `log_probs`.
        log_probs: array `[num_examples, num_classes]` (`teacher_log_probs`).

    Returns:
        An unbatched `tf.data.Dataset` of `(x, float32 [1 + num_classes])`.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(([[1.0], [2.0]], [0, 1]))
    >>> x, y = next(iter(with_teacher(ds, np.log([[0.9, 0.1], [0.2, 0.8]]))))
    >>> [round(float(v), 3) for v in y]
    [0.0, -0.105, -2.303]
    """
    teacher = tf.data.Dataset.from_tensor_slices(np.asarray(log_probs, "float32"))

    def pack(example, t):
        x, y = example
        return x, tf.concat([tf.reshape(tf.cast(y, tf.float32), (1,)), t], axis=0)

    return tf.data.Dataset.zip((examples, teacher)).map(pack, num_parallel_calls=tf.data.AUTOTUNE)


def _split(y_true, num_classes):
    """(labels, teacher log-probs or None): packed targets carry the teacher's after the label."""
    if len(y_true.shape) == 2 and y_true.shape[-1] == num_classes + 1:
        return y_true[:, :1], y_true[:, 1:]
    return y_true, None  # Validation and evaluation: the labels alone.


class DistillationLoss(keras.losses.Loss):
    """The task's loss on the labels mixed with the teacher's softened probabilities.

    On packed targets (`with_teacher`): `alpha * hard + (1 - alpha) * T^2 *
    KL(teacher_T || student_T)`, the `_T` distributions being the softmax of
    the log-probabilities divided by `temperature`. On plain labels
    (validation, evaluation): the task's loss alone, so `val_loss` compares
    with a run trained without a teacher.

    Args:
        hard_loss: `keras.losses.Loss`. The task's loss on integer class ids.
        num_classes: int.
        temperature: float > 0.
        alpha: float in [0, 1]. The weight of `hard_loss`.

    Example:

    >>> loss = DistillationLoss(keras.losses.SparseCategoricalCrossentropy(), 2, 1.0, 0.0)
    >>> teacher = np.log([[0.8, 0.2]])
    >>> round(float(loss(np.c_[[[1.0]], teacher], np.array([[0.8, 0.2]]))), 6)  # Agrees.
    0.0
    >>> round(float(loss(np.array([1]), np.array([[0.8, 0.2]]))), 4)  # Labels alone: -log 0.2.
    1.6094
    """

    def __init__(self, hard_loss, num_classes, temperature=2.0, alpha=0.5,
                 name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hard_loss = hard_loss
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_pred = ops.cast(y_pred, "float32")
        labels, teacher = _split(y_true, self.num_classes)
        hard = self.hard_loss.call(labels, y_pred)
        if teacher is None:
            return hard
        t = self.temperature
        student = ops.log_softmax(ops.log(ops.clip(y_pred, 1e-30, 1.0)) / t, axis=-1)
        teacher = ops.log_softmax(ops.cast(teacher, "float32") / t, axis=-1)
        kl = ops.sum(ops.exp(teacher) * (teacher - student), axis=-1) * t * t
        return self.alpha * hard + (1.0 - self.alpha) * kl

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "temperature": self.temperature, "alpha": self.alpha}


class HardLabelMetric(keras.metrics.Metric):
    """A metric of the labels, given packed targets (`with_teacher`) or plain labels.

    Its name is the wrapped metric's, so logs keep `accuracy` and
    `val_accuracy` (and `train.monitor` its meaning).

    Args:
        metric: `keras.metrics.Metric` on integer class ids.
        num_classes: int.
    """

    def __init__(self, metric, num_classes, **kwargs):
        super().__init__(name=metric.name, **kwargs)
        self.metric = metric
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, _ = _split(y_true, self.num_classes)
        self.metric.update_state(labels, y_pred, sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()


def wrap_for_distillation(loss, metrics, num_classes, temperature, alpha):
    """The task's loss and metrics, made to read targets packed by `with_teacher`."""
    return (DistillationLoss(loss, num_classes, temperature, alpha),
            [HardLabelMetric(m, num_classes) for m in metrics])


def init_from_teacher(student, teacher):
    """Initialises a text student's encoder from the teacher's fine-tuned one, where it fits.

    A keras-hub encoder of the teacher's family and sizes, with as many or
    fewer transformer layers (`model.num_layers`), takes the teacher's
    embeddings and its layers `sft_keras.backbones.kept_layers(...)`; any
    other student (another family or size, an image backbone) keeps its own
    initialisation (its preset's or pretrained weights).

    Args:
        student: the student `keras.Model` (`build_text_model`).
        teacher: the teacher `keras.Model`.

    Returns:
        list of int: the teacher's transformer layers copied, or None.
    """
    import keras_hub

    from sft_keras.backbones import copy_encoder_layers
    from sft_keras.models.build import find_backbone

    source, target = find_backbone(teacher), find_backbone(student)
    if not (isinstance(source, keras_hub.models.Backbone) and type(source) is type(target)
            and target.num_layers <= source.num_layers):
        logging.info("The student's backbone is not a smaller copy of the teacher's: it keeps "
                     "its own initial weights.")
        return None
    try:
        kept = copy_encoder_layers(source, target)
    except ConfigError as e:  # Other sizes (hidden_dim, heads...): nothing to copy.
        logging.info("%s The student keeps its own initial weights.", e)
        return None
    logging.info("Student encoder initialised from the teacher's transformer layers %s of %d.",
                 kept, source.num_layers)
    return kept
