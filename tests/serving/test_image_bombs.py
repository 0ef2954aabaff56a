"""Image serving reads each row's size from its header and never decodes a decompression bomb."""

import base64
import io
import json
import os
import struct
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError, ExportError
from sft_keras.modalities.image import ImageModality
from sft_keras.serving.export import DEFAULT_MAX_IMAGE_PIXELS, export_image_model, image_header_size

from bare_tensorflow import run_bare_tensorflow
from helpers import make_pattern_image


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width=30000, height=30000):
    """A valid ~100-byte PNG whose IHDR declares `width` x `height` RGB pixels (one row of data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * width), 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _pil(image, fmt, **kwargs):
    out = io.BytesIO()
    Image.fromarray(image).save(out, format=fmt, **kwargs)
    return out.getvalue()


def jpeg_bomb():
    """A real JPEG whose SOF0 frame header is patched to declare 60000 x 60000 pixels."""
    data = bytearray(tf.io.encode_jpeg(make_pattern_image(0, size=16)).numpy())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # Height, width.
    return bytes(data)


def test_image_header_size_reads_every_format_without_decoding():
    image = make_pattern_image(1, size=40)[:30]  # 30 x 40.
    bmp = bytearray(_pil(image, "BMP"))
    top_down = bytearray(bmp)
    top_down[22:26] = struct.pack("<i", -30)
    gif_bomb = bytearray(_pil(image, "GIF"))
    gif_bomb[6:10] = struct.pack("<HH", 65535, 65535)
    cases = [
        (tf.io.encode_png(image).numpy(), [30, 40]),
        (tf.io.encode_jpeg(image).numpy(), [30, 40]),
        (_pil(image, "JPEG", progressive=True), [30, 40]),  # SOF2.
        (_pil(image, "GIF"), [30, 40]),
        (bytes(bmp), [30, 40]),
        (bytes(top_down), [30, 40]),
        (png_bomb(), [30000, 30000]),
        (jpeg_bomb(), [60000, 60000]),
        (bytes(gif_bomb), [65535, 65535]),
        (b"", [-1, -1]),
        (b"\x89PNG", [-1, -1]),  # A signature cut short is no PNG.
        (b"<html>404</html>", [-1, -1]),
    ]
    for data, expected in cases:
        assert image_header_size(tf.constant(data)).numpy().tolist() == expected, data[:12]


_SERVE = """
    out = {}
    for name, path in request["exports"].items():
        serve = tf.saved_model.load(path).signatures["serving_default"]
        rows = [base64.b64decode(x) for x in request["rows"]]
        batch = serve(image_bytes=tf.constant(rows))
        good = [i for i, ok in enumerate(batch["valid"].numpy()) if ok]
        alone = serve(image_bytes=tf.constant([rows[i] for i in good]))
        out[name] = {
            "valid": batch["valid"].numpy().tolist(),
            "class_id": batch["class_id"].numpy().tolist(),
            "probabilities": batch["probabilities"].numpy().tolist(),
            "alone": alone["probabilities"].numpy().tolist(),
        }
    result(out)
"""


def test_decompression_bomb_gets_valid_false_in_a_bare_tensorflow_process(tmp_path):
    config = validate_config({"model": {"backbone": "small_cnn"}, "data": {"source": "digits"}})
    keras.utils.set_random_seed(0)
    modality = ImageModality(config)
    model = modality.build_model(3)
    classes = ["a", "b", "c"]
    exports = {"default": modality.export(model, str(tmp_path / "default"), classes,
                                          "classification")}
    config.export.max_image_pixels = 32 * 32  # From the config, through the modality.
    exports["small"] = ImageModality(config).export(model, str(tmp_path / "small"), classes,
                                                    "classification")
    for name, limit in (("default", DEFAULT_MAX_IMAGE_PIXELS), ("small", 1024)):
        info = json.load(open(os.path.join(exports[name], "assets.extra", "export_info.json")))
        assert info["max_image_pixels"] == limit

    normal = tf.io.encode_png(make_pattern_image(0, size=32)).numpy()  # 1,024 pixels.
    bigger = tf.io.encode_jpeg(make_pattern_image(1, size=40)).numpy()  # 1,600 pixels.
    # 30000 x 30000 is past what TF decodes at all (the batch would fail); 20000 x 20000 is
    # 1.2 GB of pixels it would try to allocate.
    rows = [normal, png_bomb(), bigger, jpeg_bomb(), png_bomb(0, 0), png_bomb(20000, 20000),
            normal]
    request = {"exports": exports, "rows": [base64.b64encode(r).decode() for r in rows]}
    served, _ = run_bare_tensorflow(_SERVE, request)
    assert served["modules"] == []
    assert served["default"]["valid"] == [True, False, True, False, False, False, True]
    assert served["small"]["valid"] == [True, False, False, False, False, False, True]
    for name in ("default", "small"):
        out = served[name]
        good = [i for i, ok in enumerate(out["valid"]) if ok]
        np.testing.assert_allclose([out["probabilities"][i] for i in good], out["alone"],
                                   atol=1e-6)
        for i, ok in enumerate(out["valid"]):
            if not ok:
                assert out["class_id"][i] == -1 and not any(out["probabilities"][i])


def test_max_image_pixels_must_be_a_positive_integer(tmp_path):
    config = get_default_config()
    assert config.export.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    config.export.max_image_pixels = 0
    with pytest.raises(ConfigError, match=r"export\.max_image_pixels must be a positive "
                                          r"integer\. Received: export\.max_image_pixels=0"):
        validate_config(config)
    with pytest.raises(ExportError, match=r"Received: max_image_pixels=-5"):
        export_image_model(None, str(tmp_path), ["a", "b"], "classification", (32, 32),
                           max_image_pixels=-5)
