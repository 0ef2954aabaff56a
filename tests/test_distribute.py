"""Strategy selection, and MirroredStrategy on two logical CPU devices."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import get_default_config
from sft_keras.distribute import get_strategy
from sft_keras.errors import ConfigError


def _runtime(name):
    config = get_default_config()
    config.runtime.strategy = name
    return config.runtime


def test_strategies_by_name():
    assert get_strategy(_runtime("default")) is tf.distribute.get_strategy()
    assert isinstance(get_strategy(_runtime("one_device")), tf.distribute.OneDeviceStrategy)
    mirrored = get_strategy(_runtime("mirrored"))
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU")) == 2


def test_auto_without_gpus_is_the_default_strategy_and_says_so(capsys):
    assert get_strategy(_runtime("auto")) is tf.distribute.get_strategy()
    assert "0 GPU(s) visible, using 'default'" in capsys.readouterr().out


def test_tpu_without_a_tpu_fails_fast_and_says_how_to_set_it():
    start = time.time()
    with pytest.raises(ConfigError) as error:
        get_strategy(_runtime("tpu"))
    message = str(error.value)
    assert "no TPU was found. Received: runtime.tpu=''" in message
    assert "TPUClusterResolver(tpu='')" in message and "TPUClusterResolver(tpu='local')" in message
    assert "--config.runtime.tpu=" in message
    assert time.time() - start < 60


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Unknown strategy 'tpu_pod'.*'mirrored'"):
        get_strategy(_runtime("tpu_pod"))


@pytest.mark.parametrize("width", [8, 24])  # A second strategy with other shapes, same process.
def test_mirrored_fit_reduces_gradients_across_replicas(width):
    strategy = get_strategy(_runtime("mirrored"))
    x = np.random.RandomState(0).rand(64, 4).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 2).astype("float32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    history = model.fit(x, y, batch_size=16, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
