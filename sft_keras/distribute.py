"""The tf.distribute strategy named by `runtime.strategy`."""

import tensorflow as tf

from sft_keras.registry import Registry


def _one_device():
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _mirrored():
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    # No GPU: every logical CPU device (tests split the CPU into two). Reduce
    # through one device rather than with collective ops: collective instance
    # keys restart with every new strategy, so a second MirroredStrategy in the
    # same process (a notebook, a test suite) fails with "Shape mismatch in the
    # collective instance".
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(
        [d.name for d in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


STRATEGIES = Registry("strategy", config_key="runtime.strategy")
STRATEGIES.register("default", tf.distribute.get_strategy)
STRATEGIES.register("one_device", _one_device)
STRATEGIES.register("mirrored", _mirrored)


def get_strategy(runtime_config):
    """Returns the `tf.distribute.Strategy` that `runtime_config.strategy` names.

    Build and compile the model inside `strategy.scope()`. `train.batch_size`
    is the global batch size: each of `strategy.num_replicas_in_sync` replicas
    gets an equal share of it.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> get_strategy(get_default_config().runtime).num_replicas_in_sync
    1
    """
    return STRATEGIES.get(runtime_config.strategy)()
