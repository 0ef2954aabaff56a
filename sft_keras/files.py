"""Atomic file writes and versioned directories: nothing half-written is ever left."""

import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory=False):
    """Permissions a plain `open()`/`mkdir()` would give (temp files get 0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file and an atomic rename.

    A reader sees either the old file or the complete new one, never a
    partial write, even if the process is killed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def existing_versions(base_dir):
    """Returns the sorted integer version numbers of `base_dir/<N>/` folders."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(base_dir)
        if name.isdigit() and os.path.isdir(os.path.join(base_dir, name))
    )


def next_version(base_dir):
    """Returns one more than the highest existing version in `base_dir` (1 if none).

    Example:

    >>> import tempfile
    >>> next_version(tempfile.mkdtemp())
    1
    """
    versions = existing_versions(base_dir)
    return versions[-1] + 1 if versions else 1


def publish_folder(tmp, final):
    """Moves the finished folder `tmp` to `final` atomically, replacing an existing `final`.

    `tmp` must be a sibling of `final` (same file system). An existing `final`
    is first moved aside, so a reader sees the old folder or the new one,
    never a mix; it is deleted once the new one is in place.

    Args:
        tmp: str. The complete new folder (e.g. made by `tempfile.mkdtemp`).
        final: str. Where it goes (e.g. `<export_base>/<version>`).

    Example:

    >>> import tempfile
    >>> base = tempfile.mkdtemp()
    >>> tmp = tempfile.mkdtemp(dir=base)
    >>> publish_folder(tmp, os.path.join(base, "1"))
    >>> sorted(os.listdir(base))
    ['1']
    """
    import shutil

    os.chmod(tmp, default_mode(directory=True))  # mkdtemp made it private (0700).
    if not os.path.exists(final):
        os.rename(tmp, final)
        return
    old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(final)}-",
                           dir=os.path.dirname(final))
    os.rename(final, os.path.join(old, "v"))
    os.rename(tmp, final)
    shutil.rmtree(old)
