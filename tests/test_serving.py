"""Serving: exports load and run where only TensorFlow is importable, as in TF Serving."""

import base64
import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.data import decode_image_bytes
from sft_keras.workdir import load_run

from bare_tensorflow import run_bare_tensorflow
from conftest import make_pattern_image

_LOAD_AND_SHOW = """
    out = {}
    for name, path in request["exports"].items():
        loaded = tf.saved_model.load(path)
        feed = request["feeds"][name]
        if name == "image":
            feed = {k: tf.constant([base64.b64decode(x) for x in v]) for k, v in feed.items()}
        else:
            feed = {k: tf.constant(v) for k, v in feed.items()}
        outputs = loaded.signatures["serving_default"](**feed)
        out[name] = {k: v.numpy().tolist() for k, v in outputs.items()
                     if v.dtype != tf.string}
    result(out)
    for path in request["exports"].values():
        saved_model_cli_show(path)
"""

LONG_TEXT = " ".join(["the movie was really very good and"] * 300)  # 2,100 words.


def _pngs():
    images = [make_pattern_image(c, size=s, seed=c) for c, s in ((0, 32), (1, 48), (2, 20))]
    return [tf.io.encode_png(image).numpy() for image in images]


def test_exports_run_with_only_tensorflow_and_equal_the_keras_model(tiny_image_run,
                                                                    tiny_text_run):
    image_run, text_run = load_run(tiny_image_run[0]), load_run(tiny_text_run[0])
    pngs = _pngs()
    texts = ["the movie was good", "awful plot", "", LONG_TEXT, "Très BIEN!"]
    exports = {"image": os.path.join(tiny_image_run[0], "export", "1"),
               "text": os.path.join(tiny_text_run[0], "export", "1")}
    feeds = {"image": {"image_bytes": [base64.b64encode(p).decode() for p in pngs]},
             "text": {"text": texts}}
    served, shown = run_bare_tensorflow(_LOAD_AND_SHOW, {"exports": exports, "feeds": feeds})
    assert served["modules"] == []

    pixels = tf.stack([decode_image_bytes(p, (32, 32)) for p in pngs])
    expected = image_run.model(pixels, training=False).numpy()
    np.testing.assert_allclose(served["image"]["probabilities"], expected, atol=1e-4)
    assert served["image"]["class_id"] == expected.argmax(-1).tolist()
    expected = text_run.model(text_run.preprocessor(tf.constant(texts)), training=False)
    np.testing.assert_allclose(served["text"]["probabilities"], expected, atol=1e-4)

    # What `saved_model_cli show --all` lists, and no "N/A ... custom ops" notice.
    assert "custom ops" not in shown and "N/A" not in shown
    for signature, inputs in [
        ("serving_default", [("image_bytes", "DT_STRING", "(-1)")]),
        ("serve_images", [("images", "DT_FLOAT", "(-1, 32, 32, 3)")]),
        ("serving_default", [("text", "DT_STRING", "(-1)")]),
        ("serve_tokens", [(n, "DT_INT32", "(-1, 16)")
                          for n in ("token_ids", "segment_ids", "padding_mask")]),
    ]:
        assert f"signature_def['{signature}']" in shown
        for name, dtype, shape in inputs:
            block = shown[shown.index(f"inputs['{name}'] tensor_info"):][:200]
            assert f"dtype: {dtype}" in block and f"shape: {shape}" in block, block
    for output in ("probabilities", "class_id", "label"):
        assert f"outputs['{output}'] tensor_info" in shown
