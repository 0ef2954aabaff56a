"""LiteRT (`.tflite`) and ONNX exports: graphs on token ids or pixels, with what a client needs.

String ops (tokenizers, image decoders) do not convert to LiteRT or ONNX, so
these graphs start after preprocessing: a text model takes the token tensors
of its keras-hub preprocessor (`token_ids`, `padding_mask`, and `segment_ids`
for BERT-like encoders: int32 `[batch, sequence_length]`), an image model
takes `images` (float32 `[batch, height, width, 3]`, RGB pixels in [0, 255];
the model scales them itself). Every graph returns `probabilities` (float32
`[batch, classes]`; binary tasks return `[1 - p, p]`).

One version folder per format, written atomically as the SavedModel versions
are (`<workdir>/export_litert/<N>/`, `<workdir>/export_onnx/<N>/`):

    model_float32.tflite ...   one file per variant (`LITERT_VARIANTS`, `ONNX_VARIANTS`)
    labels.txt                 class names in output order
    vocabulary.txt (text)      the tokenizer's files (`tokenizer.save_assets`)
    export_info.json           inputs, outputs, variants, preprocessing constants

A model trained in mixed precision is converted from a float32 copy
(`float32_model`); LoRA updates are merged into the kernels first.
"""

import json
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from sft_keras.errors import ExportError
from sft_keras.files import atomic_write_text, default_mode, next_version, publish_folder
from sft_keras.serving.export import new_archive

FORMATS = ("saved_model", "litert", "onnx")
# Variant -> what it is (written to export_info.json and the docs).
LITERT_VARIANTS = {
    "float32": "float32 weights and activations",
    "float16": "float16 weights, float32 compute",
    "dynamic_int8": "int8 weights, activations quantized on the fly (dynamic range)",
    "int8": "int8 weights and activations, calibrated on training examples "
            "(float32 inputs and outputs)",
}
ONNX_VARIANTS = {
    "float32": "float32 weights and activations",
    "int8": "int8 weights, dynamic activation quantization (onnxruntime quantize_dynamic)",
}
VARIANTS = {"litert": LITERT_VARIANTS, "onnx": ONNX_VARIANTS}
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
TASKS = ("classification", "binary")  # Tasks whose graphs return class probabilities.
LABELS, EXPORT_INFO = "labels.txt", "export_info.json"


def parse_formats(value, key="--format"):
    """Returns a tuple of known export formats from `value` (a str, comma-separated, or a tuple).

    Args:
        value: str or tuple of str.
        key: str. What to call `value` in the error.

    Raises:
        ExportError: an empty value or an unknown format; the message lists
            the known ones.

    Example:

    >>> parse_formats("litert,onnx")
    ('litert', 'onnx')
    >>> parse_formats("tflite")
    Traceback (most recent call last):
    ...
    sft_keras.errors.ExportError: Unknown export format 'tflite'; known formats: saved_model, litert, onnx. Received: --format='tflite'
    """
    return _parse_names(value, FORMATS, key, "export format", "known formats")


def parse_variants(export_format, value, key="--variants"):
    """Returns a tuple of the known variants of `export_format` named by `value`.

    Example:

    >>> parse_variants("onnx", ("float32", "int8"))
    ('float32', 'int8')
    """
    return _parse_names(value, tuple(VARIANTS[export_format]), key,
                        f"{export_format} variant", f"known {export_format} variants")


def _parse_names(value, known, key, what, known_what):
    names = tuple(s.strip() for s in value.split(",")) if isinstance(value, str) else value
    if not isinstance(names, (tuple, list)) or not names or not all(
            isinstance(n, str) and n for n in names):
        raise ExportError(f"{key} must name at least one {what} ({', '.join(known)}). "
                          f"Received: {key}={value!r}")
    for name in names:
        if name not in known:
            raise ExportError(f"Unknown {what} {name!r}; {known_what}: {', '.join(known)}. "
                              f"Received: {key}={value!r}")
    return tuple(dict.fromkeys(names))


