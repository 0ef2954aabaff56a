"""LiteRT and ONNX files checked against the Keras model, with their own runtimes.

`check_exports` runs every exported file with the runtime a client would use
(`ai_edge_litert`'s interpreter for `.tflite`, `onnxruntime` for `.onnx`) on
the same inputs as the Keras model, and measures top-1 agreement with Keras,
the largest probability difference, accuracy, file size and CPU latency at
batch 1. `write_exports_report` keeps one table of every checked file in
`<report>/exports.md` (and `exports.json`); a variant whose accuracy is more
than `max_accuracy_drop` below the Keras float32 model's is flagged.
"""

import json
import os
import time

import numpy as np

from sft_keras.files import atomic_write_text

LATENCY_REPEATS = 30  # Timed runs at batch 1 (after 3 warm-up runs); the median is reported.
EVAL_BATCH = 32


def litert_predictor(path, num_threads=1):
    """A function `{input name: array}` -> probabilities, running `path` in LiteRT.

    Example:

    >>> import keras, tempfile
    >>> from sft_keras.serving.formats import export_graph_format
    >>> inputs = keras.Input((4, 4, 3))
    >>> outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    >>> model = keras.Model(inputs, outputs)
    >>> folder = export_graph_format("litert", model, tempfile.mkdtemp(), ["a", "b"],
    ...                              "classification", ("float32",), {})
    >>> predict = litert_predictor(os.path.join(folder, "model_float32.tflite"))
    >>> x = np.random.RandomState(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    >>> bool(np.allclose(predict({"images": x}), model(x), atol=1e-5))
    True
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    runner = interpreter.get_signature_runner()

    def predict(inputs):
        return np.asarray(runner(**inputs)["probabilities"], np.float32)

    return predict


def onnx_predictor(path, num_threads=1):
    """A function `{input name: array}` -> probabilities, running `path` in onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def predict(inputs):
        return np.asarray(session.run(["probabilities"], {n: inputs[n] for n in names})[0],
                          np.float32)

    return predict


PREDICTORS = {".tflite": litert_predictor, ".onnx": onnx_predictor}


def collect_inputs(dataset, names):
    """The `(inputs, labels)` of a batched dataset as `({name: array}, labels array)`."""
    parts, labels = {n: [] for n in names}, []
    for inputs, y in dataset:
        if not isinstance(inputs, dict):
            inputs = {names[0]: inputs}
        for n in names:
            parts[n].append(np.asarray(inputs[n]))
        labels.append(np.asarray(y))
    return {n: np.concatenate(v) for n, v in parts.items()}, np.concatenate(labels)


def keras_predictor(model, names, dtypes):
    """A function `{input name: array}` -> probabilities of a Keras model, as the graphs give.

    The model is called in a `tf.function` (as a served model would be).
    """
    import tensorflow as tf

    from sft_keras.serving.formats import probability_function

    specs = [tf.TensorSpec([None, *model.input[n].shape[1:]] if isinstance(model.input, dict)
                           else [None, *model.input.shape[1:]], d, name=n)
             for n, d in zip(names, dtypes)]
    task = "binary" if model.output.shape[-1] == 1 else "classification"
    function = tf.function(probability_function(model, task, specs), input_signature=specs)

    def predict(inputs):
        return function(*[inputs[n] for n in names])["probabilities"].numpy()

    return predict


def _batched(predict, inputs, batch=EVAL_BATCH):
    count = len(next(iter(inputs.values())))
    return np.concatenate([predict({n: a[i : i + batch] for n, a in inputs.items()})
                           for i in range(0, count, batch)])


