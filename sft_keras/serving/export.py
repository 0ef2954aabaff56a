"""SavedModels for TF Serving whose signatures take raw inputs.

The export layout is TF Serving's: `<export_base>/<version>/` holding
`saved_model.pb`, `variables/` and `assets.extra/` (`labels.txt`,
`export_info.json`). A version is written to a temporary folder beside it and
renamed into place, so TF Serving never sees a half-written model, and an
existing version is never replaced unless asked.

Image signatures (`export_image_model`):
- `serving_default`: `image_bytes` (`tf.string [batch]`, encoded
  JPEG/PNG/GIF/BMP) -> `probabilities` (float32 `[batch, classes]`),
  `class_id` (int64 `[batch]`), `label` (string `[batch]`); regression
  returns `prediction` (float32 `[batch]`) instead; multilabel returns
  `probabilities`, `predicted` (bool `[batch, classes]`) and `labels`
  (string `[batch]`, predicted labels joined by the label separator).
  Also `valid` (bool
  `[batch]`): False for a row whose bytes do not start like a JPEG, PNG, GIF
  or BMP file, or whose header declares no pixels or more than
  `max_image_pixels` (width x height, read from the header before anything
  is decoded: a decompression bomb is never decompressed); such a row gets
  zero probabilities (or prediction), class_id -1 and label "" instead of
  failing the whole batch. A file with a valid header that still cannot be
  decoded (e.g. truncated) fails the batch.
- `serve_images`: `images` (float32 `[batch, height, width, 3]`, pixels in
  [0, 255]) -> the same outputs.
"""

import json
import os
import platform
import shutil
import tempfile

import keras
import tensorflow as tf

from sft_keras.data.images import decode_image_bytes
from sft_keras.errors import ExportError
from sft_keras.files import atomic_write_text, existing_versions, next_version, publish_folder
from sft_keras.tasks import get_task

# The export layout is TF Serving's; sft_keras adds these files in `assets.extra/`.
EXTRA, LABELS, EXPORT_INFO = "assets.extra", "labels.txt", "export_info.json"
# Largest width x height an image export decodes (`export.max_image_pixels`'s default,
# about 7071 x 7071): a bigger image is a `valid=False` row.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


