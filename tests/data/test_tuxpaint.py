"""Tux Paint's stamps -> a class-per-folder image set, transparent backgrounds made white."""

import os

import numpy as np
import pytest
from PIL import Image

from sft_keras.data.tuxpaint import prepare_tuxpaint_images
from sft_keras.errors import DataError


def test_stamps_become_white_backed_rgb_images_one_folder_per_class(tmp_path):
    stamps = tmp_path / "stamps"
    for sub, n in (("animals/birds", 2), ("food/fruit", 3)):
        os.makedirs(stamps / sub)
        for i in range(n):
            rgba = np.zeros((8, 8, 4), np.uint8)
            rgba[2:6, 2:6] = (200, 10, 10, 255)  # An opaque red square on a transparent field.
            Image.fromarray(rgba).save(stamps / sub / f"s{i}.png")
        (stamps / sub / "s0_desc_fr.ogg").write_bytes(b"not an image")
    out = tmp_path / "images"
    counts = prepare_tuxpaint_images(str(out), str(stamps),
                                     classes={"birds": "animals/birds", "fruit": "food/fruit"})
    assert counts == {"birds": 2, "fruit": 3}
    assert sorted(os.listdir(out)) == ["birds", "fruit"]
    pixels = np.asarray(Image.open(out / "fruit" / "s1.png"))
    assert pixels.shape == (8, 8, 3)
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[3, 3].tolist() == [200, 10, 10]
    with pytest.raises(DataError, match="exists; pass overwrite=True"):
        prepare_tuxpaint_images(str(out), str(stamps), classes={"birds": "animals/birds"})
    assert sorted(os.listdir(tmp_path)) == ["images", "stamps"]  # No partial folder left behind.


def test_missing_stamps_say_how_to_install_them(tmp_path):
    with pytest.raises(DataError, match="apt-get install tuxpaint-stamps-default"):
        prepare_tuxpaint_images(str(tmp_path / "out"), str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "stamps" / "animals" / "birds")
    with pytest.raises(DataError, match=r"No \.png stamps in .*birds.* \(class 'birds'\)"):
        prepare_tuxpaint_images(str(tmp_path / "out"), str(tmp_path / "stamps"))
    assert not os.path.exists(tmp_path / "out")
