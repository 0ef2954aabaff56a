"""Text examples: from a CSV/TSV/JSONL file, a class-per-folder tree, TFDS, or chatterbot-corpus.

Reading and checking happen here, before training: every problem (a missing
column, an empty text, an unknown label, bytes that are not UTF-8, a TFDS
dataset that is not prepared) is reported with the file and line, or the
dataset and split, and the value at fault. `pipeline.py` tokenizes the
checked examples into tf.data datasets.

Nothing here touches the network unless asked: TFDS datasets are read from
a local `data_dir` and are only downloaded with `download=True`
(`--config.data.tfds_download=True`).
"""

import csv
import dataclasses
import difflib
import importlib.util
import io
import json
import math
import os
import re

import numpy as np

from sft_keras.data.folders import list_class_files
from sft_keras.data.labels import check_class_count, encode_multilabel
from sft_keras.data.split import limit_examples, split_examples
from sft_keras.errors import ConfigError, DataError
from sft_keras.tasks import TASKS

TEXT_SOURCES = ("text_file", "text_folder", "tfds", "chatterbot")  # `data.source` values.
# Extension -> format of `read_text_table`.
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
TEXT_TABLE_EXTENSIONS = tuple(TABLE_FORMATS)
TEXT_FILE_EXTENSION = ".txt"  # Files of a `read_text_folder` class folder.


