"""Tests of sft_keras.data: reading, checking, splitting and batching images."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import get_default_config, validate_config
from sft_keras.data import (
    check_images_decode,
    load_digits,
    load_image_data,
    make_image_dataset,
    read_csv_manifest,
    read_image_folder,
    split_examples,
)
from sft_keras.errors import ConfigError, DataError

SIZE = 16  # Pixels per side of the generated images.


def _pixels(seed, size=SIZE):
    return np.random.RandomState(seed).randint(0, 256, (size, size, 3)).astype(np.uint8)


def write_image(path, seed=0, fmt=None):
    """Writes a small random PNG or JPEG (format from the extension unless `fmt`)."""
    fmt = fmt or ("png" if str(path).lower().endswith(".png") else "jpeg")
    image = _pixels(seed)
    encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(encoded.numpy())
    return str(path)


def make_folder(root, counts, fmt="png"):
    """Writes `{class_name: n_images}` as one subfolder per class under `root`."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(os.path.join(root, name, f"{i:02d}.{fmt}"), seed=100 * c + i)
    return str(root)


def write_csv(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


# --- read_image_folder --------------------------------------------------------


def test_read_image_folder_sorts_classes_and_labels_by_index(tmp_path):
    root = make_folder(tmp_path / "imgs", {"zebra": 2, "cat": 3, "dog": 1})
    examples = read_image_folder(root)
    assert examples.class_names == ["cat", "dog", "zebra"]
    assert examples.labels.dtype == np.int32
    np.testing.assert_array_equal(examples.labels, [0, 0, 0, 1, 2, 2])
    assert len(examples) == 6
    # Each path is in the folder of its class, and files are sorted within a class.
    for path, label in zip(examples.images, examples.labels):
        assert os.path.basename(os.path.dirname(path)) == examples.class_names[label]
    assert [os.path.basename(p) for p in examples.images[:3]] == ["00.png", "01.png", "02.png"]


def test_read_image_folder_skips_hidden_files_and_folders(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 1, "b": 1})
    write_csv(tmp_path / "imgs" / "a" / ".DS_Store", "junk")
    write_image(tmp_path / "imgs" / "b" / "._hidden.png")
    os.makedirs(tmp_path / "imgs" / ".git")
    write_image(tmp_path / "imgs" / ".git" / "x.png")
    examples = read_image_folder(root)
    assert examples.class_names == ["a", "b"]
    assert len(examples) == 2
    assert not any(os.path.basename(p).startswith(".") for p in examples.images)


def test_read_image_folder_skips_hidden_folders_inside_class_folders(tmp_path):
    # e.g. Jupyter's .ipynb_checkpoints or a thumbnail cache inside a class folder.
    root = make_folder(tmp_path / "imgs", {"a": 1, "b": 1})
    write_image(tmp_path / "imgs" / "a" / ".ipynb_checkpoints" / "00-checkpoint.png")
    write_csv(tmp_path / "imgs" / "b" / ".cache" / "index.txt", "not an image")
    write_image(tmp_path / "imgs" / "b" / "sub" / "nested.png")  # Visible subfolders count.
    examples = read_image_folder(root)
    assert [os.path.relpath(p, root) for p in examples.images] == [
        os.path.join("a", "00.png"),
        os.path.join("b", "00.png"),
        os.path.join("b", "sub", "nested.png"),
    ]
    np.testing.assert_array_equal(examples.labels, [0, 1, 1])


def test_read_image_folder_empty_class_folder_raises_naming_it(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 2})
    os.makedirs(tmp_path / "imgs" / "empty_class")
    with pytest.raises(DataError, match=re.escape(os.path.join(root, "empty_class"))):
        read_image_folder(root)


def test_read_image_folder_class_with_only_hidden_files_is_empty(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 2})
    write_image(tmp_path / "imgs" / "b" / ".only_hidden.png")
    with pytest.raises(DataError, match=r"has no images"):
        read_image_folder(root)


