"""One class-count rule for every data source: at least 2 classes, exactly 2 for binary."""

import csv
import os

import pytest

from sft_keras.config import get_default_config, validate_config
from sft_keras.data import load_image_data, load_text_data
from sft_keras.data.labels import check_class_count
from sft_keras.errors import DataError
from sft_keras.modalities.image import ImageModality
from sft_keras.training import train_and_evaluate

from helpers import write_image_folder


def _image_config(**data):
    return validate_config({
        "data": {"source": "image_folder", "validation_split": 0.25, "image_size": (32, 32),
                 **data},
        "model": {"backbone": "small_cnn"},
        "train": {"epochs": 1, "batch_size": 4, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })


def _text_config(path):
    config = get_default_config()  # load_text_data reads only `data` and the task.
    config.data.source, config.data.path = "text_folder", path
    return config


def _write(path, content):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    return str(path)


# --- At least 2 classes, for every source ------------------------------------------


def test_one_class_image_folder_fails_before_any_model_is_built(tmp_path, monkeypatch):
    images = write_image_folder(str(tmp_path / "images"), class_names=("cats",), per_class=4)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(ImageModality, "build_model", no_model)
    workdir = tmp_path / "workdir"
    with pytest.raises(DataError) as excinfo:
        train_and_evaluate(_image_config(path=images), str(workdir))
    message = str(excinfo.value)
    assert "task='classification' needs at least 2 classes" in message
    assert f"data.path={images!r} has 1 class: ['cats']" in message
    assert not os.path.exists(workdir / "checkpoints")


def test_one_class_csv_manifest_is_rejected_naming_the_class(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), class_names=("cats",), per_class=4)
    manifest = tmp_path / "train.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for name in sorted(os.listdir(os.path.join(images, "cats"))):
            writer.writerow([os.path.join("images", "cats", name), "cat"])
    config = _image_config(source="csv", path=str(manifest))
    with pytest.raises(DataError, match=r"needs at least 2 classes, but data\.path=.*train\.csv' "
                                        r"has 1 class: \['cat'\]"):
        load_image_data(config.data, config.task, config.seed)

    config.task = "multilabel"
    with pytest.raises(DataError, match=r"task='multilabel' needs at least 2 labels, .* has 1 "
                                        r"label: \['cat'\]"):
        load_image_data(config.data, config.task, config.seed)


def test_binary_needs_exactly_two_classes_for_images_and_text_alike(tmp_path):
    images = write_image_folder(str(tmp_path / "images"), per_class=2)  # 3 classes.
    config = _image_config(path=images)
    config.task = "binary"
    with pytest.raises(DataError, match=r"task='binary' needs exactly 2 classes, but "
                                        r"data\.path=.* has 3 classes: \['diagonal', "):
        load_image_data(config.data, config.task, config.seed)

    root = tmp_path / "texts"
    for name in ("a", "b", "c"):
        _write(root / name / "1.txt", f"text of {name}")
        _write(root / name / "2.txt", f"more text of {name}")
    text_config = _text_config(str(root))
    text_config.task = "binary"
    with pytest.raises(DataError, match=r"task='binary' needs exactly 2 classes, but "
                                        r"data\.path=.* has 3 classes: \['a', 'b', 'c'\]"):
        load_text_data(text_config.data, text_config.task, text_config.seed)


def test_one_class_text_folder_gets_the_same_message_as_images(tmp_path):
    root = tmp_path / "texts"
    _write(root / "spam" / "1.txt", "buy now")
    _write(root / "spam" / "2.txt", "cheap pills")
    config = _text_config(str(root))
    with pytest.raises(DataError) as excinfo:
        load_text_data(config.data, config.task, config.seed)
    assert str(excinfo.value).startswith(
        f"task='classification' needs at least 2 classes, but data.path={str(root)!r} has "
        f"1 class: ['spam']."
    )


def test_check_class_count_rule():
    check_class_count(["a", "b"], "classification", "here")
    check_class_count(["a", "b"], "binary", "here")
    check_class_count(["a", "b"], "multilabel", "here")
    check_class_count([], "regression", "here")
    with pytest.raises(DataError, match=r"has 0 classes: \[\]"):
        check_class_count([], "classification", "here")
    with pytest.raises(DataError, match=r"Use task='classification'"):
        check_class_count(["a", "b", "c"], "binary", "here")
