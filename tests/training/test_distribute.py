"""Strategy selection, and MirroredStrategy on two logical CPU devices."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import get_default_config
from sft_keras.training.distribute import get_strategy
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


def test_mirrored_evaluation_of_8k_plus_1_examples_equals_single_device():
    """17 examples, batch 8, 2 replicas: the last batch holds one example, so unpadded one
    replica would get an empty batch (BatchNorm fails on it). Padded with zero-weight
    examples, evaluate and predict count every example exactly once."""
    from sft_keras import patches
    from sft_keras.data import ImageExamples, make_image_dataset
    from sft_keras.data.pipeline import pad_to_full_batches
    from sft_keras.models import build_image_model
    from sft_keras.tasks import get_task

    rng = np.random.RandomState(0)
    examples = ImageExamples(rng.randint(0, 255, (17, 32, 32, 3)).astype(np.float32),
                             rng.randint(0, 3, 17).astype(np.int32), ["a", "b", "c"])
    dataset = make_image_dataset(examples, (32, 32), batch_size=8)
    config = get_default_config()
    config.model.backbone = "small_cnn"
    config.model.freeze.batchnorm = False
    task = get_task("classification")

    keras.utils.set_random_seed(0)
    single = build_image_model(config, 3)
    single.compile(loss=task.loss(), metrics=task.metrics())
    expected = single.evaluate(dataset, return_dict=True, verbose=0)
    expected_outputs = single.predict(dataset, verbose=0)

    strategy = get_strategy(_runtime("mirrored"))
    with strategy.scope():
        mirrored = build_image_model(config, 3)
        mirrored.set_weights(single.get_weights())
        mirrored.compile(loss=task.loss(), weighted_metrics=task.metrics())
    patches.weighted_test_step(mirrored)
    padded = pad_to_full_batches(dataset, 17, 8)
    got = mirrored.evaluate(padded, return_dict=True, verbose=0)
    outputs = mirrored.predict(padded, verbose=0)

    assert outputs.shape == (24, 3)
    np.testing.assert_allclose(outputs[:17], expected_outputs, atol=1e-5)
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_mirrored_training_drops_the_short_last_batch():
    from sft_keras.data.pipeline import epoch_shuffled_batches, steps_per_epoch
    from sft_keras.errors import DataError

    batches = list(epoch_shuffled_batches(tf.data.Dataset.range(9), 4, 0, 2, drop_remainder=True))
    assert [len(b) for b in batches] == [4, 4, 4, 4]
    assert steps_per_epoch(9, 4, num_replicas=2) == 2
    assert steps_per_epoch(9, 4) == 3
    with pytest.raises(DataError, match="3 training examples do not fill one batch"):
        steps_per_epoch(3, 4, num_replicas=2)