def test_read_image_folder_non_image_file_raises_or_is_skipped(tmp_path):
    root = make_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    notes = write_csv(tmp_path / "imgs" / "a" / "notes.txt", "not an image")
    with pytest.raises(DataError, match=re.escape(notes)) as excinfo:
        read_image_folder(root)
    assert "skip_unknown_files" in str(excinfo.value)

    examples = read_image_folder(root, skip_unknown_files=True)
    assert len(examples) == 4
    assert notes not in examples.images


def test_read_image_folder_accepts_upper_case_extensions(tmp_path):
    root = str(tmp_path / "imgs")
    write_image(os.path.join(root, "a", "ONE.PNG"), fmt="png")
    write_image(os.path.join(root, "b", "two.JPEG"), fmt="jpeg")
    examples = read_image_folder(root)
    assert len(examples) == 2


def test_read_image_folder_without_class_subfolders_raises(tmp_path):
    root = str(tmp_path / "flat")
    write_image(os.path.join(root, "001.png"))
    with pytest.raises(DataError, match=r"no class subfolders") as excinfo:
        read_image_folder(root)
    assert root in str(excinfo.value)


def test_read_image_folder_missing_folder_raises(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError, match=re.escape(missing)):
        read_image_folder(missing)


def test_read_image_folder_validation_class_not_in_training_raises(tmp_path):
    train = read_image_folder(make_folder(tmp_path / "train", {"cat": 1, "dog": 1}))
    val_root = make_folder(tmp_path / "val", {"cat": 1, "horse": 1})
    with pytest.raises(DataError, match=r"'horse'") as excinfo:
        read_image_folder(val_root, class_names=train.class_names)
    assert val_root in str(excinfo.value)


def test_read_image_folder_validation_uses_training_class_indices(tmp_path):
    train = read_image_folder(make_folder(tmp_path / "train", {"a": 1, "b": 1, "c": 1}))
    # Validation lacks class 'a': labels must still index the training classes.
    val = read_image_folder(make_folder(tmp_path / "val", {"c": 2, "b": 1}), train.class_names)
    assert val.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(val.labels, [1, 2, 2])


# --- check_images_decode ------------------------------------------------------


def test_check_images_decode_accepts_good_files(tmp_path):
    paths = [
        write_image(tmp_path / "a.png"),
        write_image(tmp_path / "b.jpg"),
        write_image(tmp_path / "c.jpeg"),
    ]
    check_images_decode(paths)  # Does not raise.
    check_images_decode([])


def test_check_images_decode_not_an_image_raises_naming_file(tmp_path):
    good = write_image(tmp_path / "good.png")
    bad = str(tmp_path / "bad.jpg")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(DataError, match=re.escape(bad)):
        check_images_decode([good, bad])


def test_check_images_decode_truncated_jpeg_raises_naming_file(tmp_path):
    good = write_image(tmp_path / "good.jpg")
    data = open(good, "rb").read()
    truncated = str(tmp_path / "truncated.jpg")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(truncated)) as excinfo:
        check_images_decode([good, truncated])
    assert good not in str(excinfo.value)


def test_check_images_decode_counts_further_bad_files(tmp_path):
    paths = []
    for name in ("x.png", "y.png", "z.png"):
        path = str(tmp_path / name)
        with open(path, "wb") as f:
            f.write(b"\x89PNG garbage")
        paths.append(path)
    with pytest.raises(DataError, match=re.escape(f"{paths[0]!r} and 2 more")):
        check_images_decode(paths)


# --- read_csv_manifest --------------------------------------------------------


