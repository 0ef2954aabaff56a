"""Predict with an exported SavedModel: the sft-predict command.

Usage:

    sft-predict --model=/tmp/sft_run/export --input=photos/ --output=predictions.jsonl
    sft-predict --model=/tmp/sft_run/export/2 --input=reviews.csv --text_column=review

Loads the SavedModel with `tf.saved_model.load` (the same graph TF Serving
runs; no Keras model is rebuilt) and reads `assets.extra/export_info.json`
for the modality and inputs. `--model` is a version folder or the export
base (its highest version is used). Inputs:

- image exports: an image file, or a folder searched recursively for
  .jpg/.jpeg/.png/.gif/.bmp files (sorted paths);
- text exports: a CSV/TSV/JSONL file (the text column is the one the model
  was trained on, or `--text_column`; `a,b` for sentence pairs), or a `.txt`
  file with one text per line (blank lines skipped).

Writes one JSON object per line to `--output` (or stdout):
`{"input": ..., "label": ..., "probabilities": [...]}`,
`{"input": ..., "prediction": ...}` for regression, or
`{"input": ..., "replies": [...], "scores": [...]}` for a retrieval chatbot. A progress bar goes to
stderr for more than one batch.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from sft_keras.errors import DataError, ExportError  # noqa: E402
from sft_keras.serving.export import read_export_info, resolve_export  # noqa: E402, F401


def list_images(path):
    """Returns the image files of `path`: itself, or those under it (recursively, sorted)."""
    from sft_keras.data.images import IMAGE_EXTENSIONS

    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"--input does not exist. Received: {path!r}")
    files = sorted(
        os.path.join(root, name)
        for root, dirs, names in os.walk(path)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    )
    if not files:
        raise DataError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {path!r}.")
    return files


def read_texts(path, columns=("text",)):
    """Reads the texts to predict: a `.txt` file (one per line) or a CSV/TSV/JSONL table.

    Tables are read by `sft_keras.data.text.read_text_columns`, with the
    checks of the training data (errors name the file, the line and the
    column, `--text_column`), except that an empty text is predicted, not
    an error. Other columns are ignored.

    Args:
        path: str. The file.
        columns: tuple of 1 column name, or 2 for sentence pairs (tables only).

    Returns:
        list of tuples of str (one element, or two for pairs).

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "texts.jsonl")
    >>> _ = open(path, "w").write('{"text": "great"}\\n{"text": "awful", "id": 7}\\n')
    >>> read_texts(path)
    [('great',), ('awful',)]
    """
    from sft_keras.data.text import TEXT_TABLE_EXTENSIONS, read_text_columns

    if not os.path.isfile(path):
        raise DataError(f"--input does not exist or is not a file. Received: {path!r}")
    extension = os.path.splitext(path)[1].lower()
    if extension in TEXT_TABLE_EXTENSIONS:
        return read_text_columns(path, columns, key="--text_column", allow_empty=True)
    if extension != ".txt":
        raise DataError(
            f"Cannot tell the format of {path!r} from its extension. Accepted: .txt (one text "
            f"per line), {', '.join(TEXT_TABLE_EXTENSIONS)} (tables)."
        )
    if len(columns) != 1:
        raise DataError(f"This model takes text pairs: give a table with columns "
                        f"{list(columns)}, not a .txt file. Received: {path!r}")
    with open(path, encoding="utf-8", errors="strict", newline="") as f:
        try:
            content = f.read()
        except UnicodeDecodeError as e:
            raise DataError(f"{path!r} is not UTF-8 text ({e}).") from None
    return [(line,) for line in content.splitlines() if line.strip()]


def predict_file(model_path, input_path, batch_size=32, text_column=None, progress=False):
    """Predicts every input of `input_path` with an export; yields one dict per input.

    Args:
        model_path: str. A version folder, or an export base (highest version).
        input_path: str. Image file or folder (image exports); .txt or
            CSV/TSV/JSONL file (text exports).
        batch_size: int. Inputs per call of the `serving_default` signature.
        text_column: str or None. Column(s) of a table, `"a,b"` for pairs;
            None: the columns the model was trained on (from export_info).
        progress: bool. Show a progress bar on stderr (more than one batch).

    Yields:
        dict: `input` (path or text; a list for pairs), then `label` and
        `probabilities`, `prediction` for regression, `labels` (a list)
        and `probabilities` for multilabel, or `replies` and `scores` (lists,
        best first) for retrieval.
    """
    import tensorflow as tf

    from sft_keras.modalities import modality_of_export

    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"--batch_size must be a positive integer. Received: {batch_size!r}")
    version_dir = resolve_export(model_path)
    info = read_export_info(version_dir)
    inputs = modality_of_export(info, f"export_info.json of {version_dir!r}").prediction_inputs(
        info, input_path, text_column)
    items = inputs.items
    if info.get("requires_tensorflow_text"):  # Registers the ops of a BPE/SentencePiece tokenizer.
        try:
            import tensorflow_text  # noqa: F401
        except ImportError as e:
            raise ExportError(f"{version_dir!r} needs tensorflow-text ops (export_info.json: "
                              f"{info.get('tensorflow_text_reason', '')}); install "
                              f"tensorflow-text. ({e})") from None
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]  # After input checks.
    bar = _progress_bar(len(items)) if progress and len(items) > batch_size else None
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        feed, shown = inputs.feed(batch), [inputs.show(item) for item in batch]
        outputs = {k: v.numpy() for k, v in serve(**feed).items()}
        for i, item in enumerate(shown):
            record = {"input": item}
            if "prediction" in outputs:
                record["prediction"] = float(outputs["prediction"][i])
            elif "replies" in outputs:  # Retrieval: the best replies of the bank, best first.
                record["replies"] = [r.decode("utf-8") for r in outputs["replies"][i]]
                record["scores"] = [round(float(s), 6) for s in outputs["scores"][i]]
            elif "labels" in outputs:  # Multilabel: every label over its threshold.
                joined = outputs["labels"][i].decode("utf-8")
                record["labels"] = joined.split(info["label_separator"]) if joined else []
                record["probabilities"] = [float(p) for p in outputs["probabilities"][i]]
            else:
                record["label"] = outputs["label"][i].decode("utf-8")
                record["probabilities"] = [float(p) for p in outputs["probabilities"][i]]
            if "valid" in outputs:
                record["valid"] = bool(outputs["valid"][i])
            yield record
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()


def _progress_bar(total):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="input", file=sys.stderr, dynamic_ncols=True)
