"""Class-per-subfolder datasets: the folder walk shared by image and text readers."""

import os

from absl import logging

from sft_keras.errors import DataError

# Files operating systems and file managers drop into folders: never examples.
# Compared lower-case; `._*` (macOS resource forks) and other hidden files are
# skipped by their leading dot.
OS_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})


def is_os_file(name):
    """True for a file name that is never an example: `Thumbs.db`, `desktop.ini`, hidden files.

    Hidden files (a leading dot: `.DS_Store`, `._photo.jpg` resource forks,
    `.gitignore`) count too.

    Example:

    >>> [is_os_file(n) for n in ("Thumbs.db", "DESKTOP.INI", "._001.jpg", "001.jpg")]
    [True, True, True, False]
    """
    return name.startswith(".") or name.lower() in OS_FILES


def list_class_files(path, class_names=None, kind="Data", example="001.jpg"):
    """Lists the files of a folder holding one subfolder per class.

    Subfolder names are the class names, sorted. Files in nested visible
    folders of a class folder count too. Skipped, with one log line naming
    them: hidden files and folders (`.DS_Store`, `._*` resource forks,
    `.ipynb_checkpoints/`), the files operating systems add (`Thumbs.db`,
    `desktop.ini`, see `is_os_file`), and plain files at the top of `path`,
    outside any class folder (a `README.txt`). Every other file of a class
    folder is listed, for the reader to accept or reject.

    Args:
        path: str. The folder.
        class_names: list of str or None. For a validation folder: the
            training classes; a subfolder outside them is an error.
        kind: str. What the folder holds, for error messages ("Image").
        example: str. An example file name, for error messages.

    Returns:
        `(class_names, files_by_class)`: the class names (the given ones, or
        the subfolders), and a list of `(class_name, class_dir, sorted file
        paths)` for each subfolder.

    Raises:
        DataError: the folder is missing, has no class subfolders, or has a
            class outside `class_names`.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{kind} folder not found. Received: {path!r}")
    folder_classes, ignored = [], []  # `ignored`: paths relative to `path`.
    for name in sorted(os.listdir(path)):
        is_dir = os.path.isdir(os.path.join(path, name))
        if is_dir and not name.startswith("."):
            folder_classes.append(name)
        else:
            ignored.append(name + ("/" if is_dir else ""))
    if not folder_classes:
        raise DataError(
            f"{kind} folder {path!r} has no class subfolders; expected one subfolder "
            f"per class (e.g. {os.path.join(path, 'class_a', example)})."
        )
    if class_names is None:
        class_names = folder_classes
    else:
        unknown = sorted(set(folder_classes) - set(class_names))
        if unknown:
            raise DataError(
                f"Folder {path!r} has classes the training data does not: {unknown}. "
                f"Training classes: {list(class_names)}."
            )
    files_by_class = []
    for name in folder_classes:
        class_dir = os.path.join(path, name)
        walk = []
        for root, dirnames, filenames in os.walk(class_dir):
            relative = os.path.relpath(root, path)
            ignored.extend(os.path.join(relative, d) + "/" for d in dirnames if d.startswith("."))
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            ignored.extend(os.path.join(relative, f) for f in filenames if is_os_file(f))
            walk.append((root, [f for f in filenames if not is_os_file(f)]))
        files = [
            os.path.join(root, filename)
            for root, filenames in sorted(walk)
            for filename in sorted(filenames)
        ]
        files_by_class.append((name, class_dir, files))
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5
                                          else "")
        logging.info(
            "%s folder %s: ignored %d file(s) or folder(s) that are not examples (hidden and "
            "operating-system files, files outside the class folders): %s",
            kind, path, len(ignored), shown,
        )
    return list(class_names), files_by_class