def float32_model(model, rebuild):
    """Returns `model` if it computes in float32, else a float32 copy with the same weights.

    Mixed-precision variables are float32 already, so the copy's weights are
    exactly the trained ones; only the compute dtype changes. LoRA updates
    are then merged into the kernels (`sft_keras.models.lora.merge_lora`).

    Args:
        model: a `keras.Model`.
        rebuild: callable. Builds the same architecture again (called under
            the float32 policy only when `model` computes in mixed precision);
            e.g. the run's `modality.build_model(num_classes, pretrained=False)`.

    Example:

    >>> from sft_keras.training.distribute import precision_policy
    >>> def build():
    ...     inputs = keras.Input((3,))
    ...     return keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> with precision_policy("mixed_bfloat16"):
    ...     mixed = build()
    >>> float32_model(mixed, build).layers[0].compute_dtype
    'float32'
    """
    from sft_keras.models.lora import merge_lora
    from sft_keras.training.distribute import precision_policy

    if any(getattr(layer, "dtype_policy", None) is not None
           and layer.dtype_policy.name.startswith("mixed") for layer in model._flatten_layers()):
        with precision_policy("float32"):
            copy = rebuild()
        copy.set_weights(model.get_weights())
        model = copy
    return merge_lora(model)


def graph_inputs(model, sequence_length=None):
    """The `tf.TensorSpec`s of a LiteRT/ONNX graph: the model's token inputs, or `images`.

    Text models take any length up to `data.sequence_length` (training batches
    are length-bucketed); the exported graph takes `[batch, sequence_length]`,
    the length `export_info.json` tells clients to pad to.

    Example:

    >>> inputs = keras.Input((32, 32, 3))
    >>> model = keras.Model(inputs, keras.layers.Flatten()(inputs))
    >>> [(s.name, s.shape.as_list()) for s in graph_inputs(model)]
    [('images', [None, 32, 32, 3])]
    """
    if isinstance(model.input, dict):  # Text: token tensors, in name order.
        def shape(name):
            batch, length = model.input[name].shape
            return (batch, length if length is not None else sequence_length)

        return [tf.TensorSpec(shape(n), tf.int32, name=n) for n in sorted(model.input)]
    return [tf.TensorSpec(model.input.shape, tf.float32, name="images")]


def probability_function(model, task, specs):
    """A function of the graph's inputs (positional, in `specs` order) -> `{"probabilities"}`."""
    names = [s.name for s in specs]
    dict_input = isinstance(model.input, dict)

    def probabilities(*args):
        inputs = dict(zip(names, args)) if dict_input else args[0]
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        if task == "binary":
            outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
        return {"probabilities": outputs}

    return probabilities


def convert_litert(model, task, variants, representative=None, sequence_length=None):
    """Converts `model` with `tf.lite.TFLiteConverter`; returns `{variant: tflite bytes}`.

    The model goes through a Keras `ExportArchive` SavedModel (as Keras's own
    `model.export(format="litert")` does), then each variant is converted
    with LiteRT's built-in ops only (no Flex ops: any LiteRT runtime runs it).

    Args:
        model: a float32 `keras.Model`.
        task: str. `"classification"` or `"binary"`.
        variants: tuple of `LITERT_VARIANTS` names.
        representative: callable or None. For `"int8"`: returns an iterable of
            `{input name: array [1, ...]}` calibration examples.
    """
    specs = graph_inputs(model, sequence_length)
    archive = new_archive()
    archive.add_endpoint("serving_default", probability_function(model, task, specs),
                         input_signature=specs)
    files = {}
    with tempfile.TemporaryDirectory() as saved_model:
        archive.write_out(saved_model, verbose=False)
        for variant in variants:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
            if variant != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if variant == "float16":
                converter.target_spec.supported_types = [tf.float16]
            if variant == "int8":
                if representative is None:
                    raise ExportError("The 'int8' LiteRT variant needs calibration examples "
                                      "(representative=None).")
                converter.representative_dataset = representative
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            try:
                with warnings.catch_warnings():  # Calibration runs tf.lite.Interpreter.
                    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprec")
                    files[variant] = converter.convert()
            except Exception as e:  # The converter raises ConverterError and others.
                raise ExportError(f"LiteRT conversion of variant {variant!r} failed: "
                                  + " ".join(str(e).split())[-600:]) from None
    return files