@dataclasses.dataclass
class TextExamples:
    """A list of labelled texts or text pairs.

    Args:
        texts: numpy object array of str: `[n]` for single texts, or `[n, 2]`
            for sentence pairs (e.g. premise and hypothesis).
        labels: array `[n]`: int32 class indices, or float32 targets for
            `task="regression"`.
        class_names: list of str, in class-index order (empty for regression).

    Example:

    >>> import numpy as np
    >>> examples = TextExamples(np.array(["good", "bad", "fine"], object),
    ...                         np.array([1, 0, 1], np.int32), ["neg", "pos"])
    >>> len(examples)
    3
    >>> examples.subset([2, 0]).texts.tolist()
    ['fine', 'good']
    """

    texts: np.ndarray
    labels: np.ndarray
    class_names: list

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        """Returns the examples at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.intp)
        return TextExamples(self.texts[indices], self.labels[indices], self.class_names)


@dataclasses.dataclass
class TextData:
    """Examples and class names for one run, split into train and validation."""

    train: TextExamples
    validation: TextExamples
    class_names: list


# --- Shared checks --------------------------------------------------------------


def _check_task(task):
    if task not in TASKS:
        raise ConfigError(
            "task must be one of " + ", ".join(repr(t) for t in TASKS)
            + f". Received: task={task!r}"
        )


def _check_text_columns(columns, key):
    """Returns `columns` as a tuple of 1 or 2 names; a single str counts as one name."""
    if isinstance(columns, str):
        columns = (columns,)
    columns = tuple(columns) if isinstance(columns, (tuple, list)) else None
    if (
        columns is None
        or len(columns) not in (1, 2)
        or not all(isinstance(c, str) and c for c in columns)
    ):
        raise ConfigError(
            f"{key} must name 1 text column, or 2 for sentence pairs, e.g. ('text',) or "
            f"('sentence1', 'sentence2'). Received: {key}={columns!r}"
        )
    return columns


def _decode_utf8(raw, path):
    # utf-8-sig: a byte-order mark (Notepad, Excel's "CSV UTF-8") is not part of the text.
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at offset "
            f"{e.start}). Save the file as UTF-8."
        ) from None


def _texts_array(rows):
    """`rows`: list of tuples of 1 or 2 str -> object array `[n]` or `[n, 2]`."""
    width = len(rows[0]) if rows else 1
    texts = np.empty((len(rows), width), dtype=object)
    for i, row in enumerate(rows):
        texts[i, :] = row
    return texts[:, 0] if width == 1 else texts


def _encode_labels(raw_labels, task, class_names, where, label_name):
    """`raw_labels`: list of (location, label str) -> (labels array, class names).

    `where(location)` gives the text that starts an error message, e.g. 'file.csv:3'.
    """
    if task == "regression":
        labels = []
        for location, label in raw_labels:
            try:
                value = float(label)
                if not math.isfinite(value):
                    raise ValueError(label)  # nan/inf would make the loss nan.
            except ValueError:
                raise DataError(
                    f"{where(location)}: task='regression' needs a finite numeric label. "
                    f"Received: {label_name}={label!r}"
                ) from None
            labels.append(value)
        return np.asarray(labels, np.float32), []
    if class_names is None:
        class_names = sorted({label for _, label in raw_labels})
    index = {name: i for i, name in enumerate(class_names)}
    labels = []
    for location, label in raw_labels:
        if label not in index:
            raise DataError(
                f"{where(location)}: label {label!r} was never seen in training. "
                f"Known labels: {list(class_names)}."
            )
        labels.append(index[label])
    return np.asarray(labels, np.int32), list(class_names)


# --- CSV / TSV / JSON lines -----------------------------------------------------


def read_text_table(path, text_columns=("text",), label_column="label", task="classification",
                    class_names=None, label_separator="|"):
    """Reads a table of texts and labels: CSV, TSV or JSON lines, chosen by extension.

    * `.csv`: comma-separated, with a header row; fields holding commas,
      quotes or newlines are quoted the usual way (`"say ""hi"", then go"`).
    * `.tsv`, `.tab`: tab-separated, with a header row, and no quoting at
      all: a `"` is an ordinary character, as in GLUE/SST-2 files, so a text
      cannot contain a tab or a newline.
    * `.jsonl`, `.json`: one JSON object per line (JSON lines); blank lines
      are skipped. Labels may be strings or numbers (`1` and `"1"` are the
      same class).

    Texts are stripped of leading and trailing whitespace. A row whose text
    is empty or only whitespace is an error (not silently skipped), naming
    the file and line, so that a shifted column or a broken export is
    noticed; so is an empty label, and a CSV/TSV row with more or fewer
    fields than the header.

    Args:
        path: str. The file.
        text_columns: tuple of 1 column name, or 2 for sentence pairs
            (`data.text_columns`).
        label_column: str. Column holding labels: class names, or numbers for
            `task="regression"`.
        task: str. `"classification"`, `"binary"`, `"regression"` or
            `"multilabel"` (a label cell holds labels joined by
            `label_separator`, or in JSON lines a JSON list; labels become
            float32 multi-hot vectors `[n, num_classes]`).
        class_names: list of str or None. For a validation file: the training
            classes; any other label is an error naming the line. None: the
            class names are the sorted distinct labels, as strings (`"0"`,
            `"1"`, ... for numeric labels; note `"10"` sorts before `"2"`).
        label_separator: str. Separates the labels of a cell (`"a|c"`), for
            `task="multilabel"`.

    Returns:
        `TextExamples`; `texts` is `[n]`, or `[n, 2]` for two text columns.

    Raises:
        DataError: the file is missing, empty, not UTF-8, has an unknown
            extension, lacks a column, or holds a bad row (message names the
            file and line, and the value received).
        ConfigError: `text_columns` does not name 1 or 2 columns.
    """
    return _read_table(path, text_columns, label_column, task, class_names, "data.text_columns",
                       label_separator)


def read_text_columns(path, columns=("text",), key="data.text_columns", allow_empty=False):
    """Reads the text column(s) of a CSV, TSV or JSON lines table, without labels.

    The parsing and checks of `read_text_table` (format by extension, UTF-8,
    a header row with every column, field counts, one JSON object per
    line), for a table whose other columns do not matter, such as the
    inputs of `sft-predict`.

    Args:
        path: str. The file: `.csv`, `.tsv`/`.tab` or `.jsonl`/`.json`.
        columns: tuple of 1 column name, or 2 for sentence pairs.
        key: str. What names `columns` in error messages: the config key or
            the flag, e.g. `"--text_column"`.
        allow_empty: bool. Keep an empty text (or a JSON `null`) as `""`
            instead of raising.

    Returns:
        list of tuples of str (one, or two for pairs), stripped of leading
        and trailing whitespace, in file order.

    Raises:
        DataError: as `read_text_table` does, naming the file and line.
        ConfigError: `columns` does not name 1 or 2 columns.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "texts.tsv")
    >>> _ = open(path, "w").write("id\\ttext\\n1\\tgreat film\\n2\\t awful \\n")
    >>> read_text_columns(path)
    [('great film',), ('awful',)]
    """
    columns = _check_text_columns(columns, key)
    path, rows = _table_rows(path, columns, None, key)
    return [_row_texts(path, line, columns, values, allow_empty) for line, values, _ in rows]


def _read_table(path, text_columns, label_column, task, class_names, columns_key,
                label_separator="|"):
    _check_task(task)
    text_columns = _check_text_columns(text_columns, columns_key)
    path, rows = _table_rows(path, text_columns, label_column, columns_key)
    texts, raw_labels = [], []
    for line, values, label in rows:
        texts.append(_row_texts(path, line, text_columns, values))
        if isinstance(label, tuple):  # A JSON list.
            if task != "multilabel":
                raise DataError(
                    f"{path}:{line}: label must be a string or a number (a list of labels "
                    f"needs task='multilabel'). Received: {label_column}={list(label)!r}"
                )
            if not label:
                raise DataError(f"{path}:{line}: empty {label_column!r} list.")
        elif label is None or label.strip() == "":
            raise DataError(f"{path}:{line}: empty {label_column!r} value.")
        raw_labels.append((line, label if isinstance(label, tuple) else label.strip()))
    where = lambda line: f"{path}:{line}"  # noqa: E731
    if task == "multilabel":
        labels, class_names = encode_multilabel(
            raw_labels, class_names, where, label_column, label_separator
        )
    else:
        labels, class_names = _encode_labels(raw_labels, task, class_names, where, label_column)
    return TextExamples(_texts_array(texts), labels, class_names)


def _table_rows(path, text_columns, label_column, columns_key):
    """Returns `(path, rows)`: rows of `(line, text values, label)`; label None without a column."""
    path = os.fspath(path)
    fmt = TABLE_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise DataError(
            f"Cannot tell the format of text file {path!r} from its extension. Accepted "
            f"extensions: {', '.join(TEXT_TABLE_EXTENSIONS)} (CSV, TSV, JSON lines)."
        )
    if not os.path.isfile(path):
        raise DataError(f"Text file not found. Received: {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise DataError(f"Text file {path!r} is empty.")
    text = _decode_utf8(raw, path)
    if fmt == "jsonl":
        rows = _jsonl_rows(text, path, text_columns, label_column, columns_key)
    else:
        rows = _delimited_rows(text, path, fmt, text_columns, label_column, columns_key)
    if not rows:
        raise DataError(f"Text file {path!r} has no data rows.")
    return path, rows


def _row_texts(path, line, text_columns, values, allow_empty=False):
    """The stripped texts of one row; an empty one is an error unless `allow_empty`."""
    for column, value in zip(text_columns, values):
        if not allow_empty and (value is None or value.strip() == ""):
            raise DataError(
                f"{path}:{line}: empty text in column {column!r}. Fill it in or remove the row."
            )
    return tuple((v or "").strip() for v in values)


def _columns_to_find(text_columns, label_column, columns_key):
    # (key naming it in messages, column) for each column a row must have.
    pairs = [(columns_key, c) for c in text_columns]
    if label_column is not None:
        pairs.append(("data.label_column", label_column))
    return pairs


def _missing_column_error(path, column, key, columns, line=None):
    if line is None:  # CSV/TSV: the header lacks the column.
        return DataError(
            f"Text file {path!r} has no column {column!r} ({key}). Columns found: {columns}."
        )
    return DataError(f"{path}:{line}: no key {column!r} ({key}). Keys found: {columns}.")


def _delimited_rows(text, path, fmt, text_columns, label_column, columns_key):
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"Text file {path!r} is empty.")
        for key, column in _columns_to_find(text_columns, label_column, columns_key):
            if column not in header:
                raise _missing_column_error(path, column, key, header)
        positions = [header.index(c) for c in text_columns]
        label_position = None if label_column is None else header.index(label_column)
        rows = []
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:  # A blank line.
                continue
            if len(row) != len(header):
                spans = (
                    f" (one record spanning lines {start}-{end}: an unbalanced quote?)"
                    if end > start else ""
                )
                hint = (
                    "A text may not contain a tab in a TSV file."
                    if fmt == "tsv"
                    else 'Quote fields that contain commas: "like, this".'
                )
                raise DataError(
                    f"{path}:{end}: {len(row)} field(s), but the header has {len(header)} "
                    f"({header}){spans}. {hint}"
                )
            label = None if label_position is None else row[label_position]
            rows.append((end, [row[p] for p in positions], label))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({e}).") from None
    return rows


def _jsonl_rows(text, path, text_columns, label_column, columns_key):
    rows = []
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        hint = (
            " The file must hold one JSON object per line (JSON lines), not one JSON array."
            if content.lstrip().startswith("[") else ""
        )
        try:
            record = json.loads(content)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{line}: malformed JSON ({e.msg}, column {e.colno}).{hint}"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{line}: expected a JSON object. Received: {content.strip()[:80]!r}.{hint}"
            )
        for key, column in _columns_to_find(text_columns, label_column, columns_key):
            if column not in record:
                raise _missing_column_error(path, column, key, list(record), line)
        values = []
        for column in text_columns:
            value = record[column]
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{path}:{line}: text column {column!r} must hold a string. "
                    f"Received: {column}={value!r}"
                )
            values.append(value)
        if label_column is None:
            rows.append((line, values, None))
            continue
        label = record[label_column]
        if isinstance(label, list) and all(isinstance(v, (str, int)) for v in label):
            rows.append((line, values, tuple(str(v) for v in label)))  # Multi-label.
            continue
        if isinstance(label, (list, dict)):
            raise DataError(
                f"{path}:{line}: label must be a string or a number. "
                f"Received: {label_column}={label!r}"
            )
        rows.append((line, values, None if label is None else str(label)))
    return rows


# --- A folder of .txt files per class -------------------------------------------


def read_text_folder(path, class_names=None):
    """Reads a folder holding one subfolder per class, with one `.txt` file per example.

    Each file's whole content (UTF-8, stripped of leading and trailing
    whitespace, `\\r\\n` read as `\\n`) is one example. Files in visible
    subfolders of a class folder count too. Skipped, with a log line: hidden
    files and folders (`.DS_Store`, `._*`, `.ipynb_checkpoints/`), `Thumbs.db`
    and `desktop.ini`, and files outside the class folders (a `README.txt`
    beside them); see `sft_keras.data.folders.list_class_files`.

    Args:
        path: str. The folder. Subfolder names are the class names, sorted.
        class_names: list of str or None. For a validation folder: the
            training classes; a subfolder outside them is an error.

    Returns:
        `TextExamples` with texts `[n]`, sorted by class, then by file path.

    Raises:
        DataError: the folder is missing or has no class subfolders; a class
            folder has no `.txt` file; a file is not `.txt`, is empty (or
            only whitespace), or is not UTF-8; or a class is not among
            `class_names`. The message names the folder or file.
    """
    class_names, files_by_class = list_class_files(
        path, class_names, kind="Text", example="001" + TEXT_FILE_EXTENSION
    )
    texts, labels = [], []
    for name, class_dir, files in files_by_class:
        for file_path in files:
            if not file_path.lower().endswith(TEXT_FILE_EXTENSION):
                raise DataError(
                    f"File {file_path!r} in text folder {path!r} is not a "
                    f"{TEXT_FILE_EXTENSION} file. Every example must be a UTF-8 "
                    f"{TEXT_FILE_EXTENSION} file; move or remove it."
                )
        if not files:
            raise DataError(
                f"Class folder {class_dir!r} has no {TEXT_FILE_EXTENSION} files; "
                f"remove it or add examples."
            )
        for file_path in files:
            with open(file_path, "rb") as f:
                content = _decode_utf8(f.read(), file_path).replace("\r\n", "\n").strip()
            if not content:
                raise DataError(
                    f"Text file {file_path!r} is empty (or only whitespace). "
                    f"Remove it or fill it in."
                )
            texts.append((content,))
            labels.append(class_names.index(name))
    return TextExamples(_texts_array(texts), np.asarray(labels, np.int32), list(class_names))


# --- TensorFlow Datasets --------------------------------------------------------


def _tfds_builder(tfds, name, data_dir, download):
    from tensorflow_datasets.core import naming

    try:
        dataset_name, _ = naming.parse_builder_name_kwargs(name)
    except ValueError:
        raise DataError(
            f"Not a TFDS dataset name: data.tfds_name={name!r}. Expected "
            f"'name', 'name/config' or 'name/config:version', e.g. 'imdb_reviews' or 'glue/sst2'."
        ) from None
    if dataset_name.namespace and not download:
        # Namespaced builders (huggingface:, kaggle:, community) are resolved over the
        # network by tfds.builder itself, before any data is read.
        raise DataError(
            f"TFDS dataset {name!r} is in namespace {dataset_name.namespace!r}, which TFDS "
            f"resolves over the network; it cannot be used with data.tfds_download=False. "
            f"Set --config.data.tfds_download=True on a machine with network access."
        )
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(str(dataset_name), known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = repr(data_dir) if data_dir else "the default data_dir (~/tensorflow_datasets)"
        raise DataError(
            f"Unknown TFDS dataset: data.tfds_name={name!r}. tensorflow-datasets "
            f"{tfds.__version__} has no builder of that name, and {where} holds no prepared "
            f"dataset of that name.{hint} `tfds.list_builders()` lists the known names."
        ) from None
    except (ValueError, AssertionError) as e:  # Unknown config or version.
        message = " ".join(str(e).split())
        # TFDS 4.9 announces a list of close config names but prints none: list them all.
        message = re.sub(r"Here are \d+ BuilderConfigs whose name closely match:?$", "", message)
        message = message.rstrip(":. ")
        try:
            configs = [c.name for c in tfds.builder_cls(str(dataset_name)).BUILDER_CONFIGS]
        except Exception:  # pylint: disable=broad-except  # Only a hint.
            configs = []
        if configs:
            message += f". Configs of {str(dataset_name)!r}: {configs}"
        raise DataError(f"Cannot use TFDS dataset data.tfds_name={name!r}: {message}.") from None


def _tfds_is_prepared(builder):
    import tensorflow as tf

    return tf.io.gfile.exists(os.path.join(os.fspath(builder.data_dir), "dataset_info.json"))


def _tfds_text_keys(features, text_keys, name):
    from tensorflow_datasets import features as tfds_features

    available = {k: type(f).__name__ for k, f in features.items()}
    if text_keys == ("text",) and "text" not in features:
        text_features = [k for k, f in features.items() if isinstance(f, tfds_features.Text)]
        if len(text_features) == 1:
            return (text_features[0],)
    for key in text_keys:
        if key not in features:
            raise DataError(
                f"TFDS dataset {name!r} has no feature {key!r} (data.text_columns). "
                f"Features available: {available}."
            )
    return text_keys


def _as_str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def load_tfds_text(name, data_dir, split, text_keys=("text",), label_key="label",
                   task="classification", class_names=None, download=False):
    """Reads one split of a TensorFlow Datasets text dataset as `TextExamples`.

    The dataset is read from `data_dir` (`<data_dir>/<name>/<config>/<version>/`,
    as written by `tfds build`). With `download=False` (the default) nothing
    is downloaded or written: a dataset that is not prepared there is an
    error saying how to prepare it. Datasets prepared elsewhere can be used
    even without their builder code: TFDS reads them from their files.

    Texts are used as stored (not stripped; an empty text is kept). The class
    names come from the label feature's `names` when it is a
    `tfds.features.ClassLabel`, in the feature's index order (not re-sorted);
    otherwise they are the sorted distinct label values, as strings.

    Args:
        name: str. A TFDS name: `'imdb_reviews'`, `'glue/sst2'`,
            `'glue/mrpc:2.0.0'`.
        data_dir: str or None. The TFDS data folder; empty or None: TFDS's
            default (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        split: str. A split or TFDS split expression: `'train'`, `'test'`,
            `'train[:10%]'`.
        text_keys: tuple of 1 feature name, or 2 for sentence pairs. The
            default `('text',)` falls back to the dataset's only
            `tfds.features.Text` feature when it has another name (e.g.
            `'sentence'` in `glue/sst2`).
        label_key: str. The label feature.
        task: str. `"classification"`, `"binary"` or `"regression"`
            (needs a numeric, non-`ClassLabel` label feature).
        class_names: list of str or None. For a validation split: the
            training classes; any other label is an error.
        download: bool. Download and prepare the dataset into `data_dir` when
            it is not prepared there (needs network access).

    Returns:
        `TextExamples`; `texts` is `[n]`, or `[n, 2]` for two text keys.

    Raises:
        DataError: unknown dataset, config or split; dataset not prepared
            (and `download=False`); missing feature; unlabelled examples
            (label -1, as in GLUE test splits); or a label outside
            `class_names`.
    """
    import tensorflow_datasets as tfds

    _check_task(task)
    text_keys = _check_text_columns(text_keys, "data.text_columns")
    if not name:
        raise ConfigError(
            f"data.tfds_name must name a TFDS dataset when data.source='tfds', e.g. "
            f"'imdb_reviews' or 'glue/sst2'. Received: data.tfds_name={name!r}"
        )
    data_dir = os.fspath(data_dir) if data_dir else None
    builder = _tfds_builder(tfds, name, data_dir, download)
    features = builder.info.features
    text_keys = _tfds_text_keys(features, text_keys, name)
    label_feature = _tfds_label_feature(tfds, features, label_key, name, task)
    _tfds_prepare(builder, name, data_dir, download)
    columns = _tfds_columns(tfds, builder, name, split, text_keys + (label_key,))
    where = f"TFDS dataset {name!r} split {split!r}"
    texts = _tfds_texts(columns, text_keys, features, where)
    labels, class_names = _tfds_labels(columns[label_key], label_feature, task, class_names,
                                       where, label_key)
    return TextExamples(texts, labels, class_names)


def _tfds_label_feature(tfds, features, label_key, name, task):
    """The label feature; a `ClassLabel` for classification, a number for regression."""
    if label_key not in features:
        available = {k: type(f).__name__ for k, f in features.items()}
        raise DataError(
            f"TFDS dataset {name!r} has no feature {label_key!r} (data.label_column). "
            f"Features available: {available}."
        )
    label_feature = features[label_key]
    if isinstance(label_feature, tfds.features.ClassLabel) and task == "regression":
        raise DataError(
            f"TFDS dataset {name!r}: feature {label_key!r} is a ClassLabel (classes "
            f"{label_feature.names[:10]}), but task='regression' needs numeric targets. "
            f"Use task='classification' or 'binary'."
        )
    return label_feature


def _tfds_prepare(builder, name, data_dir, download):
    """Prepares the dataset when asked (`download`); else says how to, if it is not ready."""
    if _tfds_is_prepared(builder):
        return
    root = os.fspath(getattr(builder, "data_dir_root", None) or data_dir or "")
    if not download:
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in data_dir {root!r}: no "
            f"{os.path.join(os.fspath(builder.data_dir), 'dataset_info.json')}. "
            f"sft_keras does not download unless asked. Either prepare it on a machine "
            f"with network access (`tfds build {name} --data_dir={root}`) and copy the "
            f"folder there, or set --config.data.tfds_download=True to download and "
            f"prepare it into {root!r}."
        )
    builder.download_and_prepare()


def _tfds_columns(tfds, builder, name, split, keys):
    """The features `keys` of a split as numpy columns (read in batches, in order)."""
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except (ValueError, KeyError) as e:
        raise DataError(
            f"Cannot read split {split!r} of TFDS dataset {name!r}: {str(e).splitlines()[0]} "
            f"Splits available: {list(builder.info.splits.keys())}."
        ) from None
    keys = tuple(dict.fromkeys(keys))
    dataset = dataset.map(lambda example: {k: example[k] for k in keys}).batch(4096)
    columns = {k: [] for k in keys}
    for batch in tfds.as_numpy(dataset):
        for k in keys:
            columns[k].append(batch[k])
    columns = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in columns.items()}
    if len(columns[keys[-1]]) == 0:
        raise DataError(f"Split {split!r} of TFDS dataset {name!r} has no examples.")
    return columns


def _tfds_texts(columns, text_keys, features, where):
    """The text features as an object array `[n]` (or `[n, 2]` for pairs) of str."""
    n = len(columns[text_keys[0]])
    texts = np.empty((n, len(text_keys)), dtype=object)
    for j, key in enumerate(text_keys):
        values = columns[key]
        if values.dtype != object:
            raise DataError(
                f"{where}: feature {key!r} holds {values.dtype} values, not text "
                f"(data.text_columns). Features: "
                f"{ {k: type(f).__name__ for k, f in features.items()} }."
            )
        try:
            texts[:, j] = [_as_str(v) for v in values]
        except UnicodeDecodeError:
            raise DataError(
                f"{where}: feature {key!r} holds bytes that are not UTF-8 text."
            ) from None
    return texts[:, 0] if len(text_keys) == 1 else texts


def _tfds_labels(values, label_feature, task, class_names, where, label_key):
    """Labels and class names: `ClassLabel` ids in the feature's order, else sorted values."""
    import tensorflow_datasets as tfds

    if isinstance(label_feature, tfds.features.ClassLabel):
        names = list(label_feature.names)
        bad = np.flatnonzero((values < 0) | (values >= len(names)))
        if len(bad):
            raise DataError(
                f"{where}, example {bad[0]}: label {int(values[bad[0]])} is not a class id of "
                f"{names}. Label -1 marks unlabelled examples (as in GLUE test splits); "
                f"use a labelled split (data.tfds_train_split / data.tfds_validation_split)."
            )
        if class_names is None:
            return values.astype(np.int32), names
        raw_labels = [(i, names[v]) for i, v in enumerate(values)]
    else:
        if task != "regression" and class_names is None:
            class_names = [_as_str(v) for v in np.unique(values)]  # Sorted by value.
        raw_labels = [(i, _as_str(v)) for i, v in enumerate(values)]
    return _encode_labels(raw_labels, task, class_names, lambda i: f"{where}, example {i}",
                          label_key)


# --- chatterbot-corpus ----------------------------------------------------------


def _chatterbot_folder():
    spec = importlib.util.find_spec("chatterbot_corpus")  # Does not import the package.
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data.source='chatterbot' needs the chatterbot-corpus package: "
            "`pip install chatterbot-corpus`."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "english")


