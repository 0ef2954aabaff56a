"""Image examples: from a class-per-folder tree, a CSV manifest, or sklearn digits.

Reading and checking happen here, before training: every problem (an empty
class folder, a missing column, an unknown label, a corrupt file) is reported
with the file or line and the value at fault. `pipeline.py` turns the checked
examples into tf.data datasets.
"""

import csv
import dataclasses
import io
import math
import os

import numpy as np
import tensorflow as tf
from absl import logging

from sft_keras.data.split import limit_examples, split_examples
from sft_keras.data.folders import list_class_files
from sft_keras.data.labels import check_class_count, encode_multilabel
from sft_keras.errors import ConfigError, DataError

IMAGE_SOURCES = ("image_folder", "csv", "digits")  # `data.source` values.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


@dataclasses.dataclass
class ImageExamples:
    """A list of labelled images, held as file paths or as a pixel array.

    Args:
        images: list of str (file paths) or a uint8 array `[n, h, w, 3]`.
        labels: array `[n]`: class indices (int) or targets (float, regression).
        class_names: list of str, in class-index order (empty for regression).
    """

    images: object
    labels: np.ndarray
    class_names: list

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        """Returns the examples at `indices`, in that order."""
        if isinstance(self.images, np.ndarray):
            images = self.images[indices]
        else:
            images = [self.images[i] for i in indices]
        return ImageExamples(images, self.labels[indices], self.class_names)


@dataclasses.dataclass
class ImageData:
    """Examples and class names for one run, split into train and validation."""

    train: ImageExamples
    validation: ImageExamples
    class_names: list


def decode_image_bytes(image_bytes, image_size):
    """Decodes one encoded image (JPEG/PNG/GIF/BMP) to float32 RGB pixels in [0, 255].

    Used by the training pipeline and by the exported serving signature, so
    both see identical pixels. GIFs give their first frame; grayscale and
    RGBA images are converted to RGB.

    Args:
        image_bytes: scalar `tf.string` tensor holding the encoded file.
        image_size: `(height, width)` to resize to (bilinear).

    Returns:
        float32 tensor `[height, width, 3]`.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = tf.image.resize(image, image_size)
    return tf.ensure_shape(image, (*image_size, 3))


def read_image_folder(path, class_names=None, skip_unknown_files=False):
    """Lists the images of a folder holding one subfolder per class.

    Args:
        path: str. The folder. Subfolder names are the class names, sorted.
        class_names: list of str or None. For a validation folder: the
            training classes; a subfolder outside them is an error.
        skip_unknown_files: bool. Skip (with a warning) files whose extension
            is not one of `IMAGE_EXTENSIONS` instead of raising. Always
            skipped, with a log line: hidden files and folders (`.DS_Store`,
            `._*`, `.ipynb_checkpoints/`), `Thumbs.db` and `desktop.ini`, and
            files outside the class folders (`list_class_files`).

    Returns:
        `ImageExamples` with file paths, sorted within each class.
    """
    class_names, files_by_class = list_class_files(path, class_names, kind="Image")
    images, labels, unknown_files = [], [], []
    for name, class_dir, all_files in files_by_class:
        files = [f for f in all_files if f.lower().endswith(IMAGE_EXTENSIONS)]
        unknown_files.extend(f for f in all_files if not f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(
                f"Class folder {class_dir!r} has no images (extensions "
                f"{', '.join(IMAGE_EXTENSIONS)}); remove it or add images."
            )
        images.extend(files)
        labels.extend([class_names.index(name)] * len(files))
    if unknown_files:
        if not skip_unknown_files:
            raise DataError(
                f"{len(unknown_files)} file(s) in {path!r} are not images "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)}), e.g. {unknown_files[0]!r}. "
                f"Remove them or set --config.data.skip_unknown_files=True."
            )
        logging.warning("Skipping %d non-image files, e.g. %s", len(unknown_files), unknown_files[0])
    return ImageExamples(images, np.asarray(labels, np.int32), list(class_names))


def read_csv_manifest(path, path_column="path", label_column="label", task="classification",
                      class_names=None, label_separator="|"):
    """Reads a CSV manifest with one image path and one label per row.

    Relative paths are resolved against the CSV file's folder.

    Args:
        path: str. The CSV file, with a header row.
        path_column: str. Column holding image paths.
        label_column: str. Column holding labels: class names, or numbers for
            `task="regression"`.
        task: str. `"classification"`, `"binary"`, `"regression"` or
            `"multilabel"` (labels joined by `label_separator`, e.g.
            `"cat|outdoor"`; float32 multi-hot labels `[n, classes]`).
        class_names: list of str or None. For a validation manifest: the
            training classes; any other label is an error naming the line.
        label_separator: str. Separates the labels of a cell (multilabel).

    Returns:
        `ImageExamples` with file paths.
    """
    base = os.path.dirname(os.path.abspath(path))
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column name.
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at offset "
            f"{e.start}). Save the file as UTF-8."
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    for key, column in (("data.path_column", path_column), ("data.label_column", label_column)):
        if column not in columns:
            raise DataError(
                f"CSV file {path!r} has no column {column!r} ({key}). "
                f"Columns found: {columns}."
            )
    rows = [(reader.line_num, row[path_column], row[label_column]) for row in reader]
    if not rows:
        raise DataError(f"CSV file {path!r} has no data rows.")

    images, raw_labels = [], []
    for line, image_path, label in rows:
        if not image_path:
            raise DataError(f"{path}:{line}: empty {path_column!r} value.")
        full = image_path if os.path.isabs(image_path) else os.path.join(base, image_path)
        if not os.path.isfile(full):
            raise DataError(f"{path}:{line}: image file not found. Received: {image_path!r}")
        if label is None or label.strip() == "":
            raise DataError(f"{path}:{line}: empty {label_column!r} value.")
        images.append(full)
        raw_labels.append((line, label.strip()))

    if task == "regression":
        labels = []
        for line, label in raw_labels:
            try:
                labels.append(float(label))
                if not math.isfinite(labels[-1]):
                    raise ValueError(label)  # nan/inf would make the loss nan.
            except ValueError:
                raise DataError(
                    f"{path}:{line}: task='regression' needs a finite numeric label. "
                    f"Received: {label_column}={label!r}"
                ) from None
        return ImageExamples(images, np.asarray(labels, np.float32), [])
    if task == "multilabel":
        labels, class_names = encode_multilabel(
            raw_labels, class_names, lambda line: f"{path}:{line}", label_column, label_separator
        )
        return ImageExamples(images, labels, class_names)

    if class_names is None:
        class_names = sorted({label for _, label in raw_labels})
    index = {name: i for i, name in enumerate(class_names)}
    labels = []
    for line, label in raw_labels:
        if label not in index:
            raise DataError(
                f"{path}:{line}: label {label!r} was never seen in training. "
                f"Known labels: {list(class_names)}."
            )
        labels.append(index[label])
    return ImageExamples(images, np.asarray(labels, np.int32), list(class_names))


def load_digits():
    """Returns scikit-learn's 1,797 handwritten digits as uint8 RGB 8x8 images.

    A real, offline dataset (it ships with scikit-learn): ten classes `"0"`
    to `"9"`; pixels scaled from [0, 16] to [0, 255].
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(images[..., None], 3, axis=-1)
    return ImageExamples(images, digits.target.astype(np.int32), [str(i) for i in range(10)])


