"""Optimizers by name, built from the `train` config."""

import keras

from sft_keras.registry import Registry

OPTIMIZERS = Registry("optimizer", config_key="train.optimizer")
OPTIMIZERS.register("adam", lambda t: keras.optimizers.Adam(learning_rate=t.learning_rate))
OPTIMIZERS.register(
    "adamw",
    lambda t: keras.optimizers.AdamW(learning_rate=t.learning_rate, weight_decay=t.weight_decay),
)
OPTIMIZERS.register(
    "sgd",
    lambda t: keras.optimizers.SGD(
        learning_rate=t.learning_rate,
        momentum=t.momentum,
        weight_decay=t.weight_decay or None,
    ),
)


def build_optimizer(train_config):
    """Returns the Keras optimizer `train_config.optimizer` names.

    Args:
        train_config: the `train` part of the config (`optimizer`,
            `learning_rate`, `weight_decay`, `momentum`).

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.train.optimizer = "sgd"
    >>> type(build_optimizer(config.train)).__name__
    'SGD'
    """
    return OPTIMIZERS.get(train_config.optimizer)(train_config)