def load_chatterbot_topics(topics):
    """Returns chatterbot-corpus utterances labelled by topic: a small offline text dataset.

    Reads `chatterbot_corpus/data/english/<topic>.yml` from the installed
    `chatterbot-corpus` package (without importing chatterbot). Every
    string utterance of every conversation (questions and answers alike) is
    one example, labelled by its topic. Utterances are stripped; empty ones
    are dropped, and so are repeats: a text is kept once per topic, and a text
    that appears under two or more of `topics` is dropped from all of them
    (its label would be ambiguous). Examples are sorted by topic, then text.

    Args:
        topics: tuple of str. Topic file names without `.yml`, e.g.
            `('ai', 'trivia')`; they are the class names, in this order.

    Returns:
        `TextExamples` with texts `[n]` and int32 labels.

    Raises:
        DataError: the package is not installed, or a topic is unknown (the
            message lists the available topics).
        ConfigError: `topics` is empty or repeats a topic.
    """
    if isinstance(topics, str):
        topics = (topics,)
    topics = tuple(topics)
    if not topics or len(set(topics)) != len(topics) or not all(isinstance(t, str) for t in topics):
        raise ConfigError(
            f"data.topics must be distinct chatterbot-corpus topic names, e.g. ('ai', 'trivia'). "
            f"Received: data.topics={topics!r}"
        )
    folder = _chatterbot_folder()
    available = sorted(f[: -len(".yml")] for f in os.listdir(folder) if f.endswith(".yml"))
    unknown = [t for t in topics if t not in available]
    if unknown:
        raise DataError(
            f"Unknown chatterbot-corpus topic(s) {unknown} (data.topics). Available topics "
            f"(files in {folder}): {available}."
        )
    import yaml

    per_topic = []  # Per topic: its distinct texts, in file order.
    topics_of = {}  # Text -> indices of the topics it appears under.
    for index, topic in enumerate(topics):
        file_path = os.path.join(folder, f"{topic}.yml")
        with open(file_path, encoding="utf-8") as f:
            corpus = yaml.safe_load(f)
        conversations = corpus.get("conversations") if isinstance(corpus, dict) else None
        if not isinstance(conversations, list):
            raise DataError(f"{file_path}: expected a mapping with a 'conversations' list.")
        texts = {}
        for conversation in conversations:
            for utterance in conversation if isinstance(conversation, list) else []:
                if isinstance(utterance, str) and utterance.strip():
                    texts.setdefault(utterance.strip(), None)
        per_topic.append(texts)
        for text in texts:
            topics_of.setdefault(text, set()).add(index)
    pairs = sorted(
        (index, text)
        for index, texts in enumerate(per_topic)
        for text in texts
        if len(topics_of[text]) == 1
    )
    return TextExamples(
        _texts_array([(text,) for _, text in pairs]),
        np.asarray([index for index, _ in pairs], np.int32),
        list(topics),
    )


