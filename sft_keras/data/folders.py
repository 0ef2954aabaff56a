"""Class-per-subfolder datasets: the folder walk shared by image and text readers."""

import os

from sft_keras.errors import DataError


def list_class_files(path, class_names=None, kind="Data", example="001.jpg"):
    """Lists the files of a folder holding one subfolder per class.

    Subfolder names are the class names, sorted. Files in nested visible
    folders of a class folder count too; hidden files and folders
    (`.DS_Store`, `.ipynb_checkpoints/`) are skipped.

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
    folder_classes = sorted(
        d for d in os.listdir(path) if not d.startswith(".") and os.path.isdir(os.path.join(path, d))
    )
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
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            walk.append((root, filenames))
        files = [
            os.path.join(root, filename)
            for root, filenames in sorted(walk)
            for filename in sorted(filenames)
            if not filename.startswith(".")
        ]
        files_by_class.append((name, class_dir, files))
    return list(class_names), files_by_class
