"""Serving: exports load and run where only TensorFlow is importable, as in TF Serving."""

import base64
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.data import decode_image_bytes
from sft_keras.run import load_run

from bare_tensorflow import run_bare_tensorflow
from helpers import make_pattern_image

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
    expected = text_run.model(text_run.modality.preprocessor(tf.constant(texts)), training=False)
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


def test_bad_image_rows_do_not_fail_the_batch(tiny_image_run):
    workdir, images = tiny_image_run
    serve = tf.saved_model.load(os.path.join(workdir, "export", "1")).signatures[
        "serving_default"]
    png = open(os.path.join(images, "vertical", "000.png"), "rb").read()
    jpeg = tf.io.encode_jpeg(make_pattern_image(0, size=40)).numpy()
    batch = [png, b"", b"<html>404 Not Found</html>", jpeg, "naïve text".encode(), png]
    out = serve(image_bytes=tf.constant(batch))
    assert out["valid"].numpy().tolist() == [True, False, False, True, False, True]
    good = [0, 3, 5]
    alone = serve(image_bytes=tf.constant([batch[i] for i in good]))
    for key in ("probabilities", "class_id", "label"):
        np.testing.assert_array_equal(out[key].numpy()[good], alone[key].numpy())
    bad = [1, 2, 4]
    assert not out["probabilities"].numpy()[bad].any()
    assert out["class_id"].numpy()[bad].tolist() == [-1, -1, -1]
    assert out["label"].numpy()[bad].tolist() == [b"", b"", b""]

    # A valid header on a truncated file still fails the batch (documented in the README).
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image_bytes=tf.constant([png, png[: len(png) // 2]]))


# TF Serving's REST API, as documented in the README: a JSON body is decoded
# ({"b64": ...} objects become bytes; "instances" rows are stacked into a
# batch, "inputs" is already columnar), the signature runs, and the response is
# {"predictions": [one value or dict per row]} or {"outputs": {name: column}}.


def _decode_value(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def serve_rest(loaded, body):
    """Answers a TF Serving REST `:predict` body with a loaded SavedModel, as TF Serving does."""
    request = json.loads(body)
    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    names = sorted(signature.structured_input_signature[1])
    if "instances" in request:
        rows = request["instances"]
        if len(names) == 1 and not (rows and isinstance(rows[0], dict) and names[0] in rows[0]):
            feed = {names[0]: [_decode_value(v) for v in rows]}
        else:
            feed = {n: [_decode_value(row[n]) for row in rows] for n in names}
    else:
        inputs = request["inputs"]
        if not isinstance(inputs, dict):
            inputs = {names[0]: inputs}
        feed = {n: [_decode_value(v) for v in inputs[n]] for n in names}
    outputs = {k: v.numpy().tolist() for k, v in signature(**{
        k: tf.constant(v) for k, v in feed.items()}).items()}
    outputs = {k: [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
               for k, v in outputs.items()}
    if "instances" in request:
        return json.dumps({"predictions": [{k: v[i] for k, v in outputs.items()}
                                           for i in range(len(next(iter(outputs.values()))))]})
    return json.dumps({"outputs": outputs})


def test_rest_request_bodies_from_the_readme(tiny_image_run, tiny_text_run):
    workdir, images = tiny_image_run
    image_export = tf.saved_model.load(os.path.join(workdir, "export", "1"))
    png = open(os.path.join(images, "vertical", "000.png"), "rb").read()
    b64 = base64.b64encode(png).decode("ascii")
    direct = image_export.signatures["serving_default"](image_bytes=tf.constant([png, png]))

    row = json.loads(serve_rest(image_export, json.dumps({"instances": [{"b64": b64}] * 2})))
    assert len(row["predictions"]) == 2
    assert set(row["predictions"][0]) == {"probabilities", "class_id", "label", "valid"}
    np.testing.assert_allclose(row["predictions"][1]["probabilities"],
                               direct["probabilities"][1], atol=1e-6)
    assert row["predictions"][0]["label"] == direct["label"][0].numpy().decode()
    columnar = json.loads(serve_rest(image_export, json.dumps({
        "signature_name": "serving_default", "inputs": {"image_bytes": [{"b64": b64}]}})))
    assert columnar["outputs"]["label"] == [row["predictions"][0]["label"]]
    assert columnar["outputs"]["valid"] == [True]

    text_export = tf.saved_model.load(os.path.join(tiny_text_run[0], "export", "1"))
    texts = ["the movie was good", "awful plot"]
    answer = json.loads(serve_rest(text_export, json.dumps({"instances": texts})))
    direct = text_export.signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]],
                               direct["probabilities"], atol=1e-6)
    assert [p["label"] for p in answer["predictions"]] == [
        x.decode() for x in direct["label"].numpy()]
