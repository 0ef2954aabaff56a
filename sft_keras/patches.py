"""Every place sft_keras changes a Keras or keras-hub internal, behind one version guard.

Each patch names the upstream issue or the missing public API it works
around, and calls `require_tested(...)` before touching anything: on a Keras
or keras-hub version outside `TESTED` the patched path fails at once with a
message naming both versions, instead of running internals that may have
changed underneath it.

Patches:

- `weighted_test_step` (no upstream API: `Model.test_step` weighs the loss
  tracker by the batch size, so padded evaluation batches with zero sample
  weights would dilute `val_loss`).
- `prepare_for_multi_worker_fit` (keras-team/keras#20585: `fit` under
  `MultiWorkerMirroredStrategy`).
- `decay_exclusions` (the optimizer's private weight-decay exclusion lists,
  which AdamW's public `exclude_from_weight_decay` cannot express for
  variables without names).
- `mark_lora_enabled` (keras-hub's `Backbone._lora_enabled_layers`, which its
  public `enable_lora` only fills for its own default targets).
"""

import functools
import importlib.metadata

from sft_keras.errors import SftError

# package -> (first tested version, first untested version): [low, high).
TESTED = {
    "keras": ((3, 15), (3, 16)),
    "keras-hub": ((0, 32), (0, 33)),
}


class UntestedVersionError(SftError):
    """A patched Keras/keras-hub internal is used on a version it was not tested with."""


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
            f"{what} patches a {package} internal tested only with {package} >= {show(low)}, "
            f"< {show(high)}; this machine has {package} {text}. Install a tested version "
            f"(pip install '{package}>={show(low)},<{show(high)}') or update "
            f"sft_keras/patches.py after checking the internal it patches."
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
