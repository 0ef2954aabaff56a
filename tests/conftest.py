"""Shared test setup: two logical CPU devices, quiet TF logs, fixtures on tests/helpers.py."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import helpers  # noqa: E402

# Split the CPU into two logical devices before TF initialises, so
# MirroredStrategy runs with 2 replicas on a machine without GPUs.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture
def image_folder(tmp_path):
    """A fresh 3-class generated image folder, 12 PNGs a class (`helpers.write_image_folder`)."""
    return helpers.write_image_folder(str(tmp_path / "images"))


@pytest.fixture(scope="session")
def tiny_image_run(tmp_path_factory):
    """A finished small_cnn run: (workdir, image folder). Shared: do not modify it."""
    return helpers.train_image_run(str(tmp_path_factory.mktemp("tiny_image_run")))


@pytest.fixture(scope="session")
def tiny_text_run(tmp_path_factory):
    """A finished tiny-BERT run: (workdir, CSV path). Shared: do not modify it."""
    return helpers.train_text_run(str(tmp_path_factory.mktemp("tiny_text_run")))