def convert_onnx(model, task, variants, folder, sequence_length=None):
    """Writes `model_<variant>.onnx` files to `folder` with tf2onnx (and onnxruntime's
    `quantize_dynamic` for `"int8"`); returns `{variant: file name}`."""
    import logging

    import tf2onnx

    specs = graph_inputs(model, sequence_length)
    function = tf.function(probability_function(model, task, specs), input_signature=specs)
    float_name = "model_float32.onnx"
    float_path = os.path.join(folder, float_name)
    tf2onnx.convert.from_function(function, input_signature=specs, output_path=float_path)
    files = {"float32": float_name}
    if "int8" in variants:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        previous = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # Its "consider pre-processing" advice.
        try:
            quantize_dynamic(float_path, os.path.join(folder, "model_int8.onnx"),
                             weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(previous)
        files["int8"] = "model_int8.onnx"
    if "float32" not in variants:
        os.remove(float_path)
        del files["float32"]
    return files


def export_graph_format(export_format, model, export_base, class_names, task, variants,
                        preprocessing, files=None, representative=None, version=None,
                        overwrite=False, info=None):
    """Writes `<export_base>/<version>/` for `"litert"` or `"onnx"`: one file per variant.

    Args:
        export_format: str. `"litert"` or `"onnx"`.
        model: a float32 `keras.Model` (see `float32_model`).
        export_base: str. The folder holding the versions.
        class_names: list of str, in output order.
        task: str. `"classification"` or `"binary"`.
        variants: tuple of variant names (`LITERT_VARIANTS`, `ONNX_VARIANTS`).
        preprocessing: dict. What a client does before the graph, for
            `export_info.json` (see `text_preprocessing`, `image_preprocessing`).
        files: callable or None. Writes extra files (e.g. the vocabulary)
            into the folder it is given; returns their names.
        representative: as in `convert_litert`.
        version: int or None. None: one more than the highest present.
        overwrite: bool. Replace an existing `version` (else `ExportError`).
        info: dict or None. Extra facts for `export_info.json`.

    Returns:
        str. The written version folder.

    Example:

    >>> inputs = keras.Input((4, 4, 3))
    >>> outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    >>> model = keras.Model(inputs, outputs)
    >>> path = export_graph_format("litert", model, tempfile.mkdtemp(), ["a", "b"],
    ...                            "classification", ("float32",), {})
    >>> sorted(os.listdir(path))
    ['export_info.json', 'labels.txt', 'model_float32.tflite']
    """
    from sft_keras.serving.export import _versions, check_version

    if export_format not in SUFFIXES:
        raise ExportError(f"export_format must be one of {', '.join(SUFFIXES)}. "
                          f"Received: export_format={export_format!r}")
    if task not in TASKS:
        raise ExportError(f"LiteRT and ONNX exports are for tasks {', '.join(TASKS)} (graphs "
                          f"returning class probabilities). Received: task={task!r}")
    variants = parse_variants(export_format, variants, key=f"export.{export_format}_variants")
    length = preprocessing.get("sequence_length")  # Text: the padded length clients send.
    os.makedirs(export_base, exist_ok=True)
    if version is None:
        version = next_version(export_base)
    final = check_version(export_base, version, overwrite)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        if export_format == "litert":
            names = {}
            for variant, content in convert_litert(model, task, variants, representative,
                                                    length).items():
                names[variant] = f"model_{variant}.tflite"
                with open(os.path.join(tmp, names[variant]), "wb") as f:
                    f.write(content)
        else:
            names = convert_onnx(model, task, variants, tmp, length)
        extra = list(files(tmp)) if files is not None else []
        atomic_write_text(os.path.join(tmp, LABELS), "".join(f"{c}\n" for c in class_names))
        specs = graph_inputs(model, length)
        export_info = {
            "format": export_format,
            "task": task,
            "variants": {v: {"file": names[v], "bytes": os.path.getsize(os.path.join(tmp, f)),
                             "description": VARIANTS[export_format][v]}
                         for v, f in names.items()},
            "inputs": {s.name: f"{s.dtype.name} {_shape(s)}" for s in specs},
            "outputs": {"probabilities": f"float32 [batch, {len(class_names)}]"},
            "class_names": list(class_names),
            "files": [LABELS, *extra],
            "preprocessing": preprocessing,
            "versions": {**_versions(), **_runtime_versions(export_format)},
            **(info or {}),
        }
        atomic_write_text(os.path.join(tmp, EXPORT_INFO), json.dumps(export_info, indent=2))
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), default_mode())
        publish_folder(tmp, final)  # overwrite=True: the old one is moved aside first.
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _shape(spec):
    dims = spec.shape.as_list()
    return "[" + ", ".join("batch" if i == 0 and d is None else str(d)
                           for i, d in enumerate(dims)) + "]"


