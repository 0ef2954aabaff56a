"""tf.data pipeline performance options keep the outputs the model and reports rely on."""

import numpy as np
import tensorflow as tf

from sft_keras.data import ImageExamples, load_digits, make_image_dataset

from helpers import write_image_folder


def _labels(ds):
    return np.concatenate([labels.numpy() for _, labels in ds]).tolist()


def test_validation_order_is_kept_even_when_training_maps_may_reorder(tmp_path):
    root = write_image_folder(str(tmp_path / "images"), per_class=6)
    paths = sorted(str(p) for p in tmp_path.glob("images/*/*.png"))
    labels = [["diagonal", "horizontal", "vertical"].index(p.split("/")[-2]) for p in paths]
    order = np.random.RandomState(0).permutation(len(paths))
    examples = ImageExamples([paths[i] for i in order], np.array(labels)[order],
                             ["diagonal", "horizontal", "vertical"])
    ds = make_image_dataset(examples, (32, 32), batch_size=4, deterministic=False)
    assert _labels(ds) == examples.labels.tolist()
    assert root


def test_deterministic_training_order_repeats_with_the_seed():
    digits = load_digits()
    kwargs = dict(batch_size=32, training=True, seed=3, deterministic=True)
    first = _labels(make_image_dataset(digits, (32, 32), **kwargs))
    again = _labels(make_image_dataset(digits, (32, 32), **kwargs))
    assert first == again and first != digits.labels.tolist()


def test_datasets_shard_by_element_under_multi_worker():
    ds = make_image_dataset(load_digits(), (32, 32), batch_size=8)
    policy = ds.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