def export_image_model(model, export_base, class_names, task, image_size, version=None,
                       overwrite=False, info=None, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Exports an image model as a versioned SavedModel taking encoded image bytes.

    Args:
        model: the trained `keras.Model` (float pixels in [0, 255] in).
        export_base: str. The folder holding the versions (e.g.
            `<workdir>/export`).
        class_names: list of str, in class-index order (empty for regression).
        task: str or `sft_keras.tasks.Task`. `"classification"`, `"binary"`,
            `"regression"` or `"multilabel"`; pass a `Task` (`task_from_config`)
            to serve with multilabel thresholds other than 0.5.
        image_size: `(height, width)` the model expects; served images are
            resized to it exactly as in training.
        version: int or None. The version to write; None means one more than
            the highest existing version.
        overwrite: bool. Replace `version` if it exists (else it is an error).
        info: dict or None. Extra facts for `export_info.json` (e.g. metrics).
        max_image_pixels: int > 0. `serving_default` decodes a row only when
            its header declares at most this many pixels (width x height);
            a bigger one is `valid=False`. Recorded in `export_info.json`.

    Returns:
        str. The path of the written version folder.

    Raises:
        ExportError: `max_image_pixels` is not a positive integer, or as
            `write_export` does.

    Example:

    >>> import tempfile, tensorflow as tf
    >>> from sft_keras.config import get_default_config
    >>> from sft_keras.models import build_image_model
    >>> config = get_default_config()
    >>> config.model.backbone = "small_cnn"
    >>> model = build_image_model(config, num_classes=2)
    >>> path = export_image_model(model, tempfile.mkdtemp(), ["cat", "dog"],
    ...                           "classification", (32, 32))
    >>> os.path.basename(path)
    '1'
    >>> png = tf.io.encode_png(tf.zeros((40, 40, 3), tf.uint8))
    >>> out = tf.saved_model.load(path).signatures["serving_default"](
    ...     image_bytes=tf.stack([png]))
    >>> sorted(out)
    ['class_id', 'label', 'probabilities', 'valid']
    """
    if (isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int)
            or max_image_pixels <= 0):
        raise ExportError(f"max_image_pixels (export.max_image_pixels) must be a positive "
                          f"integer. Received: max_image_pixels={max_image_pixels!r}")
    height, width = image_size
    task_type = get_task(task)
    task = task_type.name
    class_names = list(class_names)

    def serve_images(images):
        return task_type.serving_outputs(model(images, training=False), class_names)

    def decode_or_zeros(image):
        # A row that is not an image at all, or declares too many pixels, gives zeros
        # instead of failing the batch (or filling the server's memory): it is not decoded.
        size = image_header_size(image)
        valid = tf.logical_and(has_image_header(image), tf.reduce_all(size > 0))
        valid = tf.logical_and(valid, size[0] * size[1] <= max_image_pixels)
        pixels = tf.cond(valid, lambda: decode_image_bytes(image, (height, width)),
                         lambda: tf.zeros((height, width, 3), tf.float32))
        return pixels, valid

    def serve_bytes(image_bytes):
        images, valid = tf.map_fn(
            decode_or_zeros,
            image_bytes,
            fn_output_signature=(tf.TensorSpec((height, width, 3), tf.float32),
                                 tf.TensorSpec((), tf.bool)),
        )
        return mask_invalid_rows(serve_images(images), valid)

    archive = new_archive()
    archive.add_endpoint(
        "serving_default",
        serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        "serve_images",
        serve_images,
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="images")],
    )
    inputs = {
        "serving_default": {"image_bytes": "tf.string [batch], encoded JPEG/PNG/GIF/BMP"},
        "serve_images": {"images": f"tf.float32 [batch, {height}, {width}, 3], 0-255"},
    }
    info = {"modality": "image", "image_size": [height, width],
            "max_image_pixels": max_image_pixels, **(info or {}),
            **_task_info(task_type, class_names)}
    return write_export(archive, export_base, class_names, task, inputs, info, version, overwrite)


# File signatures of the formats `tf.io.decode_image` reads.
IMAGE_HEADERS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def has_image_header(image_bytes):
    """True where a scalar `tf.string` starts like a JPEG, PNG, GIF or BMP file (in-graph).

    Example:

    >>> [bool(has_image_header(tf.constant(b))) for b in (b"GIF89a...", b"", b"<html>")]
    [True, False, False]
    """
    return tf.reduce_any([
        tf.equal(tf.strings.substr(image_bytes, 0, len(header)), header)
        for header in IMAGE_HEADERS
    ])


def image_header_size(image_bytes):
    """`(height, width)` a JPEG, PNG, GIF or BMP header declares, read in-graph without decoding.

    Only the first bytes are read (for JPEG, `tf.image.extract_jpeg_shape`
    reads the markers up to the frame header), so an image declaring
    billions of pixels costs nothing to size. These are the sizes
    `tf.io.decode_image` allocates: PNG's IHDR (big-endian, bytes 16-24),
    GIF's logical screen (little-endian, bytes 6-10), BMP's info header
    (little-endian signed, bytes 18-26; a negative height is a top-down
    image), JPEG's SOF marker.

    Args:
        image_bytes: scalar `tf.string`.

    Returns:
        int64 tensor `[2]`; `[-1, -1]` for bytes that start like none of
        these formats. A JPEG whose markers are corrupt raises, as decoding
        it would.

    Example:

    >>> png = tf.io.encode_png(tf.zeros((3, 5, 3), tf.uint8))
    >>> [image_header_size(b).numpy().tolist() for b in (png, tf.constant(b"<html>"))]
    [[3, 5], [-1, -1]]
    """
    # The first 26 bytes (zero-padded when the string is shorter), as int64.
    head = tf.strings.substr(image_bytes, 0, 26)
    head = tf.strings.substr(tf.strings.join([head, b"\0" * 26]), 0, 26)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

    def little(i, n):
        return sum(b[i + k] * 256 ** k for k in range(n))

    def big(i, n):
        return sum(b[i + k] * 256 ** (n - 1 - k) for k in range(n))

    def signed32(value):
        return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

    def starts_with(*headers):
        return tf.reduce_any([tf.equal(tf.strings.substr(image_bytes, 0, len(h)), h)
                              for h in headers])

    def not_jpeg():
        size = tf.constant([-1, -1], tf.int64)
        size = tf.where(starts_with(b"BM"), tf.stack([signed32(little(22, 4)),
                                                      signed32(little(18, 4))]), size)
        size = tf.where(starts_with(b"GIF87a", b"GIF89a"),
                        tf.stack([little(8, 2), little(6, 2)]), size)
        return tf.where(starts_with(b"\x89PNG\r\n\x1a\n"), tf.stack([big(20, 4), big(16, 4)]),
                        size)

    return tf.cond(
        starts_with(b"\xff\xd8\xff"),
        lambda: tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64),
        not_jpeg,
    )


def mask_invalid_rows(outputs, valid):
    """Serving outputs with `valid` added; rows where it is False hold zeros, -1 and `""`."""
    masked = {"valid": valid}
    for name, value in outputs.items():
        if value.dtype == tf.string:
            fill = tf.fill(tf.shape(value), "")
        elif name == "class_id":
            fill = tf.fill(tf.shape(value), tf.constant(-1, value.dtype))
        else:
            fill = tf.zeros_like(value)
        row_valid = tf.reshape(valid, [-1] + [1] * (value.shape.rank - 1))
        masked[name] = tf.where(row_valid, value, fill)
    return masked


def export_text_model(model, preprocessor, export_base, class_names, task, num_texts=1,
                      version=None, overwrite=False, info=None):
    """Exports a text model as a versioned SavedModel taking raw strings.

    Signatures:
    - `serving_default`: `text` (`tf.string [batch]`; pair tasks also
      `text_pair`) -> `probabilities`, `class_id`, `label` (or `prediction`).
    - `serve_tokens`: the model's token inputs (`token_ids`, `padding_mask`,
      and `segment_ids` for BERT-like families; int32
      `[batch, sequence_length]`) -> the same outputs, for clients that
      tokenize themselves.

    WordPiece families (BERT, DistilBERT, ELECTRA): the tokenizer inside
    `serving_default` is `CoreBertTokenizer`, the same WordPiece
    tokenization as the keras-hub preprocessor used in training, rebuilt
    from core TensorFlow ops, so the export loads and runs in a process (or
    a TF Serving build) without tensorflow-text.

    Byte-level BPE (RoBERTa) and SentencePiece (XLM-R, DeBERTaV3) families:
    the keras-hub preprocessor itself goes into the SavedModel, with its
    tensorflow-text ops (`RegexSplitWithOffsets`, `SentencepieceOp`, ...).
    `export_info.json` then says `"requires_tensorflow_text": true` and
    why: load it after `import tensorflow_text` (sft-predict does), and
    serve it with a TF Serving build that has these ops (the stock images
    from 2.20 on). `serve_tokens` needs none of them.

    Args:
        model: the trained text `keras.Model` (token dict in).
        preprocessor: the keras-hub preprocessor used in training.
        export_base: str. The folder holding the versions.
        class_names: list of str (empty for regression).
        task: str or `sft_keras.tasks.Task`. `"classification"`, `"binary"`,
            `"regression"` or `"multilabel"`; pass a `Task` (`task_from_config`)
            to serve with multilabel thresholds other than 0.5.
        num_texts: int. 1, or 2 for sentence-pair tasks.
        version, overwrite, info: as in `export_image_model`.

    Returns:
        str. The path of the written version folder.

    Example:

    >>> import tempfile, tensorflow as tf
    >>> from sft_keras.backbones import (build_text_backbone, load_text_tokenizer,
    ...                                  make_preprocessor, save_tiny_bert_preset)
    >>> from sft_keras.config import get_default_config
    >>> from sft_keras.models import build_text_model
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> config = get_default_config()
    >>> config.model.backbone = "bert"
    >>> config.model.preset = save_tiny_bert_preset(tempfile.mkdtemp(), vocab, num_layers=1)
    >>> config.data.sequence_length = 8
    >>> model = build_text_model(config, build_text_backbone("bert", config.model.preset), 2)
    >>> preprocessor = make_preprocessor(load_text_tokenizer("bert", config.model.preset), 8)
    >>> path = export_text_model(model, preprocessor, tempfile.mkdtemp(), ["neg", "pos"],
    ...                          "classification")
    >>> out = tf.saved_model.load(path).signatures["serving_default"](
    ...     text=tf.constant(["good", "not bad"]))
    >>> sorted(out), out["probabilities"].shape
    (['class_id', 'label', 'probabilities'], TensorShape([2, 2]))
    """
    from sft_keras.models.lora import merge_lora

    model = merge_lora(model)  # LoRA updates go into the kernels: no LoRA variables exported.
    task_type = get_task(task)
    task = task_type.name
    class_names = list(class_names)
    length = preprocessor.sequence_length
    input_names = list(model.input)  # The backbone's own inputs.
    tokenize, tracked, tf_text = _export_tokenizer(preprocessor)

    def serve_tokens(*tensors):
        features = dict(zip(input_names, tensors))
        return task_type.serving_outputs(model(features, training=False), class_names)

    def serve_text(*texts):
        features = tokenize(texts[0], texts[1] if len(texts) > 1 else None)
        return serve_tokens(*[tf.cast(features[name], tf.int32) for name in input_names])

    text_names = ["text", "text_pair"][:num_texts]
    archive = new_archive(tracked)
    archive.add_endpoint(
        "serving_default",
        serve_text,
        input_signature=[tf.TensorSpec([None], tf.string, name=n) for n in text_names],
    )
    archive.add_endpoint(
        "serve_tokens",
        serve_tokens,
        input_signature=[tf.TensorSpec([None, length], tf.int32, name=n) for n in input_names],
    )
    inputs = {
        "serving_default": {n: "tf.string [batch], raw text" for n in text_names},
        "serve_tokens": {n: f"tf.int32 [batch, {length}]" for n in input_names},
    }
    info = {"modality": "text", "sequence_length": length, **(info or {}), **tf_text,
            **_task_info(task_type, class_names)}
    return write_export(archive, export_base, class_names, task, inputs, info, version, overwrite)


def _export_tokenizer(preprocessor):
    """How `serving_default` tokenizes: `(tokenize(texts, pairs), object to track, info)`.

    WordPiece: `CoreBertTokenizer` (core TF ops only). Other tokenizers: the
    keras-hub preprocessor, whose tensorflow-text ops `info` records.
    """
    import keras_hub

    from sft_keras.serving.core_tokenizer import CoreBertTokenizer

    length = preprocessor.sequence_length
    if isinstance(preprocessor.tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        tokenizer = CoreBertTokenizer.from_keras_hub(
            preprocessor.tokenizer, sequence_length=length, truncate=preprocessor.truncate)

        def tokenize(texts, pairs):
            return tokenizer.preprocess(texts, pairs, sequence_length=length)

        return tokenize, tokenizer, {"requires_tensorflow_text": False}

    def tokenize(texts, pairs):
        return preprocessor(x=texts if pairs is None else (texts, pairs))

    from sft_keras.backbones.text import family_of_tokenizer

    kind = {"bpe": "byte-level BPE", "sentencepiece": "SentencePiece"}.get(
        family_of_tokenizer(preprocessor.tokenizer).tokenizer_type, "non-WordPiece")
    reason = (f"serving_default runs the keras-hub {type(preprocessor.tokenizer).__name__} "
              f"({kind}), whose ops come from tensorflow-text: `import tensorflow_text` before "
              f"loading, and serve with TF Serving 2.20 or later (older stock images lack some "
              f"of these ops); serve_tokens needs no tensorflow-text op")
    return tokenize, preprocessor, {"requires_tensorflow_text": True,
                                    "tensorflow_text_reason": reason}


def _task_info(task_type, class_names):
    """Multilabel: the served per-label thresholds and separator, for `export_info.json`."""
    if task_type.name != "multilabel":
        return {}
    thresholds = task_type.label_thresholds(len(class_names))
    return {"multilabel_thresholds": dict(zip(class_names, thresholds)),
            "label_separator": task_type.label_separator}


def new_archive(*resources):
    """A `keras.export.ExportArchive` tracking `resources` (tokenizers, lookup tables).

    Models are not tracked: the variables an endpoint uses are saved with it
    anyway, and Keras 3.15's `ExportArchive.track(model)` saves each of them a
    second time (as the tracked `KerasVariable` and as the captured
    `tf.Variable`), which doubled every export's size (a 91 MB MiniLM gave a
    174 MB `variables/`). Tested: an export's checkpoint holds each weight once.

    Args:
        *resources: objects whose non-variable state the endpoints need
            (`tf.lookup` tables, keras-hub tokenizers, `tf.Module`s).

    Returns:
        A `keras.export.ExportArchive`.
    """
    archive = keras.export.ExportArchive()
    for resource in resources:
        archive.track(resource)
    return archive


def write_export(archive, export_base, class_names, task, inputs, info, version=None,
                 overwrite=False, extra_files=None):
    """Writes `archive` to `<export_base>/<version>/` atomically, with `assets.extra/`.

    The SavedModel goes to a temporary folder beside the target and is renamed
    into place; an existing version is an `ExportError` unless `overwrite`.
    `extra_files` (dict: file name -> a function writing that path) adds
    files to `assets.extra/` before the rename.

    Returns:
        str. The path of the written version folder.
    """
    os.makedirs(export_base, exist_ok=True)
    if version is None:
        version = next_version(export_base)
    final = check_version(export_base, version, overwrite)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        archive.write_out(tmp, verbose=False)
        extra = os.path.join(tmp, EXTRA)
        os.makedirs(extra, exist_ok=True)
        atomic_write_text(os.path.join(extra, LABELS), "".join(f"{c}\n" for c in class_names))
        export_info = {
            "task": task,
            "inputs": inputs,
            "class_names": list(class_names),
            "versions": _versions(),
            **info,
        }
        atomic_write_text(os.path.join(extra, EXPORT_INFO), json.dumps(export_info, indent=2))
        for name, write in (extra_files or {}).items():
            write(os.path.join(extra, name))
        publish_folder(tmp, final)  # overwrite=True: the old one is moved aside first.
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def check_version(export_base, version, overwrite=False):
    """Returns `<export_base>/<version>`; an `ExportError` if it exists (unless `overwrite`).

    Args:
        export_base: str. The folder holding the versions.
        version: int >= 1.
        overwrite: bool. An existing version is fine (it will be replaced).

    Example:

    >>> import tempfile
    >>> check_version(tempfile.mkdtemp(), 0)
    Traceback (most recent call last):
    ...
    sft_keras.errors.ExportError: Export version must be a positive integer. Received: version=0
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExportError(f"Export version must be a positive integer. Received: version={version!r}")
    final = os.path.join(export_base, str(version))
    if os.path.exists(final) and not overwrite:
        raise ExportError(
            f"Export version {final!r} already exists (versions present: "
            f"{existing_versions(export_base)}). Pass another version, or overwrite=True "
            f"to replace it."
        )
    return final


def _versions():
    import sft_keras

    return {
        "sft_keras": sft_keras.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def resolve_export(model_path):
    """Returns the version folder of `model_path`: itself, or the highest version in it.

    Raises:
        ExportError: `model_path` is neither a SavedModel folder nor a folder
            holding numbered versions.
    """
    if os.path.isfile(os.path.join(model_path, "saved_model.pb")):
        return model_path
    versions = existing_versions(model_path)
    if not os.path.isdir(model_path) or not versions:
        raise ExportError(
            f"--model must be a SavedModel version folder (with saved_model.pb) or an export "
            f"folder holding numbered versions (<dir>/1/, <dir>/2/, ...). Received: "
            f"{model_path!r}" + ("" if os.path.isdir(model_path) else " (does not exist)")
        )
    return os.path.join(model_path, str(versions[-1]))


def read_export_info(version_dir):
    """Returns `assets.extra/export_info.json` of an sft_keras export as a dict."""
    path = os.path.join(version_dir, EXTRA, EXPORT_INFO)
    if not os.path.isfile(path):
        raise ExportError(
            f"{version_dir!r} has no {os.path.join(EXTRA, EXPORT_INFO)}: "
            f"sft-predict reads exports written by sft-train or sft-export."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)