def test_read_csv_manifest_resolves_relative_paths_against_csv_folder(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    write_image(data_dir / "images" / "a.png", seed=1)
    absolute = write_image(tmp_path / "elsewhere" / "b.png", seed=2)
    csv_path = write_csv(
        data_dir / "train.csv",
        f"path,label\nimages/a.png,dog\n{absolute},cat\nimages/a.png,dog\n",
    )
    monkeypatch.chdir(tmp_path)  # A cwd other than the CSV folder.
    examples = read_csv_manifest(csv_path)
    a_png = str(data_dir / "images" / "a.png")
    assert examples.images == [a_png, absolute, a_png]
    assert examples.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(examples.labels, [1, 0, 1])
    assert examples.labels.dtype == np.int32


def test_read_csv_manifest_custom_columns(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", "file,kind,extra\na.png,x,1\n")
    examples = read_csv_manifest(csv_path, path_column="file", label_column="kind")
    assert examples.class_names == ["x"]


def test_read_csv_manifest_missing_label_column_lists_columns(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", "path,category\na.png,dog\n")
    with pytest.raises(DataError) as excinfo:
        read_csv_manifest(csv_path)
    message = str(excinfo.value)
    assert "'label'" in message
    assert "data.label_column" in message
    assert "['path', 'category']" in message
    assert csv_path in message


def test_read_csv_manifest_header_only_raises(tmp_path):
    csv_path = write_csv(tmp_path / "m.csv", "path,label\n")
    with pytest.raises(DataError, match=re.escape(csv_path) + r".*no data rows"):
        read_csv_manifest(csv_path)


def test_read_csv_manifest_missing_image_names_file_and_line(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", "path,label\na.png,dog\nmissing.png,cat\n")
    with pytest.raises(DataError, match=re.escape(f"{csv_path}:3:") + r".*'missing\.png'"):
        read_csv_manifest(csv_path)


def test_read_csv_manifest_unknown_label_names_line_and_label(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "val.csv", "path,label\na.png,dog\na.png,cat\na.png,horse\n")
    with pytest.raises(DataError, match=re.escape(f"{csv_path}:4:") + r".*'horse'"):
        read_csv_manifest(csv_path, class_names=["cat", "dog"])


def test_read_csv_manifest_with_class_names_keeps_training_indices(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "val.csv", "path,label\na.png,dog\na.png, cat \n")
    examples = read_csv_manifest(csv_path, class_names=["bird", "cat", "dog"])
    assert examples.class_names == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(examples.labels, [2, 1])  # Labels are stripped.


def test_read_csv_manifest_regression_non_numeric_label(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", "path,label\na.png,1.5\na.png,tall\n")
    with pytest.raises(DataError, match=re.escape(f"{csv_path}:3:") + r".*'tall'"):
        read_csv_manifest(csv_path, task="regression")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_read_csv_manifest_regression_rejects_non_finite_label(tmp_path, value):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", f"path,label\na.png,1.5\na.png,{value}\n")
    pattern = re.escape(f"{csv_path}:3:") + r".*" + re.escape(repr(value))
    with pytest.raises(DataError, match=pattern):
        read_csv_manifest(csv_path, task="regression")


def test_read_csv_manifest_ignores_utf8_byte_order_mark(tmp_path):
    # Excel's "CSV UTF-8" starts the file with a BOM; the first column is still 'path'.
    write_image(tmp_path / "a.png")
    csv_path = str(tmp_path / "excel.csv")
    with open(csv_path, "wb") as f:
        f.write("path,label\na.png,chat\u00e9\n".encode("utf-8-sig"))
    examples = read_csv_manifest(csv_path)
    assert examples.class_names == ["chat\u00e9"]


def test_read_csv_manifest_regression_returns_float_labels(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", "path,label\na.png,1.5\na.png,-2\na.png,3e1\n")
    examples = read_csv_manifest(csv_path, task="regression")
    assert examples.labels.dtype == np.float32
    np.testing.assert_allclose(examples.labels, [1.5, -2.0, 30.0])
    assert examples.class_names == []


def test_read_csv_manifest_empty_label_names_line(tmp_path):
    write_image(tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "m.csv", "path,label\na.png,dog\na.png,\n")
    with pytest.raises(DataError, match=re.escape(f"{csv_path}:3:") + r".*empty 'label'"):
        read_csv_manifest(csv_path)


# --- split_examples -----------------------------------------------------------


def _examples(counts):
    from sft_keras.data import ImageExamples

    labels = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(counts)])
    images = [f"img_{i}.png" for i in range(len(labels))]
    return ImageExamples(images, labels, [str(c) for c in range(len(counts))])


def test_split_examples_is_deterministic_per_seed():
    examples = _examples([20, 20, 20])
    train1, val1 = split_examples(examples, 0.25, seed=1)
    train2, val2 = split_examples(examples, 0.25, seed=1)
    assert train1.images == train2.images and val1.images == val2.images
    _, val3 = split_examples(examples, 0.25, seed=2)
    assert sorted(val3.images) != sorted(val1.images)


def test_split_examples_is_stratified_disjoint_and_complete():
    examples = _examples([40, 8, 2])
    train, val = split_examples(examples, 0.2, seed=0)
    assert set(train.images).isdisjoint(val.images)
    assert sorted(train.images + val.images) == sorted(examples.images)
    assert len(train) + len(val) == len(examples)
    # Each class is in validation, in proportion (at least one per class).
    np.testing.assert_array_equal(np.bincount(val.labels, minlength=3), [8, 2, 1])
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=3), [32, 6, 1])
    # Labels still belong to their images.
    for image, label in zip(train.images + val.images, np.concatenate([train.labels, val.labels])):
        assert examples.labels[int(image[4:-4])] == label
    assert val.class_names == examples.class_names


def test_split_examples_too_few_examples_raises():
    with pytest.raises(DataError, match=r"validation_split"):
        split_examples(_examples([1]), 0.2, seed=0)


# --- load_digits --------------------------------------------------------------


def test_load_digits():
    digits = load_digits()
    assert len(digits) == 1797
    assert isinstance(digits.images, np.ndarray)
    assert digits.images.shape == (1797, 8, 8, 3)
    assert digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and digits.images.min() == 0
    assert digits.class_names == [str(i) for i in range(10)]
    assert sorted(np.unique(digits.labels).tolist()) == list(range(10))
    assert digits.labels.dtype == np.int32


# --- make_image_dataset -------------------------------------------------------


def test_make_image_dataset_classification_batch(tmp_path):
    examples = read_image_folder(make_folder(tmp_path / "imgs", {"a": 3, "b": 3}, fmt="jpg"))
    ds = make_image_dataset(examples, (32, 32), batch_size=4)
    batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [4, 2]
    images, labels = batches[0]
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (4,) and labels.dtype == tf.int32
    all_images = np.concatenate([b[0].numpy() for b in batches])
    assert all_images.min() >= 0.0 and all_images.max() <= 255.0
    assert all_images.max() > 1.0  # Not rescaled to [0, 1]; the model preprocesses.
    # Not shuffled when training=False: labels in reading order.
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), examples.labels)


