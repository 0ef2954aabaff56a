"""tf.data pipelines: decode in parallel, cache, shuffle, batch, prefetch."""

import numpy as np
import tensorflow as tf

from sft_keras.data.images import decode_image_bytes


def make_image_dataset(examples, image_size, batch_size, task="classification", training=False,
                       cache=True, shuffle_buffer=2048, seed=0):
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
    if task != "classification":
        labels = labels[:, None]
    if isinstance(examples.images, np.ndarray):
        ds = tf.data.Dataset.from_tensor_slices((examples.images, labels))
        load = lambda image, label: (tf.image.resize(image, size), label)  # noqa: E731
    else:
        ds = tf.data.Dataset.from_tensor_slices((list(examples.images), labels))
        load = lambda path, label: (decode_image_bytes(tf.io.read_file(path), size), label)  # noqa: E731
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(shuffle_buffer, len(labels)), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
