"""tf.data pipelines: decode in parallel, cache, shuffle, batch, prefetch."""

import numpy as np
import tensorflow as tf

from sft_keras.data.images import decode_image_bytes


def make_image_dataset(examples, image_size, batch_size, task="classification", training=False,
                       cache=True, shuffle_buffer=2048, seed=0, deterministic=True):
    """Returns a batched `tf.data.Dataset` of `(pixels, label)`.

    Images are decoded and resized in parallel (`AUTOTUNE`), cached in memory
    when `cache` (decoding happens once), shuffled when `training` (seeded,
    reshuffled every epoch), batched and prefetched. Pixels are float32 in
    [0, 255]; the model applies the backbone's preprocessing.

    Args:
        examples: `sft_keras.data.ImageExamples`.
        image_size: `(height, width)`.
        batch_size: int. Global batch size.
        task: str. Labels are int32 class ids for `"classification"`, float32
            for `"binary"` and `"regression"`.
        training: bool. Shuffle.
        cache: bool. Cache decoded images in memory.
        shuffle_buffer: int. Shuffle buffer size.
        seed: int. Shuffle seed.
        deterministic: bool. Keep element order in the parallel decode when
            `training`, so the seeded shuffle repeats exactly. False lets a
            slow image not hold up the others, but the order of the shuffle's
            input, hence the training order, may differ run to run. Without
            `training` the order is always kept.

    Example:

    >>> from sft_keras.data import load_digits
    >>> ds = make_image_dataset(load_digits(), (32, 32), batch_size=8)
    >>> images, labels = next(iter(ds))
    >>> images.shape, labels.dtype.name
    (TensorShape([8, 32, 32, 3]), 'int32')
    """
    size = tuple(image_size)
    label_dtype = np.int32 if task == "classification" else np.float32
    labels = np.asarray(examples.labels, label_dtype)
    if task != "classification" and labels.ndim == 1:  # Multi-label: already [n, classes].
        labels = labels[:, None]
    if isinstance(examples.images, np.ndarray):
        ds = tf.data.Dataset.from_tensor_slices((examples.images, labels))
        load = lambda image, label: (tf.image.resize(image, size), label)  # noqa: E731
    else:
        ds = tf.data.Dataset.from_tensor_slices((list(examples.images), labels))
        load = lambda path, label: (decode_image_bytes(tf.io.read_file(path), size), label)  # noqa: E731
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic or not training)
    return _finish(ds, len(labels), batch_size, training, cache, shuffle_buffer, seed)


def _finish(ds, num_examples, batch_size, training, cache, shuffle_buffer, seed):
    """Cache, shuffle, batch, prefetch; shard by element under multi-worker training."""
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(shuffle_buffer, num_examples), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory sources have no files to shard: each worker takes its share of
    # every batch (says so up front instead of TF's AUTO -> DATA warning).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


TEXT_INPUTS = ("token_ids", "segment_ids", "padding_mask")


def _to_int32(features):
    # A bool padding_mask breaks gradient aggregation under MirroredStrategy
    # ("Value for attr 'T' of bool ... AddN"); int32 everywhere avoids it. The keys
    # are the backbone's own inputs (RoBERTa-like families take no segment_ids).
    return {name: tf.cast(value, tf.int32) for name, value in features.items()}