def check_images_decode(paths):
    """Decodes every file once, in parallel; raises `DataError` naming those that fail.

    Args:
        paths: list of str.
    """
    if not paths:
        return
    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(paths)), list(paths)))
    dataset = dataset.map(
        lambda i, p: (i, tf.shape(tf.io.decode_image(tf.io.read_file(p), channels=3,
                                                       expand_animations=False))),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).ignore_errors()
    decoded = {int(i) for i, _ in dataset.as_numpy_iterator()}
    bad = [p for i, p in enumerate(paths) if i not in decoded]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise DataError(
            f"Cannot decode image file {bad[0]!r}{more}: not a valid JPEG/PNG/GIF/BMP "
            f"(corrupt, truncated, or another format). Fix or remove it."
        )


def _read(source_path, config, task, class_names=None):
    if config.source == "image_folder":
        examples = read_image_folder(source_path, class_names, config.skip_unknown_files)
    else:
        examples = read_csv_manifest(
            source_path, config.path_column, config.label_column, task, class_names,
            config.label_separator,
        )
    if class_names is None:  # The training data: its classes are the run's (checked first).
        check_class_count(examples.class_names, task, f"data.path={source_path!r}")
    if config.validate_images:
        check_images_decode(examples.images)
    return examples


def load_image_data(data_config, task, seed):
    """Reads, checks and splits the image data the `data` config describes.

    `data.source` `'digits'` is scikit-learn's digits (`load_digits`);
    otherwise `data.path` is an image folder (one subfolder per class) or a
    CSV manifest. Validation examples come from `data.validation_path` when
    set, else are `data.validation_split` of the examples (stratified for
    classification, seeded). Then, when `data.max_train_examples` > 0, only
    that many training examples are kept (a stratified, seeded subset;
    validation is not reduced).

    Args:
        data_config: the `data` part of a validated config.
        task: str. The `task` config value.
        seed: int. Seed of the train/validation split and of the subset.

    Returns:
        `ImageData`.

    Raises:
        DataError: no examples; fewer than 2 classes (classification,
            multilabel) or not exactly 2 (binary), as `check_class_count`
            says for every source; and as the readers do.
        ConfigError: `data.source` is not one of `IMAGE_SOURCES`.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.data.source = "digits"
    >>> data = load_image_data(config.data, "classification", seed=0)
    >>> len(data.train), len(data.validation), data.train.images.shape[1:]
    (1438, 359, (8, 8, 3))
    >>> data.class_names[:3]
    ['0', '1', '2']
    """
    if data_config.source not in IMAGE_SOURCES:
        raise ConfigError(
            "data.source must be one of " + ", ".join(repr(s) for s in IMAGE_SOURCES)
            + f" for image data. Received: data.source={data_config.source!r}"
        )
    if data_config.source == "digits":
        examples = load_digits()
        if task == "regression":  # Regress the digit's value.
            examples = ImageExamples(examples.images, examples.labels.astype(np.float32), [])
        check_class_count(examples.class_names, task, "data.source='digits'")
    else:
        examples = _read(data_config.path, data_config, task)
    if len(examples) == 0:
        raise DataError(f"No examples found in data.path={data_config.path!r}.")
    if data_config.validation_path:
        train = examples
        validation = _read(data_config.validation_path, data_config, task, examples.class_names or None)
    else:
        train, validation = split_examples(
            examples, data_config.validation_split, seed,
            stratify=task not in ("regression", "multilabel"),
        )
    train = limit_examples(train, data_config.max_train_examples, seed)
    return ImageData(train=train, validation=validation, class_names=examples.class_names)
