"""Every place sft_keras relies on a Keras or keras-hub internal, behind one version guard.

Each patch names the upstream issue or the missing public API it works
around, and calls `require_tested(...)` before touching anything: on a Keras
or keras-hub version outside `TESTED` the patched path fails at once with a
message naming both versions, instead of running internals that may have
changed underneath it. Code outside this module uses public APIs only.

Patches:

- `weighted_test_step` (no upstream API: `Model.test_step` weighs the loss
  tracker by the batch size, so padded evaluation batches with zero sample
  weights would dilute `val_loss`).
- `prepare_for_multi_worker_fit` (keras-team/keras#20585: `fit` under
  `MultiWorkerMirroredStrategy`).
- `PerVariableLearningRate` (no public per-variable learning rate in Keras
  optimizers: `update_step` gets the backend variable, and the decoupled
  weight decay runs in the private `_apply_weight_decay` at the unscaled
  rate).
- `flatten_layers` (no public way to list every nested layer: `Model.layers`
  is the top level only; Keras's private `Layer._flatten_layers`).
- `set_lora_alpha` (keras-hub's public `Backbone.enable_lora(rank,
  target_layer_names)` takes no `lora_alpha`).
"""

import functools
import importlib.metadata

from sft_keras.errors import UntestedVersionError

# package -> (first tested version, first untested version): [low, high).
TESTED = {
    "keras": ((3, 15), (3, 16)),
    "keras-hub": ((0, 32), (0, 33)),
}


def _version(package):
    text = importlib.metadata.version(package)
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return text, tuple(parts)


@functools.lru_cache(maxsize=None)
def require_tested(package, what):
    """Raises `UntestedVersionError` unless `package`'s version is in `TESTED`.

    Args:
        package: str. `"keras"` or `"keras-hub"`.
        what: str. The patched path, named in the error.

    Example:

    >>> require_tested("keras", "an example patch")
    """
    text, version = _version(package)
    low, high = TESTED[package]
    if not low <= version[: len(low)] < high:
        def show(v):
            return ".".join(map(str, v))

        raise UntestedVersionError(
            f"{what} uses a {package} internal tested only with {package} >= {show(low)}, "
            f"< {show(high)}; this machine has {package} {text}. Install a tested version "
            f"(pip install '{package}>={show(low)},<{show(high)}') or update "
            f"sft_keras/patches.py after checking the internal it relies on."
        )


def weighted_test_step(model):
    """Makes `model.evaluate` weigh its loss by the sample weights, not the batch size.

    Keras's `test_step` adds each batch's loss to the `loss` tracker with
    weight `batch_size`, so an evaluation batch padded with zero-weight
    examples (what sft_keras does under a multi-replica strategy, so that no
    replica gets an empty batch) would count its padding in `val_loss`. The
    replacement adds `sum(w * loss) / sum(w)` with weight `sum(w)`: padded
    examples count for nothing, and the mean equals the unpadded one.
    Metrics already honour sample weights. Batches without sample weights
    are evaluated exactly as by Keras.

    Args:
        model: a `keras.Model` (compiled before or after this call).

    Returns:
        `model`, whose `test_step` is replaced on the instance.
    """
    require_tested("keras", "weighted_test_step")
    import keras
    import tensorflow as tf
    from keras.src.losses import loss as loss_module

    original = model.test_step

    def test_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is None:
            return original(data)
        y_pred = model(x, training=False)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=False)
        loss = loss_module.unscale_loss_for_distribution(loss)
        extra = [tf.cast(tf.reduce_sum(v), loss.dtype) for v in model.losses]
        extra = loss_module.unscale_loss_for_distribution(tf.add_n(extra)) if extra else 0.0
        count = tf.cast(tf.shape(sample_weight)[0], loss.dtype)
        total = tf.reduce_sum(tf.cast(sample_weight, loss.dtype))
        # compute_loss gave sum(w * l) / count + extra.
        value = tf.math.divide_no_nan((loss - extra) * count, total) + extra
        model._loss_tracker.update_state(value, sample_weight=total)  # noqa: SLF001
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    model.test_step = test_step
    return model


def prepare_for_multi_worker_fit(model, strategy):
    """Makes Keras 3's `model.fit`/`evaluate` work under a multi-worker strategy.

    Keras 3.15's TensorFlow trainer fails under `MultiWorkerMirroredStrategy`
    (keras-team/keras#20585) in two places: (1) `_maybe_symbolic_build`
    averages the first input batch across workers with one `strategy.reduce`
    over the whole `(x, y)` structure ("Attempt to convert a value
    (PerReplica...)"); the batch only gives shapes, so this process's local
    batch is used instead; (2) step outputs (loss, metrics: scalars) are
    averaged with `strategy.reduce("MEAN", v, axis=0)`, which rejects 0-d
    values; they are averaged across workers with `axis=None`, so every
    worker logs the same numbers and callbacks (early stopping, best
    checkpoint) decide alike. BatchNormalization layers are switched to
    `synchronized=True`, so moving statistics stay identical on every worker.
    Does nothing for other strategies.

    Use `sft_keras.training.distribute.prepare_for_multi_worker_fit`, which
    calls this only under a multi-worker strategy (so single-worker runs
    never reach the version guard).

    Args:
        model: a Keras model built and compiled under `strategy.scope()`.
        strategy: the run's `tf.distribute.Strategy`.

    Returns:
        `model`, patched on the instance; Keras's TensorFlow
        `reduce_per_replica` is patched once per process.
    """
    require_tested("keras", "prepare_for_multi_worker_fit (keras-team/keras#20585)")
    import keras
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    from sft_keras.training.distribute import is_multi_worker

    if not is_multi_worker(strategy):
        return model

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = keras.tree.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build.__get__(model)  # noqa: SLF001
    # BatchNorm moving statistics are not synchronized variables in Keras 3:
    # each worker would keep its own. Synchronized BatchNorm computes the batch
    # moments over the global batch, so every worker keeps the same statistics.
    for layer in flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    if not getattr(tf_trainer.reduce_per_replica, "_sft_multi_worker", False):
        original = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and is_multi_worker(strategy):
                return keras.tree.map_structure(
                    lambda v: strategy.reduce("MEAN", v, axis=None), values
                )
            return original(values, strategy, reduction)

        reduce_per_replica._sft_multi_worker = True  # Patch once, however many models.
        tf_trainer.reduce_per_replica = reduce_per_replica
    return model


