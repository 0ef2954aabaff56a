"""Shared test setup: two logical CPU devices, quiet TF logs, tiny helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices before TF initialises, so
# MirroredStrategy runs with 2 replicas on a machine without GPUs.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")


def make_pattern_image(class_index, size=32, seed=0):
    """A learnable 3-class image: a bright bar whose orientation is the class, plus noise."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 60, (size, size, 3)).astype(np.uint8)
    third = size // 3
    if class_index == 0:
        image[third : 2 * third, :, :] = 230  # Horizontal bar.
    elif class_index == 1:
        image[:, third : 2 * third, :] = 230  # Vertical bar.
    else:
        image[np.arange(size), np.arange(size), :] = 230  # Diagonal line.
        image[np.arange(size - 1), np.arange(1, size), :] = 230
    return image


def write_image_folder(root, class_names=("horizontal", "vertical", "diagonal"), per_class=12,
                       size=32, fmt="png"):
    """Writes a class-per-subfolder image dataset of `make_pattern_image` images."""
    for c, name in enumerate(class_names):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            image = make_pattern_image(c % 3, size=size, seed=1000 * c + i)
            encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
            with open(os.path.join(root, name, f"{i:03d}.{fmt}"), "wb") as f:
                f.write(encoded.numpy())
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(str(tmp_path / "images"))


def run_cli(args, cwd=REPO_ROOT, timeout=600, env=None):
    """Runs a command in a fresh process; returns the CompletedProcess (text output)."""
    import subprocess
    import sys

    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1")
    full_env.update(env or {})
    if args[0] == "python":
        args = [sys.executable, *args[1:]]
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def tiny_image_run(tmp_path_factory):
    """A finished small_cnn run: (workdir, image folder). Shared: do not modify it."""
    from tiny_runs import train_image_run

    return train_image_run(str(tmp_path_factory.mktemp("tiny_image_run")))


@pytest.fixture(scope="session")
def tiny_text_run(tmp_path_factory):
    """A finished tiny-BERT run: (workdir, CSV path). Shared: do not modify it."""
    from tiny_runs import train_text_run

    return train_text_run(str(tmp_path_factory.mktemp("tiny_text_run")))