def make_text_dataset(examples, preprocessor, batch_size, task="classification", training=False,
                      cache=True, shuffle_buffer=2048, seed=0, tokenize_batch_size=1024,
                      deterministic=True):
    """Returns a batched `tf.data.Dataset` of `(token dict, label)` for a text model.

    Texts are tokenized in large batches in graph mode (keras-hub's
    preprocessor, parallel `map`), once: the token ids are cached in memory
    when `cache`, then shuffled (seeded, every epoch) when `training`,
    batched and prefetched.

    Args:
        examples: `sft_keras.data.TextExamples`; `texts` of shape `[n]`, or
            `[n, 2]` for sentence pairs.
        preprocessor: a keras-hub text classifier preprocessor, e.g. from
            `sft_keras.backbones.make_preprocessor`.
        batch_size: int. Global batch size.
        task: str. Labels are int32 for `"classification"`, float32 `[n, 1]`
            otherwise.
        training: bool. Shuffle.
        cache: bool. Cache the token ids in memory.
        shuffle_buffer: int. Shuffle buffer size.
        seed: int. Shuffle seed.
        tokenize_batch_size: int. Texts per tokenizer call.
        deterministic: bool. Keep batch order in the parallel tokenization
            when `training` (see `make_image_dataset`). Without `training`
            the order is always kept.

    Returns:
        A `tf.data.Dataset` of `(features, labels)` batches; `features` maps
        the preprocessor's outputs (`token_ids`, `padding_mask`, and
        `segment_ids` for BERT-like families) to int32
        `[batch, sequence_length]`.

    Example:

    >>> import tempfile
    >>> from sft_keras.backbones import (load_text_tokenizer, make_preprocessor,
    ...                                  save_tiny_bert_preset)
    >>> from sft_keras.data import TextExamples
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> tokenizer = load_text_tokenizer("bert", save_tiny_bert_preset(tempfile.mkdtemp(), vocab))
    >>> examples = TextExamples(np.array(["good", "bad", "good bad"], object),
    ...                         np.array([1, 0, 1], np.int32), ["neg", "pos"])
    >>> dataset = make_text_dataset(examples, make_preprocessor(tokenizer, 8), batch_size=2)
    >>> features, labels = next(iter(dataset))
    >>> features["token_ids"].numpy().tolist(), labels.numpy().tolist()
    ([[2, 5, 3, 0, 0, 0, 0, 0], [2, 6, 3, 0, 0, 0, 0, 0]], [1, 0])
    """
    texts = np.asarray(examples.texts, dtype=object)
    label_dtype = np.int32 if task == "classification" else np.float32
    labels = np.asarray(examples.labels, label_dtype)
    if task != "classification" and labels.ndim == 1:  # Multi-label: already [n, classes].
        labels = labels[:, None]
    if texts.ndim == 2:
        features = tuple(texts[:, i].astype(str).tolist() for i in range(texts.shape[1]))
    else:
        features = texts.astype(str).tolist()
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    ds = ds.batch(tokenize_batch_size)
    ds = ds.map(lambda x, y: (_to_int32(preprocessor(x=x)), y), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic or not training)
    ds = ds.unbatch().apply(tf.data.experimental.assert_cardinality(len(labels)))
    return _finish(ds, len(labels), batch_size, training, cache, shuffle_buffer, seed)


def epoch_shuffled_batches(examples_ds, batch_size, first_epoch, last_epoch, seed=0,
                           shuffle_buffer=2048, drop_remainder=False, length_buckets=(),
                           sort_window=32):
    """Returns one stream of the training batches of epochs `first_epoch..last_epoch-1`.

    Epoch `e` is `examples_ds` shuffled with seed `seed + e`, then batched,
    so the order of epoch `e` is the same whether training started at epoch
    0 or resumed at `e` in a new process (`reshuffle_each_iteration` would
    tie it to how often this process iterated the dataset). Pass
    `steps_per_epoch=ceil(n / batch_size)` to `fit`: the stream has exactly
    that many batches per epoch.

    Args:
        examples_ds: unbatched `tf.data.Dataset` of examples (cache it first).
        batch_size: int. Global batch size.
        first_epoch: int. 0-based first epoch of the stream.
        last_epoch: int. One past the last epoch.
        seed: int. Base shuffle seed.
        shuffle_buffer: int. Shuffle buffer size.
        drop_remainder: bool. Drop each epoch's last, partial batch (what a
            multi-replica strategy needs: a short batch can leave a replica
            with no example); then `steps_per_epoch=n // batch_size`.
        length_buckets: sequence of int. Text examples only (a features dict
            with a `padding_mask`; otherwise ignored): each batch is cut to
            the smallest of these lengths (capped at the padded length, which
            is always one) that holds its longest example, and each epoch's
            shuffled examples are sorted by length within windows of
            `sort_window` batches (`length_sorted_batches`). Empty: off.
        sort_window: int. Batches per length-sorting window (1: no sorting).

    Example:

    >>> ds = tf.data.Dataset.range(4)
    >>> full = [b.numpy().tolist() for b in epoch_shuffled_batches(ds, 2, 0, 3, seed=1)]
    >>> resumed = [b.numpy().tolist() for b in epoch_shuffled_batches(ds, 2, 2, 3, seed=1)]
    >>> full[4:] == resumed
    True
    """

    def one_epoch(epoch):  # A Python int seed: tf.data rejects some tensor seeds.
        shuffled = examples_ds.shuffle(shuffle_buffer, seed=seed + epoch,
                                       reshuffle_each_iteration=False)
        if bucketed:
            return length_sorted_batches(shuffled, batch_size, length_buckets, sort_window,
                                         seed=seed + epoch, drop_remainder=drop_remainder)
        return shuffled.batch(batch_size, drop_remainder=drop_remainder)

    bucketed = bool(length_buckets) and _padding_mask_spec(examples_ds.element_spec) is not None

    stream = one_epoch(first_epoch)
    for epoch in range(first_epoch + 1, last_epoch):
        stream = stream.concatenate(one_epoch(epoch))
    options = tf.data.Options()  # As in _finish: in-memory examples shard by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return stream.prefetch(tf.data.AUTOTUNE).with_options(options)


