"""Length-bucketed text batches: same predictions, exact batch counts, replayable epochs."""

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import validate_config
from sft_keras.data import TextExamples, make_text_dataset
from sft_keras.data.pipeline import (
    epoch_shuffled_batches,
    length_sorted_batches,
    steps_per_epoch,
)
from sft_keras.errors import ConfigError
from sft_keras.modalities import get_modality

from helpers import FILLER, write_tiny_bert_preset

SEQUENCE_LENGTH = 32
BUCKETS = (8, 16)


def _texts(n, seed=0):
    """Sentences of 1 to 25 words (3 to 27 tokens with [CLS]/[SEP]), some cut at 32."""
    rng = np.random.RandomState(seed)
    return [" ".join(rng.choice(FILLER, size=rng.randint(1, 26 if i % 7 else 40)))
            for i in range(n)]


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory):
    """(config, modality, unbatched examples dataset) for 45 texts of varied length."""
    preset = write_tiny_bert_preset(tmp_path_factory.mktemp("bucket_bert") / "bert",
                                    hidden_dim=16, intermediate_dim=32)
    config = validate_config({
        "data": {"source": "text_file", "path": "unused.csv", "sequence_length": SEQUENCE_LENGTH,
                 "length_buckets": BUCKETS},
        "model": {"backbone": "bert", "preset": preset},
    }, check_files=False)
    modality = get_modality(config)
    # The label is the example's index here, to follow each example.
    examples = TextExamples(np.array(_texts(45), object), np.arange(45, dtype=np.int32),
                            ["neg", "pos"])
    unbatched = make_text_dataset(examples, modality.preprocessor, batch_size=16).unbatch()
    return config, modality, unbatched


def _real_lengths(features):
    return features["padding_mask"].numpy().sum(axis=1)


def test_predictions_do_not_depend_on_the_bucket(text_setup):
    config, modality, unbatched = text_setup
    model = modality.build_model(2)
    full = next(iter(unbatched.batch(45)))[0]
    reference = model.predict(full, verbose=0)
    for bound in (8, 16, 32):  # The same examples cut to each bucket they fit in.
        fits = np.flatnonzero(_real_lengths(full) <= bound)
        cut = {name: tf.gather(value, fits)[:, :bound] for name, value in full.items()}
        np.testing.assert_allclose(model.predict(cut, verbose=0), reference[fits],
                                   rtol=1e-5, atol=1e-6)
    for features, ids in length_sorted_batches(unbatched, 8, BUCKETS, sort_window=2):
        np.testing.assert_allclose(model.predict(features, verbose=0), reference[ids.numpy()],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_each_epoch_has_every_example_once_in_steps_per_epoch_batches(text_setup, drop_remainder):
    _, _, unbatched = text_setup
    batch_size, replicas = 8, 2 if drop_remainder else 1
    steps = steps_per_epoch(45, batch_size, replicas)
    batches = list(epoch_shuffled_batches(unbatched, batch_size, 0, 1, seed=3,
                                          drop_remainder=drop_remainder, length_buckets=BUCKETS,
                                          sort_window=2))
    assert len(batches) == steps == (5 if drop_remainder else 6)
    ids = np.concatenate([y.numpy() for _, y in batches])
    assert len(set(ids)) == len(ids) == (40 if drop_remainder else 45)
    assert [len(y) for _, y in batches] == [8] * 5 + ([] if drop_remainder else [5])
    for features, _ in batches:  # Cut to a bucket that holds every example, padding only.
        width = features["token_ids"].shape[1]
        assert width in (8, 16, 32)
        assert set(features) == {"token_ids", "segment_ids", "padding_mask"}
        assert all(v.shape[1] == width for v in features.values())
        assert _real_lengths(features).max() <= width
        assert _real_lengths(features).max() > {8: 0, 16: 8, 32: 16}[width]  # The smallest.


def test_sorting_windows_cut_most_padding(text_setup):
    _, _, unbatched = text_setup

    def padded_tokens(**kwargs):
        return sum(f["token_ids"].shape[0] * f["token_ids"].shape[1] for f, _ in
                   epoch_shuffled_batches(unbatched, 8, 0, 1, seed=1, **kwargs))

    off = padded_tokens()
    assert off == 45 * SEQUENCE_LENGTH
    assert padded_tokens(length_buckets=BUCKETS, sort_window=6) < padded_tokens(
        length_buckets=BUCKETS, sort_window=1) <= off


def test_epochs_replay_the_same_batches_when_resumed_or_skipped(text_setup):
    _, _, unbatched = text_setup

    def run(first, skip=0):
        stream = epoch_shuffled_batches(unbatched, 8, first, 3, seed=5, length_buckets=BUCKETS,
                                        sort_window=3).skip(skip)
        return [(f["token_ids"].numpy().tolist(), y.numpy().tolist()) for f, y in stream]

    full = run(0)
    assert full == run(0)
    assert full[12:] == run(2)  # 6 batches per epoch: epoch 2 on its own, new process alike.
    assert full[14:] == run(2, skip=2)  # Mid-epoch resume skips the first batches.
    assert full[:6] != full[6:12]  # A fresh order every epoch.


def test_images_ignore_length_buckets():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((5, 4, 4, 3), np.float32), np.arange(5)))
    batches = list(epoch_shuffled_batches(ds, 2, 0, 1, length_buckets=BUCKETS))
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]


@pytest.mark.parametrize("value", [(0, 16), "16,32", (16.5,), 16])
def test_bad_length_buckets_are_rejected(value):
    with pytest.raises(ConfigError, match=r"data\.length_buckets.*Received: data\.length_buckets="):
        validate_config({"data": {"source": "text_file", "path": "unused.csv", "length_buckets": value},
                         "model": {"backbone": "bert", "preset": "x"}}, check_files=False)