def _runtime_versions(export_format):
    from importlib import metadata

    packages = {"litert": ("ai-edge-litert",), "onnx": ("tf2onnx", "onnx", "onnxruntime")}
    found = {}
    for name in packages[export_format]:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def read_export_info(version_dir):
    """`export_info.json` of a LiteRT or ONNX version folder, as a dict."""
    path = os.path.join(version_dir, EXPORT_INFO)
    if not os.path.isfile(path):
        raise ExportError(f"{version_dir!r} has no {EXPORT_INFO}: not a LiteRT/ONNX export of "
                          "sft_keras.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# === Preprocessing a client must do (export_info.json's "preprocessing") ===


def text_preprocessing(preprocessor, example="The movie was good."):
    """The tokenizer constants of a keras-hub preprocessor, and the ids it gives `example`.

    Returns:
        `(preprocessing dict, write_files)`: `write_files(folder)` saves the
        tokenizer's vocabulary files (`tokenizer.save_assets`) and returns
        their names.
    """
    tokenizer = preprocessor.tokenizer
    options = {k: v for k, v in tokenizer.get_config().items()
               if k not in ("vocabulary", "merges", "proto", "name", "dtype", "trainable",
                            "config_file", "sequence_length")
               and isinstance(v, (str, int, float, bool, type(None), list))}
    special = {}
    for name in ("cls_token", "sep_token", "pad_token", "start_token", "end_token",
                 "oov_token", "mask_token"):
        token = getattr(tokenizer, name, None)
        if isinstance(token, str):
            special[name] = {"token": token, "id": int(tokenizer.token_to_id(token))}
    tokens = preprocessor([example])
    tokens = tokens[0] if isinstance(tokens, tuple) else tokens
    preprocessing = {
        "kind": "tokens",
        "tokenizer": type(tokenizer).__name__,
        "tokenizer_options": options,
        "special_tokens": special,
        "sequence_length": int(preprocessor.sequence_length),
        "truncate": getattr(preprocessor, "truncate", None),
        "layout": "the keras-hub preprocessor's: [CLS] text [SEP] (pairs: [CLS] a [SEP] b "
                  "[SEP], segment_ids 0 then 1), padded with the pad id to sequence_length; "
                  "padding_mask is 1 on real tokens",
        "example": {"text": example,
                    **{k: np.asarray(v)[0].tolist() for k, v in sorted(tokens.items())}},
    }

    def write_files(folder):
        before = set(os.listdir(folder))
        tokenizer.save_assets(folder)
        return sorted(set(os.listdir(folder)) - before)

    return preprocessing, write_files


def image_preprocessing(model, image_size):
    """What an image client does: decode to RGB, resize, feed pixels in [0, 255]."""
    scaling = []
    for layer in model._flatten_layers(include_self=False):
        if type(layer).__name__ in ("Rescaling", "ScaleOffset", "Normalization"):
            config = layer.get_config()
            scaling.append({"layer": type(layer).__name__, **{
                k: config[k] for k in ("scale", "offset", "mean", "variance") if k in config}})
    return {
        "kind": "pixels",
        "image_size": list(image_size),
        "color": "RGB, 3 channels (grayscale repeated, alpha dropped)",
        "resize": "bilinear (tf.image.resize), to exactly image_size; aspect ratio not kept",
        "pixel_range": [0.0, 255.0],
        "scaling_inside_graph": scaling or "the backbone's own (keras.applications)",
    }


# === A finished run (sft-export --format, sft-train's export.formats) ===


def export_run(run, export_format, export_dir=None, version=None, overwrite=False,
               variants=None, data=None):
    """Writes a finished run (`sft_keras.run.Run`) as a LiteRT or ONNX version folder.

    Args:
        run: a `sft_keras.run.Run` (`load_run`).
        export_format: str. `"litert"` or `"onnx"`.
        export_dir: str or None. The folder holding the versions; None means
            `<workdir>/export_<format>`.
        version, overwrite: as in `export_graph_format`.
        variants: tuple or None. None: the run's `export.<format>_variants`.
        data: the run's `load_data()` result, or None to read it when the
            `"int8"` LiteRT variant needs calibration examples.

    Returns:
        str. The written version folder.
    """
    config = run.config
    key = f"export.{export_format}_variants"
    variants = parse_variants(export_format, variants or config.export[f"{export_format}_variants"],
                              key="--variants" if variants else key)
    model = float32_model(run.model, lambda: run.modality.build_model(
        max(len(run.class_names), 1), pretrained=False))
    representative = None
    if export_format == "litert" and "int8" in variants:
        if data is None:
            data = load_run_data(run, "the 'int8' LiteRT variant's calibration")
        representative = calibration_examples(
            run.modality.make_dataset(data.train, cache=False),
            graph_inputs(model, config.data.sequence_length),
            config.export.calibration_examples)
    from sft_keras.training.distribute import resolved_precision

    if run.modality.name == "text":
        preprocessing, files = text_preprocessing(run.modality.preprocessor)
        preprocessing["text_columns"] = list(config.data.text_columns)
    else:
        preprocessing, files = image_preprocessing(model, config.data.image_size), None
    info = {"backbone": config.model.backbone, "preset": config.model.preset,
            "workdir": os.path.abspath(run.workdir),
            "checkpoint": os.path.basename(run.checkpoint),
            # runtime.precision='auto' as it resolves on this machine.
            "trained_precision": resolved_precision(config.runtime.precision),
            "exported_precision": "float32 (a float32 copy when trained in mixed precision)"}
    metrics = run.run_dir.read_metrics()
    if metrics is not None:
        info["metrics"] = metrics
    base = export_dir or run.run_dir.export_dir(export_format)
    return export_graph_format(export_format, model, base, run.class_names, run.task.name,
                               variants, preprocessing, files=files,
                               representative=representative, version=version,
                               overwrite=overwrite, info=info)


def load_run_data(run, purpose):
    """The run's data (`modality.load_data()`); an `ExportError` saying why it is needed."""
    from sft_keras.errors import SftError

    try:
        return run.modality.load_data()
    except SftError as e:
        raise ExportError(f"{purpose} reads the run's data (config.json's data.*), which "
                          f"failed: {e}") from None


def calibration_examples(dataset, specs, limit):
    """A LiteRT `representative_dataset`: up to `limit` examples of `dataset`, one at a time.

    Args:
        dataset: a batched `tf.data.Dataset` of `(inputs, labels)` (unshuffled:
            the first `limit` training examples).
        specs: the graph's `tf.TensorSpec`s (`graph_inputs`).
        limit: int. The most examples.
    """
    names = [s.name for s in specs]

    def representative():
        count = 0
        for inputs, _ in dataset:
            arrays = ({n: np.asarray(inputs[n]) for n in names} if isinstance(inputs, dict)
                      else {names[0]: np.asarray(inputs)})
            for i in range(len(next(iter(arrays.values())))):
                if count >= limit:
                    return
                yield {n: a[i : i + 1].astype(s.dtype.as_numpy_dtype)
                       for (n, a), s in zip(arrays.items(), specs)}
                count += 1

    return representative


def export_and_check_run(workdir, formats, data=None):
    """End of `sft-train` (`export.formats`): writes each LiteRT/ONNX format of the run's best
    checkpoint (rebuilt by `load_run`, so in float32) and checks them into report/exports.md.

    Returns:
        dict: format -> written version folder.
    """
    from absl import logging

    from sft_keras.evaluation.exports import check_run_exports, display_rows, format_table
    from sft_keras.run import load_run

    run = load_run(workdir)
    paths = {f: run.export(format=f, data=data) for f in formats if f != "saved_model"}
    rows, report = check_run_exports(run, list(paths.values()), data=data)
    drop = run.config.export.max_accuracy_drop
    logging.info("Exported %s; checked against Keras in %s:\n%s", paths, report,
                 format_table(display_rows(rows, workdir), drop))
    for r in rows:
        if r["flagged"]:
            logging.warning("%s %s: accuracy %.4f is more than export.max_accuracy_drop=%g "
                            "below Keras (%.4f).", r["format"], r["variant"], r["accuracy"],
                            drop, rows[0]["accuracy"])
    return paths