def _padding_mask_spec(element_spec):
    """The `padding_mask` spec of a `(features dict, ...)` text example, else None."""
    features = element_spec[0] if isinstance(element_spec, tuple) else element_spec
    if isinstance(features, dict) and "padding_mask" in features:
        return features["padding_mask"]
    return None


def _lengths(padding_mask):
    """Real length of each row: one past its last unmasked position (right padding)."""
    mask = tf.cast(padding_mask, tf.bool)
    positions = tf.range(1, tf.shape(mask)[-1] + 1)
    return tf.reduce_max(tf.where(mask, positions, tf.zeros_like(positions)), axis=-1)


def bucket_boundaries(length_buckets, sequence_length):
    """The padded lengths text batches are cut to: `length_buckets` below `sequence_length`,
    then `sequence_length`.

    Args:
        length_buckets: sequence of int (`data.length_buckets`).
        sequence_length: int. The length examples are padded to.

    Example:

    >>> bucket_boundaries((16, 32, 64, 128), 64)
    [16, 32, 64]
    >>> bucket_boundaries((), 64)
    [64]
    """
    return sorted({int(b) for b in length_buckets if 0 < int(b) < sequence_length}
                  | {int(sequence_length)})


def length_sorted_batches(examples_ds, batch_size, length_buckets, sort_window=32, seed=0,
                          drop_remainder=False):
    """Batches text examples of similar length, each cut to one of a few padded lengths.

    The examples (in the order given: shuffle them first) are taken in
    windows of `sort_window * batch_size`, sorted by real length within a
    window (stable, so ties keep their order) and batched; the batches are
    shuffled (seeded) among nearby windows, and every batch is cut to the
    smallest bucket boundary (`bucket_boundaries`) that holds its longest
    example. Only padding is cut, so with the padding mask a model's
    predictions do not change; the model sees a handful of shapes (what XLA
    compiles), and short texts cost short-sequence compute. Every window but
    the last is a whole number of batches, so the batch count is that of
    `examples_ds.batch(batch_size, drop_remainder)`: `steps_per_epoch` holds.

    Args:
        examples_ds: unbatched `tf.data.Dataset` of `(features, labels)`
            whose `features` dict has a `padding_mask` and, like every other
            `[sequence_length]` feature (`token_ids`, `segment_ids`...), is
            padded on the right.
        batch_size: int. Global batch size.
        length_buckets: sequence of int. Padded lengths (`data.length_buckets`).
        sort_window: int. Batches per sorting window (1: no sorting).
        seed: int. Seed of the batch shuffle.
        drop_remainder: bool. Drop the last, partial batch.

    Example:

    >>> mask = [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]]
    >>> ds = tf.data.Dataset.from_tensor_slices(({"padding_mask": mask}, [0, 1, 2]))
    >>> batches = length_sorted_batches(ds, 2, length_buckets=(2, 4))
    >>> sorted((x["padding_mask"].shape[1], y.numpy().tolist()) for x, y in batches)
    [(4, [1, 2]), (8, [0])]
    """
    sequence_length = _padding_mask_spec(examples_ds.element_spec).shape[-1]
    boundaries = tf.constant(bucket_boundaries(length_buckets, sequence_length), tf.int32)

    def sort_by_length(*window):
        order = tf.argsort(_lengths(window[0]["padding_mask"]), stable=True)
        return tf.nest.map_structure(lambda t: tf.gather(t, order), window)

    def cut(*batch):
        longest = tf.reduce_max(_lengths(batch[0]["padding_mask"]))
        bound = tf.reduce_min(tf.where(boundaries >= longest, boundaries, sequence_length))
        features = {name: value[:, :bound] if value.shape.rank == 2
                    and value.shape[-1] == sequence_length else value
                    for name, value in batch[0].items()}
        return (features,) + batch[1:]

    window = max(1, int(sort_window))
    batches = (examples_ds.batch(window * batch_size).map(sort_by_length).unbatch()
               .batch(batch_size, drop_remainder=drop_remainder))
    if window > 1:
        batches = batches.shuffle(window, seed=seed, reshuffle_each_iteration=False)
    return batches.map(cut)