def latency_ms(predict, inputs, repeats=LATENCY_REPEATS):
    """Median milliseconds of `predict` on the first example (batch 1), after 3 warm-up runs."""
    one = {n: a[:1] for n, a in inputs.items()}
    for _ in range(3):
        predict(one)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(one)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def check_exports(keras_predict, files, inputs, labels, max_accuracy_drop=0.01,
                  latency=True):
    """Runs every file and the Keras model on `inputs`; returns one row (dict) per model.

    Args:
        keras_predict: the reference, `{name: array}` -> probabilities
            (`keras_predictor`).
        files: list of `(format, variant, path)`.
        inputs: dict of arrays (`collect_inputs`).
        labels: int class ids (or 0/1 for binary), one per example.
        max_accuracy_drop: float. A file whose accuracy is more than this
            below the Keras model's is `flagged`.
        latency: bool. Measure CPU latency at batch 1.

    Returns:
        list of dict: `format`, `variant`, `path`, `bytes`, `agreement`
        (top-1 agreement with Keras), `max_prob_diff`, `accuracy`,
        `latency_ms`, `flagged`; the Keras row first (`format` "keras").
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    reference = _batched(keras_predict, inputs)
    top1 = reference.argmax(-1)
    base_accuracy = float(np.mean(top1 == labels))
    rows = [{"format": "keras", "variant": "float32 (reference)", "path": "", "bytes": None,
             "agreement": 1.0, "max_prob_diff": 0.0, "accuracy": base_accuracy,
             "latency_ms": latency_ms(keras_predict, inputs) if latency else None,
             "flagged": False, "num_examples": int(len(labels))}]
    for export_format, variant, path in files:
        predict = PREDICTORS[os.path.splitext(path)[1]](path)
        probabilities = _batched(predict, inputs)
        accuracy = float(np.mean(probabilities.argmax(-1) == labels))
        rows.append({
            "format": export_format, "variant": variant, "path": path,
            "bytes": os.path.getsize(path),
            "agreement": float(np.mean(probabilities.argmax(-1) == top1)),
            "max_prob_diff": float(np.max(np.abs(probabilities - reference))),
            "accuracy": accuracy,
            "latency_ms": latency_ms(predict, inputs) if latency else None,
            "flagged": base_accuracy - accuracy > max_accuracy_drop,
            "num_examples": int(len(labels)),
        })
    return rows


def format_table(rows, max_accuracy_drop=0.01):
    """The rows of `check_exports` as a Markdown table.

    Example:

    >>> print(format_table([{"format": "onnx", "variant": "int8", "path": "m.onnx",
    ...     "bytes": 2048, "agreement": 0.98, "max_prob_diff": 0.031, "accuracy": 0.9,
    ...     "latency_ms": 1.25, "flagged": True, "num_examples": 50}], 0.01))
    | format | variant | file | size | top-1 agreement | max prob diff | accuracy | latency (ms, batch 1) | flag |
    |---|---|---|---|---|---|---|---|---|
    | onnx | int8 | m.onnx | 2.0 KiB | 0.9800 | 0.0310 | 0.9000 | 1.25 | accuracy drop > 0.01 |
    """
    lines = ["| format | variant | file | size | top-1 agreement | max prob diff | accuracy "
             "| latency (ms, batch 1) | flag |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = "" if r["bytes"] is None else _size(r["bytes"])
        latency = "" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}"
        flag = f"accuracy drop > {max_accuracy_drop:g}" if r["flagged"] else ""
        lines.append(f"| {r['format']} | {r['variant']} | {r['path']} | {size} | "
                     f"{r['agreement']:.4f} | {r['max_prob_diff']:.4f} | {r['accuracy']:.4f} | "
                     f"{latency} | {flag} |")
    return "\n".join(lines)


def _size(n):
    return f"{n / 2 ** 20:.2f} MiB" if n >= 2 ** 20 else f"{n / 1024:.1f} KiB"


def write_exports_report(report_dir, rows, max_accuracy_drop=0.01, workdir=None):
    """Writes `exports.md` and `exports.json` to `report_dir`: every file checked so far.

    Rows of files checked before (in `exports.json`) are kept unless the
    same file was checked again or no longer exists; the Keras row is the
    latest. Paths are shown relative to `workdir` when inside it.

    Returns:
        str. The path of `exports.md`.
    """
    json_path = os.path.join(report_dir, "exports.json")
    old = []
    if os.path.isfile(json_path):
        with open(json_path, encoding="utf-8") as f:
            old = json.load(f).get("rows", [])
    new_paths = {r["path"] for r in rows}
    kept = [r for r in old if r["format"] != "keras" and r["path"] not in new_paths
            and os.path.exists(r["path"])]
    merged = rows[:1] + sorted(kept + rows[1:], key=_row_order)
    shown = display_rows(merged, workdir)
    flagged = [r for r in shown if r["flagged"]]
    text = ["# Exported files checked against the Keras model", "",
            f"{merged[0]['num_examples']} validation examples; latency: median of "
            f"{LATENCY_REPEATS} runs at batch 1 on one CPU thread (noisy on a shared machine). "
            f"Flagged: accuracy more than {max_accuracy_drop:g} below the Keras float32 model.",
            "", format_table(shown, max_accuracy_drop), ""]
    if flagged:
        text.append("Flagged: " + ", ".join(f"{r['format']} {r['variant']}" for r in flagged))
        text.append("")
    os.makedirs(report_dir, exist_ok=True)
    atomic_write_text(json_path, json.dumps({"max_accuracy_drop": max_accuracy_drop,
                                             "rows": merged}, indent=2) + "\n")
    path = os.path.join(report_dir, "exports.md")
    atomic_write_text(path, "\n".join(text))
    return path


def _row_order(row):
    from sft_keras.serving.formats import FORMATS, VARIANTS

    variants = list(VARIANTS.get(row["format"], ()))
    return (FORMATS.index(row["format"]) if row["format"] in FORMATS else len(FORMATS),
            os.path.dirname(row["path"]),
            variants.index(row["variant"]) if row["variant"] in variants else len(variants))


def display_rows(rows, workdir):
    """`rows` with each path relative to `workdir` when inside it."""
    return [dict(r, path=_relative(r["path"], workdir)) for r in rows]


def _relative(path, workdir):
    if path and workdir and os.path.abspath(path).startswith(os.path.abspath(workdir) + os.sep):
        return os.path.relpath(path, workdir)
    return path


def check_run_exports(run, folders, data=None, latency=True):
    """Checks the LiteRT/ONNX version folders of a run on its validation split; writes the report.

    Args:
        run: `sft_keras.run.Run`.
        folders: list of version folders written by `sft_keras.serving.formats.export_run`.
        data: the run's `load_data()` result, or None to read it.
        latency: bool. Measure latency at batch 1.

    Returns:
        `(rows, report path)`.
    """
    from sft_keras.serving.formats import float32_model, graph_inputs, load_run_data
    from sft_keras.serving.formats import read_export_info

    if data is None:
        data = load_run_data(run, "Checking the exports on the validation split")
    model = float32_model(run.model, lambda: run.modality.build_model(
        max(len(run.class_names), 1), pretrained=False))
    specs = graph_inputs(model, run.config.data.sequence_length)
    names = [s.name for s in specs]
    inputs, labels = collect_inputs(run.modality.make_dataset(data.validation, cache=False),
                                    names)
    inputs = {s.name: inputs[s.name].astype(s.dtype.as_numpy_dtype) for s in specs}
    files = []
    for folder in folders:
        info = read_export_info(folder)
        for variant, entry in info["variants"].items():
            files.append((info["format"], variant, os.path.join(folder, entry["file"])))
    drop = run.config.export.max_accuracy_drop
    rows = check_exports(keras_predictor(model, names, [s.dtype for s in specs]), files, inputs,
                         labels, drop, latency=latency)
    path = write_exports_report(run.run_dir.report, rows, drop, workdir=run.workdir)
    return rows, path
