"""Image and text folders ignore operating-system files and files outside the class folders."""

import logging
import os

import pytest

from sft_keras.data import read_image_folder, read_text_folder
from sft_keras.errors import DataError

from helpers import write_image_folder


def _write(path, content):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    return str(path)


# --- Operating-system files ----------------------------------------------------------


@pytest.fixture
def absl_info(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    return caplog


def _ignored_lines(caplog):
    return [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]


def test_image_folder_ignores_os_files_and_files_at_its_root(tmp_path, absl_info):
    root = write_image_folder(str(tmp_path / "images"), class_names=("cats", "dogs"),
                              per_class=2)
    _write(os.path.join(root, "README.txt"), "Pets, two classes.")
    _write(os.path.join(root, "cats", "Thumbs.db"), "\x00thumbnail cache")
    _write(os.path.join(root, "cats", "desktop.ini"), "[.ShellClassInfo]")
    _write(os.path.join(root, "dogs", ".DS_Store"), "\x00\x00\x00\x01Bud1")
    _write(os.path.join(root, "dogs", "._000.png"), "\x00\x05\x16\x07 resource fork")
    examples = read_image_folder(root)
    assert examples.class_names == ["cats", "dogs"]
    assert len(examples) == 4
    assert all(p.endswith(".png") and "._" not in p for p in examples.images)
    lines = _ignored_lines(absl_info)
    assert len(lines) == 1, lines
    assert "ignored 5 file(s)" in lines[0]
    for name in ("README.txt", os.path.join("cats", "Thumbs.db"),
                 os.path.join("cats", "desktop.ini"), os.path.join("dogs", ".DS_Store")):
        assert name in lines[0]

    # Any other non-image file in a class folder is still an error.
    _write(os.path.join(root, "cats", "notes.txt"), "not an image")
    with pytest.raises(DataError, match=r"are not images.*notes\.txt"):
        read_image_folder(root)


def test_text_folder_ignores_os_files_and_files_at_its_root(tmp_path, absl_info):
    root = tmp_path / "reviews"
    _write(root / "neg" / "1.txt", "awful")
    _write(root / "pos" / "1.txt", "great")
    _write(root / "README.md", "Reviews, one folder per class.")
    _write(root / "neg" / "Thumbs.db", "\x00")
    _write(root / "pos" / "DESKTOP.INI", "[.ShellClassInfo]")
    _write(root / "pos" / "._1.txt", "\x00\x05\x16\x07")
    examples = read_text_folder(str(root))
    assert examples.texts.tolist() == ["awful", "great"]
    lines = _ignored_lines(absl_info)
    assert len(lines) == 1 and "ignored 4 file(s)" in lines[0], lines
    assert "README.md" in lines[0] and os.path.join("neg", "Thumbs.db") in lines[0]

    _write(root / "pos" / "notes.md", "not a .txt example")
    with pytest.raises(DataError, match=r"notes\.md.* is not a \.txt file"):
        read_text_folder(str(root))