def steps_per_epoch(num_examples, batch_size, num_replicas=1):
    """Training steps in one epoch: every batch, or only the full ones with several replicas.

    With more than one replica the last, partial batch is dropped
    (`epoch_shuffled_batches(drop_remainder=True)`): tf.distribute splits a
    short batch into per-replica pieces in order, so it can leave a replica
    with an empty batch, which BatchNormalization and the loss reject.

    Args:
        num_examples: int. Training examples.
        batch_size: int. Global batch size.
        num_replicas: int. `strategy.num_replicas_in_sync`.

    Raises:
        DataError: several replicas and fewer examples than one batch.

    Example:

    >>> steps_per_epoch(27, 8), steps_per_epoch(27, 8, num_replicas=2)
    (4, 3)
    """
    from sft_keras.errors import DataError

    if num_replicas <= 1:
        return max(1, -(-num_examples // batch_size))
    if num_examples < batch_size:
        raise DataError(
            f"{num_examples} training examples do not fill one batch of train.batch_size="
            f"{batch_size} on {num_replicas} replicas (each step needs a full batch, so that "
            f"every replica gets examples). Lower train.batch_size or use more data."
        )
    return num_examples // batch_size


def pad_to_full_batches(dataset, num_examples, batch_size):
    """Pads a batched `(inputs, labels)` dataset to full batches of `(inputs, labels, weights)`.

    Every real example gets sample weight 1; the last batch is filled up to
    `batch_size` with copies of the first example with weight 0. Under a
    multi-replica strategy every replica then gets a non-empty batch, and
    `model.evaluate` counts every real example exactly once and no padding,
    given metrics compiled as `weighted_metrics` (Keras ignores sample
    weights in plain `metrics`) and `sft_keras.patches.weighted_test_step`
    for the loss. `model.predict` returns
    `ceil(n / batch_size) * batch_size` rows: keep the first `num_examples`.

    Args:
        dataset: a batched `tf.data.Dataset` of `(inputs, labels)`, unshuffled.
        num_examples: int. Examples in `dataset`.
        batch_size: int. Global batch size.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(([1., 2., 3.], [0, 1, 0])).batch(2)
    >>> [w.numpy().tolist() for _, _, w in pad_to_full_batches(ds, 3, 2)]
    [[1.0, 1.0], [1.0, 0.0]]
    """
    missing = -num_examples % batch_size
    examples = dataset.unbatch().map(lambda x, y: (x, y, tf.constant(1.0, tf.float32)))
    if missing:
        padding = examples.take(1).map(lambda x, y, w: (x, y, tf.zeros_like(w))).repeat(missing)
        examples = examples.concatenate(padding)
    padded = examples.batch(batch_size).apply(
        tf.data.experimental.assert_cardinality((num_examples + missing) // batch_size))
    padded = padded.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return padded.with_options(options)
