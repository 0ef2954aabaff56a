"""Real photos offline: Tux Paint's stamps turned into a class-per-folder image set.

The Debian package `tuxpaint-stamps-default` (GPL-2; used here as data, not
redistributed) installs several hundred photo cut-outs (and some drawings)
under `/usr/share/tuxpaint/stamps/<category>/<subcategory>/<name>.png`, RGBA
with a transparent background. `prepare_tuxpaint_images` flattens each onto
white and writes `<output_dir>/<class>/<name>.png`, one class per
subcategory in `CLASSES`, for `data.source="image_folder"`.

Get the data (root: `apt-get install tuxpaint-stamps-default`; or, without
installing: `apt-get download tuxpaint-stamps-default && dpkg-deb -x
tuxpaint-stamps-default_*.deb /tmp/tuxpaint`, then
`--stamps_dir=/tmp/tuxpaint/usr/share/tuxpaint/stamps`), then run

    python -m sft_keras.data.tuxpaint --output_dir=/tmp/tuxpaint_images
"""

import os
import shutil
import tempfile

from sft_keras.errors import DataError

STAMPS_DIR = "/usr/share/tuxpaint/stamps"
# class name -> subfolder of the stamps folder (2022.06.04: 38, 67, 20, 41, 18, 25 images).
CLASSES = {
    "birds": "animals/birds",
    "mammals": "animals/mammals",
    "insects": "animals/insects",
    "fruit": "food/fruit",
    "vegetables": "food/vegetables",
    "flowers": "plants/flowers",
}


def prepare_tuxpaint_images(output_dir, stamps_dir=STAMPS_DIR, classes=None, overwrite=False):
    """Writes Tux Paint's stamps of `classes` as an image folder, flattened onto white.

    Args:
        output_dir: str. The image folder to create (`<class>/<name>.png`);
            written beside and renamed into place.
        stamps_dir: str. The installed stamps (`/usr/share/tuxpaint/stamps`).
        classes: dict of class name -> subfolder of `stamps_dir`; None is `CLASSES`.
        overwrite: bool. Replace an existing `output_dir`.

    Returns:
        dict: class name -> number of images written.

    Raises:
        DataError: `stamps_dir` or one of the subfolders is missing or has no
            `.png` (the message says how to install the package).
    """
    from PIL import Image

    classes = dict(CLASSES if classes is None else classes)
    if not os.path.isdir(stamps_dir):
        raise DataError(
            f"Tux Paint stamps not found: {stamps_dir!r} is not a folder. Install them with "
            "`apt-get install tuxpaint-stamps-default`, or unpack the package without installing "
            "(`apt-get download tuxpaint-stamps-default && dpkg-deb -x tuxpaint-stamps-default_*.deb "
            "/tmp/tuxpaint`) and pass --stamps_dir=/tmp/tuxpaint/usr/share/tuxpaint/stamps")
    if os.path.exists(output_dir) and not overwrite:
        raise DataError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it. "
                        f"Received: output_dir={output_dir!r}")
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    counts = {}
    try:
        for name, subfolder in classes.items():
            source = os.path.join(stamps_dir, subfolder)
            files = sorted(os.path.join(root, f) for root, _, names in os.walk(source)
                           for f in names if f.lower().endswith(".png"))
            if not files:
                raise DataError(f"No .png stamps in {source!r} (class {name!r}).")
            os.makedirs(os.path.join(scratch, name))
            for path in files:
                with Image.open(path) as image:
                    rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                flat = Image.alpha_composite(white, rgba).convert("RGB")
                flat.save(os.path.join(scratch, name, os.path.basename(path)))
            counts[name] = len(files)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(scratch, output_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return counts


def main(argv=None):
    """`python -m sft_keras.data.tuxpaint --output_dir=DIR [--stamps_dir=DIR] [--overwrite]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--stamps_dir", default=STAMPS_DIR)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        counts = prepare_tuxpaint_images(args.output_dir, args.stamps_dir, overwrite=args.overwrite)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    print(f"Wrote {sum(counts.values())} images in {len(counts)} classes to {args.output_dir}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