def test_make_image_dataset_binary_labels_are_float_column(tmp_path):
    examples = read_image_folder(make_folder(tmp_path / "imgs", {"neg": 2, "pos": 3}))
    images, labels = next(iter(make_image_dataset(examples, (32, 32), 5, task="binary")))
    assert images.shape == (5, 32, 32, 3)
    assert labels.shape == (5, 1) and labels.dtype == tf.float32
    np.testing.assert_array_equal(labels.numpy()[:, 0], [0, 0, 1, 1, 1])


def test_make_image_dataset_from_pixel_array():
    digits = load_digits().subset(np.arange(10))
    images, labels = next(iter(make_image_dataset(digits, (32, 32), 10, cache=False)))
    assert images.shape == (10, 32, 32, 3) and images.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0
    np.testing.assert_array_equal(labels.numpy(), digits.labels)


def test_make_image_dataset_regression_labels(tmp_path):
    from sft_keras.data import ImageExamples

    path = write_image(tmp_path / "a.png")
    examples = ImageExamples([path, path], np.asarray([0.5, 2.0], np.float32), [])
    _, labels = next(iter(make_image_dataset(examples, (32, 32), 2, task="regression")))
    assert labels.shape == (2, 1) and labels.dtype == tf.float32
    np.testing.assert_allclose(labels.numpy()[:, 0], [0.5, 2.0])


def _first_epoch_labels(examples, seed):
    ds = make_image_dataset(examples, (32, 32), batch_size=8, training=True, seed=seed,
                            shuffle_buffer=64)
    return np.concatenate([labels.numpy() for _, labels in ds])