class PerVariableLearningRate:
    """Mixin for a Keras optimizer: each variable is updated at `learning_rate * scale`.

    Keras optimizers have no public per-variable learning rate. The public
    hook, `update_step(gradient, variable, learning_rate)`, receives the
    backend variable (on TensorFlow the `tf.Variable`, or one replica's
    component of a mirrored variable), not the `keras.Variable` whose `path`
    names it; and the decoupled weight decay (`AdamW`,
    `SGD(weight_decay=...)`) is applied to every variable at the unscaled
    rate by the private `_apply_weight_decay`, before `update_step` runs.
    This mixin:

    - finds the `keras.Variable` with the private `_get_variable_index`
      (which resolves mirrored components) into `_trainable_variables`;
    - turns `_apply_weight_decay` off and decays each variable in
      `update_step` instead, at its scaled rate, where the private
      `_use_weight_decay` (the lists `exclude_from_weight_decay` set) allows.

    With every scale 1 the updates equal the plain optimizer's. The
    constructor calls the version guard, so an untested Keras fails when the
    optimizer is created, not after a silently different training run.

    Attributes:
        lr_scales: dict, variable path -> factor; missing paths get 1. Set it
            before the optimizer is built.

    Example:

    >>> import keras
    >>> cls = type("ScaledSGD", (PerVariableLearningRate, keras.optimizers.SGD), {})
    >>> variable = keras.Variable([1.0], name="w")
    >>> optimizer = cls(learning_rate=1.0)
    >>> optimizer.lr_scales = {variable.path: 0.5}
    >>> optimizer.apply([keras.ops.ones((1,))], [variable])
    >>> float(variable.numpy()[0])
    0.5
    """

    lr_scales = None

    def __init__(self, *args, **kwargs):
        require_tested("keras", "PerVariableLearningRate (layer-wise learning-rate decay)")
        super().__init__(*args, **kwargs)

    def _keras_variable(self, variable):
        import keras

        # The TF backend passes the underlying tf.Variable; find its Keras variable.
        if isinstance(variable, keras.Variable):
            return variable
        return self._trainable_variables[self._get_variable_index(variable)]  # noqa: SLF001

    def _apply_weight_decay(self, variables):
        pass  # Applied per variable, at the scaled rate, in `update_step`.

    def update_step(self, gradient, variable, learning_rate):
        import keras

        keras_variable = self._keras_variable(variable)
        scale = (self.lr_scales or {}).get(keras_variable.path, 1.0)
        lr = keras.ops.cast(learning_rate, variable.dtype) * scale
        if self.weight_decay is not None and self._use_weight_decay(keras_variable):
            wd = keras.ops.cast(self.weight_decay, variable.dtype)
            variable.assign(variable - variable * wd * lr)
        return super().update_step(gradient, variable, lr)


def flatten_layers(layer, include_self=True):
    """Returns `layer` and every layer nested in it, at any depth, in Keras's tracking order.

    Keras 3 has no public way to list every nested layer: `Model.layers` is
    the top level only, and a plain `Layer` (keras-hub's
    `TransformerEncoder`, `MultiHeadAttention`) exposes no sublayers at all.
    Keras's private `Layer._flatten_layers` walks them all, in the order
    keras-hub uses to index LoRA layers (`Backbone.save_lora_weights`).

    Args:
        layer: a `keras.layers.Layer` (a model included).
        include_self: bool. Whether `layer` itself comes first.

    Returns:
        list of layers, each once.

    Example:

    >>> import keras
    >>> inner = keras.Sequential([keras.layers.Dense(2, name="d")], name="inner")
    >>> outer = keras.Sequential([inner], name="outer")
    >>> [x.name for x in flatten_layers(outer)]
    ['outer', 'inner', 'd']
    """
    require_tested("keras", "flatten_layers (Layer._flatten_layers)")
    return layer._flatten_layers(include_self=include_self)  # noqa: SLF001


def set_lora_alpha(layer, alpha):
    """Sets the LoRA scale `alpha` (the update is `alpha / rank * A @ B`) of a LoRA layer.

    keras-hub's public `Backbone.enable_lora(rank, target_layer_names)`
    calls each layer's `enable_lora(rank)` without `lora_alpha`, so every
    layer gets Keras's default `alpha = rank`. No public API changes alpha
    afterwards. Keras 3.15's `Dense`, `EinsumDense` and `Embedding` read the
    `lora_alpha` attribute at each call, in `kernel` and when saving the
    merged kernel, and `enable_lora(rank, lora_alpha=alpha)` does nothing
    else with it, so setting the attribute gives exactly that layer.

    Args:
        layer: a Keras layer with LoRA enabled.
        alpha: float > 0.

    Returns:
        `layer`.
    """
    require_tested("keras", "set_lora_alpha (model.lora_alpha)")
    if not getattr(layer, "lora_enabled", False):
        raise ValueError(f"Layer {layer.name!r} has no LoRA enabled: cannot set its alpha.")
    layer.lora_alpha = alpha
    return layer