# --- One run's data ---------------------------------------------------------------


def load_text_data(data_config, task, seed):
    """Reads, checks and splits the text data the `data` config describes.

    `data.source` picks the reader: `'text_file'` (`read_text_table` of
    `data.path`), `'text_folder'` (`read_text_folder`), `'tfds'`
    (`load_tfds_text` of `data.tfds_name`, split `data.tfds_train_split`) or
    `'chatterbot'` (`load_chatterbot_topics(data.topics)`). Validation
    examples come from `data.validation_path` (files and folders; read with
    `data.validation_text_columns` when set, else `data.text_columns`), from
    `data.tfds_validation_split` (TFDS), or else are `data.validation_split`
    of the training examples (stratified for classification). Then, when
    `data.max_train_examples` > 0, only that many training examples are
    kept (a stratified, seeded subset; validation is not reduced).

    Args:
        data_config: the `data` part of a config.
        task: str. The `task` config value.
        seed: int. Seed of the train/validation split and of the subset.

    Returns:
        `TextData`.

    Raises:
        DataError: as the readers do; also for task='binary' without
            exactly 2 classes, classification with fewer than 2 classes, or
            a validation label never seen in training.
        ConfigError: an unknown `data.source`, or keys that do not fit it.

    Example:

    >>> import os, tempfile
    >>> from sft_keras.config import get_default_config
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("text,label\\n" + "good film,pos\\nbad film,neg\\n" * 4)
    >>> config = get_default_config()
    >>> config.data.source = "text_file"
    >>> config.data.path = path
    >>> config.data.validation_split = 0.25
    >>> data = load_text_data(config.data, "classification", seed=0)
    >>> data.class_names, len(data.train), len(data.validation)
    (['neg', 'pos'], 6, 2)
    """
    _check_task(task)
    d = data_config
    source = d.source
    if source not in TEXT_SOURCES:
        raise ConfigError(
            "data.source must be one of " + ", ".join(repr(s) for s in TEXT_SOURCES)
            + f" for text data. Received: data.source={source!r}"
        )
    if source != "text_file" and task == "multilabel":
        raise ConfigError(
            f"task='multilabel' reads several labels per example from a table; "
            f"data.source={source!r} has one class per example. Use data.source='text_file'."
        )
    if source in ("text_folder", "chatterbot") and task == "regression":
        raise ConfigError(
            f"task='regression' needs numeric labels; data.source={source!r} has classes only. "
            f"Use data.source='text_file' or 'tfds'."
        )
    if source in ("tfds", "chatterbot") and d.validation_path:
        hint = " Use data.tfds_validation_split instead." if source == "tfds" else ""
        raise ConfigError(
            f"data.validation_path is not used with data.source={source!r}; leave it empty.{hint} "
            f"Received: data.validation_path={d.validation_path!r}"
        )

    validation = None
    if source == "text_file":
        text_columns = _check_text_columns(d.text_columns, "data.text_columns")
        train = read_text_table(
            d.path, text_columns, d.label_column, task, label_separator=d.label_separator
        )
        if d.validation_path:
            columns_key = "data.text_columns"
            validation_columns = text_columns
            if d.validation_text_columns:
                columns_key = "data.validation_text_columns"
                validation_columns = _check_text_columns(d.validation_text_columns, columns_key)
                if len(validation_columns) != len(text_columns):
                    raise ConfigError(
                        f"data.validation_text_columns must name as many columns as "
                        f"data.text_columns ({text_columns!r}). "
                        f"Received: data.validation_text_columns={validation_columns!r}"
                    )
            validation = _read_table(
                d.validation_path, validation_columns, d.label_column, task,
                train.class_names or None, columns_key, d.label_separator,
            )
    elif source == "text_folder":
        train = read_text_folder(d.path)
        if d.validation_path:
            validation = read_text_folder(d.validation_path, train.class_names)
    elif source == "tfds":
        kwargs = dict(
            name=d.tfds_name, data_dir=d.tfds_data_dir, text_keys=d.text_columns,
            label_key=d.label_column, task=task, download=d.tfds_download,
        )
        train = load_tfds_text(split=d.tfds_train_split, **kwargs)
        if d.tfds_validation_split:
            validation = load_tfds_text(
                split=d.tfds_validation_split, class_names=train.class_names or None, **kwargs
            )
    else:
        train = load_chatterbot_topics(d.topics)

    class_names = train.class_names
    if source == "tfds":
        where = f"data.tfds_name={d.tfds_name!r} split {d.tfds_train_split!r}"
    elif source == "chatterbot":
        where = f"data.topics={d.topics!r}"
    else:
        where = f"data.path={d.path!r}"
    check_class_count(class_names, task, where)
    if validation is None:
        train, validation = split_examples(
            train, d.validation_split, seed, stratify=task not in ("regression", "multilabel")
        )
    train = limit_examples(train, d.max_train_examples, seed)
    return TextData(train=train, validation=validation, class_names=class_names)