def test_make_image_dataset_training_order_is_seeded():
    digits = load_digits().subset(np.arange(48))
    first = _first_epoch_labels(digits, seed=3)
    again = _first_epoch_labels(digits, seed=3)
    np.testing.assert_array_equal(first, again)
    assert sorted(first.tolist()) == sorted(digits.labels.tolist())  # Every example once.
    assert not np.array_equal(first, digits.labels)  # Actually shuffled.
    assert not np.array_equal(first, _first_epoch_labels(digits, seed=4))


# --- load_image_data ----------------------------------------------------------


def test_load_image_data_binary_with_three_classes_raises(tmp_path):
    config = get_default_config()
    config.task = "binary"
    config.data.source = "image_folder"
    config.data.path = make_folder(tmp_path / "imgs", {"a": 2, "b": 2, "c": 2})
    with pytest.raises(DataError, match=r"task='binary' needs exactly 2 classes") as excinfo:
        load_image_data(config.data, config.task, config.seed)
    assert "['a', 'b', 'c']" in str(excinfo.value)


def test_load_image_data_image_folder_splits(tmp_path):
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = make_folder(tmp_path / "imgs", {"a": 5, "b": 5})
    config.data.validation_split = 0.2
    data = load_image_data(config.data, config.task, config.seed)
    assert data.class_names == ["a", "b"]
    assert len(data.train) == 8 and len(data.validation) == 2
    np.testing.assert_array_equal(np.bincount(data.validation.labels), [1, 1])


def test_load_image_data_max_train_examples_caps_the_training_split(tmp_path):
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = make_folder(tmp_path / "imgs", {"a": 10, "b": 5})
    config.data.validation_split = 0.2
    full = load_image_data(config.data, config.task, config.seed)
    assert len(full.train) == 12 and len(full.validation) == 3

    config.data.max_train_examples = 6
    validate_config(config)  # An image config accepts the key, as a text config does.
    data = load_image_data(config.data, config.task, config.seed)
    assert len(data.train) == 6
    assert np.bincount(data.train.labels).tolist() == [4, 2]  # Stratified: 8:4 -> 4:2.
    assert set(data.train.images) <= set(full.train.images)
    assert data.validation.images == full.validation.images  # Validation is not reduced.
    assert load_image_data(config.data, config.task, config.seed).train.images == data.train.images

    config.data.max_train_examples = -1
    with pytest.raises(ConfigError, match=r"data\.max_train_examples must be an integer >= 0"):
        validate_config(config)


def test_load_image_data_validation_folder(tmp_path):
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = make_folder(tmp_path / "train", {"a": 2, "b": 2})
    config.data.validation_path = make_folder(tmp_path / "val", {"b": 1})
    data = load_image_data(config.data, config.task, config.seed)
    assert len(data.train) == 4
    np.testing.assert_array_equal(data.validation.labels, [1])


def test_load_image_data_reports_corrupt_file_before_training(tmp_path):
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = make_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    bad = str(tmp_path / "imgs" / "b" / "zz_bad.jpg")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(DataError, match=re.escape(bad)):
        load_image_data(config.data, config.task, config.seed)
    config.data.validate_images = False  # The check can be switched off.
    data = load_image_data(config.data, config.task, config.seed)
    assert bad in data.train.images + data.validation.images


def test_load_image_data_csv_regression(tmp_path):
    config = get_default_config()
    config.task = "regression"
    config.data.source = "csv"
    for i in range(5):
        write_image(tmp_path / f"{i}.png", seed=i)
    config.data.path = write_csv(
        tmp_path / "m.csv", "path,label\n" + "".join(f"{i}.png,{i / 2}\n" for i in range(5))
    )
    data = load_image_data(config.data, config.task, config.seed)
    assert data.class_names == []
    assert len(data.train) == 4 and len(data.validation) == 1
    assert data.train.labels.dtype == np.float32


def test_csv_that_is_not_utf8_names_file_and_line(tmp_path):
    from sft_keras.data import read_csv_manifest
    from sft_keras.errors import DataError

    path = tmp_path / "latin1.csv"
    path.write_bytes("path,label\na.png,cat\nb.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv:3: not valid UTF-8"):
        read_csv_manifest(str(path))
