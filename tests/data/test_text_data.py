"""Tests of sft_keras.data's text readers: tables, folders, TFDS, chatterbot-corpus."""

import importlib.util
import os
import re
import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sft_keras.config import get_default_config
from sft_keras.data import (
    ImageExamples,
    TextData,
    TextExamples,
    limit_examples,
    load_chatterbot_topics,
    load_text_data,
    load_tfds_text,
    read_text_columns,
    read_text_folder,
    read_text_table,
    split_examples,
)
from sft_keras.data import images as images_module
from sft_keras.data import split as split_module
from sft_keras.errors import ConfigError, DataError

tfds.disable_progress_bar()

ACCENTED = "Crème brûlée, naïve café"
CJK = "今日はとても良い天気です"
EMOJI = "great movie 😀👍"


def write_text(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return str(path)


def write_bytes(path, data):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def where(path, line):
    """The `file:line` an error message starts with, as a regex."""
    return re.escape(f"{path}:{line}:")


@pytest.fixture
def no_network(monkeypatch):
    """Fails the test on any Python-level connection attempt or DNS lookup."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"Network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- read_text_table: CSV -------------------------------------------------------


def test_read_csv_utf8_texts_sorted_classes_and_int32_labels(tmp_path):
    path = write_text(
        tmp_path / "train.csv",
        f"text,label\n\"{ACCENTED}\",pos\n{CJK},neu\n  {EMOJI}  ,pos\nmeh,neg\n",
    )
    examples = read_text_table(path)
    assert isinstance(examples, TextExamples)
    assert examples.class_names == ["neg", "neu", "pos"]
    assert examples.labels.dtype == np.int32
    np.testing.assert_array_equal(examples.labels, [2, 1, 2, 0])
    assert examples.texts.dtype == object and examples.texts.shape == (4,)
    # Exact round trip of non-ASCII text; surrounding whitespace is stripped.
    assert examples.texts.tolist() == [ACCENTED, CJK, EMOJI, "meh"]
    assert len(examples) == 4


def test_read_csv_quoted_fields_with_commas_quotes_and_newlines(tmp_path):
    path = write_text(
        tmp_path / "train.csv",
        'label,text\n'
        'pos,"Well, ""great"" film"\n'
        'neg,"line one\nline two"\n'
        "neg,plain\n",
    )
    examples = read_text_table(path)
    assert examples.texts.tolist() == ['Well, "great" film', "line one\nline two", "plain"]
    np.testing.assert_array_equal(examples.labels, [1, 0, 0])


def test_read_csv_numeric_labels_stay_strings_sorted_as_strings(tmp_path):
    path = write_text(tmp_path / "t.csv", "text,label\na,1\nb,0\nc,10\nd,2\n")
    examples = read_text_table(path)
    assert examples.class_names == ["0", "1", "10", "2"]
    np.testing.assert_array_equal(examples.labels, [1, 0, 2, 3])


def test_read_csv_ignores_utf8_byte_order_mark_and_crlf(tmp_path):
    path = write_bytes(tmp_path / "bom.csv", "\ufefftext,label\r\nhello,a\r\nwörld,b\r\n".encode())
    examples = read_text_table(path)
    assert examples.texts.tolist() == ["hello", "wörld"]
    assert examples.class_names == ["a", "b"]


def test_read_csv_skips_blank_lines_and_reports_physical_line_numbers(tmp_path):
    path = write_text(tmp_path / "t.csv", "text,label\n\nok,a\n\n,b\n")
    with pytest.raises(DataError, match=where(path, 5)):
        read_text_table(path)


def test_read_csv_row_with_extra_field_names_line_and_hint(tmp_path):
    # An unquoted comma inside a text would silently shift the label column.
    path = write_text(tmp_path / "t.csv", "text,label\nfine,pos\nhello, world,neg\n")
    with pytest.raises(DataError, match=where(path, 3)) as excinfo:
        read_text_table(path)
    message = str(excinfo.value)
    assert "3 field(s)" in message and "header has 2" in message and "Quote fields" in message


def test_read_csv_unbalanced_quote_reports_the_lines_it_swallowed(tmp_path):
    path = write_text(tmp_path / "t.csv", 'text,label\n"oops,pos\nfine,neg\nalso,neg\n')
    with pytest.raises(DataError, match=r"lines 2-4: an unbalanced quote"):
        read_text_table(path)


# --- read_text_table: TSV, pairs, JSON lines ------------------------------------


@pytest.mark.parametrize("extension", [".tsv", ".tab", ".TSV"])
def test_read_tsv_keeps_unbalanced_quote_characters(tmp_path, extension):
    # SST-2 style: quotes are ordinary characters; a lone `"` must not swallow rows.
    path = write_text(
        tmp_path / f"sst{extension}",
        'sentence\tlabel\n'
        'the "director\'s cut\t1\n'
        '" is all you need\t0\n'
        f'{CJK} "quoted"\t1\n',
    )
    examples = read_text_table(path, text_columns=("sentence",))
    assert examples.texts.tolist() == [
        'the "director\'s cut',
        '" is all you need',
        f'{CJK} "quoted"',
    ]
    assert examples.class_names == ["0", "1"]
    np.testing.assert_array_equal(examples.labels, [1, 0, 1])


def test_read_tsv_row_with_a_tab_in_the_text_names_line(tmp_path):
    path = write_text(tmp_path / "t.tsv", "text\tlabel\na\tb\tpos\n")
    with pytest.raises(DataError, match=where(path, 2)) as excinfo:
        read_text_table(path)
    assert "tab" in str(excinfo.value)


def test_read_table_sentence_pairs_give_n_by_2_texts(tmp_path):
    path = write_text(
        tmp_path / "mrpc.tsv",
        "id\tsentence1\tsentence2\tlabel\n"
        f"1\tHe said hi.\tHe greeted us.\tequivalent\n"
        f"2\t{ACCENTED}\t{EMOJI}\tnot_equivalent\n",
    )
    examples = read_text_table(path, text_columns=("sentence1", "sentence2"))
    assert examples.texts.shape == (2, 2)
    assert examples.texts[1].tolist() == [ACCENTED, EMOJI]
    assert examples.class_names == ["equivalent", "not_equivalent"]
    # subset keeps the pair axis.
    assert examples.subset([1]).texts.shape == (1, 2)


def test_read_table_pair_with_empty_second_text_names_line_and_column(tmp_path):
    path = write_text(tmp_path / "p.csv", "a,b,label\nx,y,0\nx,   ,1\n")
    with pytest.raises(DataError, match=where(path, 3) + r" empty text in column 'b'"):
        read_text_table(path, text_columns=("a", "b"))


def test_read_jsonl_mixed_int_and_string_labels(tmp_path):
    path = write_text(
        tmp_path / "train.jsonl",
        '{"text": "caf\\u00e9 ok", "label": 1}\n'
        "\n"
        f'{{"text": "{EMOJI}", "label": "0", "extra": [1, 2]}}\n'
        f'{{"label": 1, "text": "{CJK}"}}\n',
    )
    examples = read_text_table(path)
    assert examples.texts.tolist() == ["café ok", EMOJI, CJK]
    assert examples.class_names == ["0", "1"]
    np.testing.assert_array_equal(examples.labels, [1, 0, 1])


def test_read_json_extension_is_json_lines_with_pairs(tmp_path):
    path = write_text(
        tmp_path / "nli.json",
        '{"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": "entailment"}\n'
        '{"premise": "A dog runs.", "hypothesis": "A cat sits.", "label": "contradiction"}\n',
    )
    examples = read_text_table(path, text_columns=("premise", "hypothesis"))
    assert examples.texts.tolist() == [
        ["A man sleeps.", "A man rests."],
        ["A dog runs.", "A cat sits."],
    ]
    assert examples.class_names == ["contradiction", "entailment"]


def test_read_jsonl_malformed_line_names_file_and_line(tmp_path):
    path = write_text(tmp_path / "t.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": }\n')
    with pytest.raises(DataError, match=where(path, 2) + " malformed JSON"):
        read_text_table(path)


def test_read_jsonl_array_file_gets_a_hint(tmp_path):
    path = write_text(tmp_path / "t.json", '[{"text": "a", "label": 0}]\n')
    with pytest.raises(DataError, match=where(path, 1)) as excinfo:
        read_text_table(path)
    assert "one JSON object per line" in str(excinfo.value)


def test_read_jsonl_missing_key_names_line_and_lists_keys(tmp_path):
    path = write_text(tmp_path / "t.jsonl", '{"text": "a", "label": 0}\n{"txt": "b", "label": 1}\n')
    with pytest.raises(DataError, match=where(path, 2)) as excinfo:
        read_text_table(path)
    message = str(excinfo.value)
    assert "'text'" in message and "data.text_columns" in message and "['txt', 'label']" in message


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": 5, "label": 0}', r"must hold a string\. Received: text=5"),
        ('{"text": null, "label": 0}', r"empty text in column 'text'"),
        ('{"text": "a", "label": null}', r"empty 'label' value"),
        ('{"text": "a", "label": ["x"]}', r"label must be a string or a number"),
    ],
)
def test_read_jsonl_bad_values_name_line(tmp_path, line, message):
    path = write_text(tmp_path / "t.jsonl", '{"text": "ok", "label": 0}\n' + line + "\n")
    with pytest.raises(DataError, match=where(path, 2) + ".*" + message):
        read_text_table(path)


# --- read_text_table: errors -----------------------------------------------------


def test_read_table_unknown_extension_lists_accepted(tmp_path):
    path = write_text(tmp_path / "train.txt", "text,label\na,b\n")
    with pytest.raises(DataError, match=re.escape(path)) as excinfo:
        read_text_table(path)
    for extension in (".csv", ".tsv", ".tab", ".jsonl", ".json"):
        assert extension in str(excinfo.value)


def test_read_table_missing_file_names_it(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=re.escape(missing)):
        read_text_table(missing)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("zero.csv", "", "is empty"),
        ("blank.tsv", "\n\n", "is empty"),
        ("header.csv", "text,label\n", "has no data rows"),
        ("header.tsv", "text\tlabel\n\n", "has no data rows"),
        ("blank.jsonl", "\n  \n", "is empty"),
    ],
)
def test_read_table_empty_file_raises(tmp_path, name, content, message):
    path = write_text(tmp_path / name, content)
    with pytest.raises(DataError, match=re.escape(path) + ".*" + message):
        read_text_table(path)


@pytest.mark.parametrize("missing", ["text", "label"])
def test_read_table_missing_column_lists_columns_found(tmp_path, missing):
    header = "sentence,label" if missing == "text" else "text,target"
    path = write_text(tmp_path / "t.csv", header + "\na,b\n")
    with pytest.raises(DataError, match=rf"no column '{missing}'") as excinfo:
        read_text_table(path)
    message = str(excinfo.value)
    assert repr(header.split(",")) in message and path in message
    key = "data.text_columns" if missing == "text" else "data.label_column"
    assert key in message


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_read_table_blank_text_is_an_error_naming_file_and_line(tmp_path, text):
    path = write_text(tmp_path / "t.csv", f"text,label\nok,a\n\"{text}\",b\n")
    with pytest.raises(DataError, match=where(path, 3) + " empty text in column 'text'"):
        read_text_table(path)


def test_read_table_empty_label_names_line(tmp_path):
    path = write_text(tmp_path / "t.csv", "text,label\nok,a\nfine, \n")
    with pytest.raises(DataError, match=where(path, 3) + " empty 'label' value"):
        read_text_table(path)


@pytest.mark.parametrize("extension", [".csv", ".tsv", ".jsonl"])
def test_read_table_not_utf8_names_file_and_line(tmp_path, extension):
    rows = {
        ".csv": [b"text,label", b"ok,a", b"caf\xe9,b"],
        ".tsv": [b"text\tlabel", b"ok\ta", b"caf\xe9\tb"],
        ".jsonl": [b'{"text": "ok", "label": "a"}', b'{"text": "ok", "label": "a"}',
                   b'{"text": "caf\xe9", "label": "b"}'],
    }[extension]
    path = write_bytes(tmp_path / f"latin1{extension}", b"\n".join(rows) + b"\n")
    with pytest.raises(DataError, match=where(path, 3) + r" not valid UTF-8 \(byte b'\\xe9'"):
        read_text_table(path)


def test_read_table_regression_float_labels(tmp_path):
    path = write_text(tmp_path / "stsb.csv", "text,label\na,0.5\nb,-2\nc, 3e1 \n")
    examples = read_text_table(path, task="regression")
    assert examples.labels.dtype == np.float32
    np.testing.assert_allclose(examples.labels, [0.5, -2.0, 30.0])
    assert examples.class_names == []
    jsonl = write_text(
        tmp_path / "stsb.jsonl", '{"text": "a", "label": 1.25}\n{"text": "b", "label": "4"}\n'
    )
    np.testing.assert_allclose(read_text_table(jsonl, task="regression").labels, [1.25, 4.0])


@pytest.mark.parametrize("value", ["high", "nan", "inf", "-Infinity"])
def test_read_table_regression_rejects_non_numeric_or_non_finite(tmp_path, value):
    path = write_text(tmp_path / "t.csv", f"text,label\na,1\nb,{value}\n")
    message = where(path, 3) + ".*finite numeric.*" + re.escape(repr(value))
    with pytest.raises(DataError, match=message):
        read_text_table(path, task="regression")


def test_read_jsonl_regression_rejects_json_nan(tmp_path):
    path = write_text(tmp_path / "t.jsonl", '{"text": "a", "label": NaN}\n')
    with pytest.raises(DataError, match=where(path, 1) + ".*finite numeric"):
        read_text_table(path, task="regression")


def test_read_table_validation_labels_use_training_classes(tmp_path):
    train = read_text_table(write_text(tmp_path / "train.csv", "text,label\na,x\nb,y\nc,z\n"))
    val_path = write_text(tmp_path / "val.csv", "text,label\nd,z\ne,y\n")
    val = read_text_table(val_path, class_names=train.class_names)
    assert val.class_names == ["x", "y", "z"]
    np.testing.assert_array_equal(val.labels, [2, 1])


def test_read_table_validation_unknown_label_names_line_and_lists_known(tmp_path):
    path = write_text(tmp_path / "val.csv", "text,label\nd,x\ne,maybe\n")
    message = where(path, 3) + r" label 'maybe' was never seen"
    with pytest.raises(DataError, match=message) as excinfo:
        read_text_table(path, class_names=["x", "y"])
    assert "Known labels: ['x', 'y']" in str(excinfo.value)


@pytest.mark.parametrize("columns", [(), ("a", "b", "c"), ("a", ""), 5])
def test_read_table_needs_one_or_two_text_columns(tmp_path, columns):
    path = write_text(tmp_path / "t.csv", "a,b,c,label\n1,2,3,x\n")
    with pytest.raises(ConfigError, match=r"data\.text_columns must name 1 text column, or 2"):
        read_text_table(path, text_columns=columns)


def test_read_table_single_column_name_as_string(tmp_path):
    path = write_text(tmp_path / "t.csv", "a,label\nhello,x\n")
    assert read_text_table(path, text_columns="a").texts.tolist() == ["hello"]


def test_read_table_unknown_task_raises(tmp_path):
    path = write_text(tmp_path / "t.csv", "text,label\na,b\n")
    with pytest.raises(ConfigError, match=r"task must be one of"):
        read_text_table(path, task="ranking")



# --- read_text_columns: texts without labels ----------------------------------------


def test_read_text_columns_reads_pairs_and_ignores_other_columns(tmp_path):
    path = write_text(tmp_path / "t.tsv", "id\tb\ta\n1\t second \tfirst\n")
    assert read_text_columns(path, ("a", "b")) == [("first", "second")]
    jsonl = write_text(tmp_path / "t.jsonl", '{"text": " x ", "id": 1}\n\n{"text": "y"}\n')
    assert read_text_columns(jsonl) == [("x",), ("y",)]


def test_read_text_columns_errors_name_file_line_and_key(tmp_path):
    path = write_text(tmp_path / "t.csv", "text,id\nok,1\n,2\n")
    with pytest.raises(DataError, match=where(path, 3) + " empty text in column 'text'"):
        read_text_columns(path)
    assert read_text_columns(path, allow_empty=True) == [("ok",), ("",)]
    with pytest.raises(DataError, match=r"no column 'review' \(--text_column\)"):
        read_text_columns(path, ("review",), key="--text_column")
    jsonl = write_text(tmp_path / "t.jsonl", '{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(DataError, match=where(jsonl, 2) + r" no key 'text' \(--text_column\)"):
        read_text_columns(jsonl, key="--text_column")


# --- read_text_folder -----------------------------------------------------------


def test_read_text_folder_classes_content_and_hidden_files(tmp_path):
    root = tmp_path / "reviews"
    write_text(root / "pos" / "b.txt", f"  {EMOJI}\r\nsecond line\r\n\n")
    write_text(root / "pos" / "a.TXT", ACCENTED)
    write_text(root / "neg" / "1.txt", CJK)
    write_text(root / "neg" / "sub" / "2.txt", "nested counts")
    write_text(root / "neg" / ".DS_Store", "junk")
    write_text(root / "neg" / ".ipynb_checkpoints" / "1-checkpoint.txt", "hidden")
    write_text(root / ".git" / "x.txt", "hidden class")
    write_bytes(root / "pos" / "c.txt", "\ufeffwith bom".encode())
    examples = read_text_folder(str(root))
    assert examples.class_names == ["neg", "pos"]
    assert examples.texts.tolist() == [
        CJK, "nested counts", ACCENTED, f"{EMOJI}\nsecond line", "with bom",
    ]
    np.testing.assert_array_equal(examples.labels, [0, 0, 1, 1, 1])
    assert examples.labels.dtype == np.int32


def test_read_text_folder_non_txt_file_raises_naming_it(tmp_path):
    write_text(tmp_path / "d" / "a" / "1.txt", "x")
    notes = write_text(tmp_path / "d" / "a" / "notes.md", "y")
    with pytest.raises(DataError, match=re.escape(notes)):
        read_text_folder(str(tmp_path / "d"))


@pytest.mark.parametrize("hidden_only", [False, True])
def test_read_text_folder_empty_class_folder_raises_naming_it(tmp_path, hidden_only):
    write_text(tmp_path / "d" / "a" / "1.txt", "x")
    os.makedirs(tmp_path / "d" / "b")
    if hidden_only:
        write_text(tmp_path / "d" / "b" / ".hidden.txt", "x")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "d" / "b")) + ".*no .txt files"):
        read_text_folder(str(tmp_path / "d"))


def test_read_text_folder_not_utf8_file_names_it_and_line(tmp_path):
    write_text(tmp_path / "d" / "a" / "1.txt", "x")
    bad = write_bytes(tmp_path / "d" / "b" / "latin1.txt", b"first\nna\xefve\n")
    with pytest.raises(DataError, match=where(bad, 2) + " not valid UTF-8"):
        read_text_folder(str(tmp_path / "d"))


@pytest.mark.parametrize("content", ["", " \n\t\n"])
def test_read_text_folder_empty_file_raises_naming_it(tmp_path, content):
    write_text(tmp_path / "d" / "a" / "1.txt", "x")
    empty = write_text(tmp_path / "d" / "a" / "2.txt", content)
    with pytest.raises(DataError, match=re.escape(empty) + ".* is empty"):
        read_text_folder(str(tmp_path / "d"))


def test_read_text_folder_validation_classes(tmp_path):
    train = read_text_folder(str(_folder(tmp_path / "train", {"a": 1, "b": 1, "c": 1})))
    val = read_text_folder(str(_folder(tmp_path / "val", {"c": 2, "b": 1})), train.class_names)
    assert val.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(val.labels, [1, 2, 2])
    bad = str(_folder(tmp_path / "bad", {"a": 1, "horse": 1}))
    with pytest.raises(DataError, match=r"'horse'") as excinfo:
        read_text_folder(bad, train.class_names)
    assert bad in str(excinfo.value)


def test_read_text_folder_missing_or_flat_folder_raises(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope"))):
        read_text_folder(str(tmp_path / "nope"))
    write_text(tmp_path / "flat" / "1.txt", "x")
    with pytest.raises(DataError, match=r"no class subfolders"):
        read_text_folder(str(tmp_path / "flat"))


def _folder(root, counts):
    for name, n in counts.items():
        for i in range(n):
            write_text(root / name / f"{i:02d}.txt", f"{name} example {i}")
    return root


# --- split_examples and limit_examples --------------------------------------------


def _text_examples(labels, class_names=None):
    labels = np.asarray(labels)
    texts = np.array([f"t{i}" for i in range(len(labels))], object)
    if class_names is None:
        class_names = [str(c) for c in range(int(labels.max()) + 1)]
    return TextExamples(texts, labels.astype(np.int32), class_names)


def test_split_examples_moved_but_still_importable_everywhere():
    assert images_module.split_examples is split_module.split_examples is split_examples


def test_split_examples_on_text_examples_is_stratified_and_complete():
    examples = _text_examples([0] * 10 + [1] * 5)
    train, val = split_examples(examples, 0.2, seed=3)
    assert isinstance(train, TextExamples) and isinstance(val, TextExamples)
    assert sorted(train.texts.tolist() + val.texts.tolist()) == sorted(examples.texts.tolist())
    assert np.bincount(val.labels).tolist() == [2, 1]


def test_limit_examples_zero_or_large_returns_examples_unchanged():
    examples = _text_examples([0, 1, 0, 1])
    assert limit_examples(examples, 0, seed=0) is examples
    assert limit_examples(examples, 4, seed=0) is examples
    assert limit_examples(examples, 100, seed=0) is examples


def test_limit_examples_stratified_deterministic_and_ordered():
    examples = _text_examples([0] * 60 + [1] * 30 + [2] * 10)
    small = limit_examples(examples, 10, seed=1)
    assert len(small) == 10
    assert np.bincount(small.labels).tolist() == [6, 3, 1]
    kept = [int(t[1:]) for t in small.texts]
    assert kept == sorted(kept)  # Original order.
    assert limit_examples(examples, 10, seed=1).texts.tolist() == small.texts.tolist()
    assert limit_examples(examples, 10, seed=2).texts.tolist() != small.texts.tolist()
    assert small.class_names == examples.class_names


def test_limit_examples_keeps_every_class_when_possible():
    examples = _text_examples([0] * 97 + [1] + [2] + [3])
    small = limit_examples(examples, 5, seed=0)
    assert sorted(set(small.labels.tolist())) == [0, 1, 2, 3]
    assert len(small) == 5


def test_limit_examples_regression_and_image_examples():
    regression = TextExamples(
        np.array(list("abcdefgh"), object), np.arange(8, dtype=np.float32), []
    )
    small = limit_examples(regression, 3, seed=0)
    assert len(small) == 3 and small.labels.dtype == np.float32
    assert small.labels.tolist() == sorted(small.labels.tolist())
    images = ImageExamples(np.zeros((6, 4, 4, 3), np.uint8), np.array([0, 0, 0, 1, 1, 1], np.int32),
                           ["a", "b"])
    small_images = limit_examples(images, 2, seed=0)
    assert isinstance(small_images, ImageExamples) and small_images.labels.tolist() == [0, 1]


@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_limit_examples_rejects_bad_n(n):
    with pytest.raises(ConfigError, match=r"data\.max_train_examples"):
        limit_examples(_text_examples([0, 1]), n, seed=0)


# --- TFDS -------------------------------------------------------------------------

TINY_TRAIN = [("a wonderful film", 1), (f"{ACCENTED} dreadful", 0), (EMOJI, 1), (CJK, 0),
              ("boring", 0), ("loved it", 1)]
TINY_TEST = [("not bad", 1), ("awful", 0)]


class TinySentiment(tfds.core.GeneratorBasedBuilder):
    """A six-sentence sentiment dataset generated from Python lists (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        # DatasetInfo directly: `dataset_info_from_configs` looks for metadata
        # files in the builder's package, and tests/ is not a package.
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "sentence": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=["neg", "pos"]),
            }),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(TINY_TRAIN),
                "test": self._generate_examples(TINY_TEST)}

    def _generate_examples(self, rows):
        for i, (sentence, label) in enumerate(rows):
            yield i, {"sentence": sentence, "label": label}


class TinyUnregistered(TinySentiment, skip_registration=True):
    """Same data, but TFDS does not know its code: stands for a dataset prepared elsewhere."""


PAIR_ROWS = [("A man sleeps.", "A man rests.", 2, 4.5), ("A dog runs.", "A cat sits.", 0, 0.5),
             ("Kids play.", "Children play.", 2, 5.0), ("It rains.", "It might rain.", 1, 2.0)]


class TinyPairs(tfds.core.GeneratorBasedBuilder):
    """Sentence pairs; the ClassLabel names are deliberately not in sorted order."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "premise": tfds.features.Text(),
                "hypothesis": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=["neutral", "contradiction", "entailment"]),
                "score": tfds.features.Scalar(np.float32),
                "idx": tfds.features.Scalar(np.int32),
            }),
        )

    def _split_generators(self, dl_manager):
        # 'test' is unlabelled (label -1), as in GLUE.
        return {"train": self._generate_examples(PAIR_ROWS),
                "test": self._generate_examples([("x.", "y.", -1, 0.0)])}

    def _generate_examples(self, rows):
        for i, (premise, hypothesis, label, score) in enumerate(rows):
            yield i, {"premise": premise, "hypothesis": hypothesis, "label": label,
                      "score": score, "idx": [7, 3, 7, 5, 0][i]}


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
    """A data_dir with `tiny_sentiment` prepared by TFDS itself, offline."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    with pytest.MonkeyPatch.context() as patch:
        def refuse(*args, **kwargs):
            raise AssertionError(f"Network access attempted: {args!r}")

        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        tfds.builder("tiny_sentiment", data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_registration_name_is_snake_case_of_class_name():
    # Registered once, at import of this module; pytest's --doctest-modules
    # collection must not import it a second time (that would raise
    # "Dataset with name tiny_sentiment already registered").
    assert TinySentiment.name == "tiny_sentiment"
    assert TinyPairs.name == "tiny_pairs"
    assert tfds.builder_cls("tiny_sentiment") is TinySentiment
    assert "tiny_sentiment" in tfds.list_builders(with_community_datasets=False)


def test_load_tfds_text_reads_prepared_split(tiny_tfds_dir, no_network):
    examples = load_tfds_text("tiny_sentiment", data_dir=tiny_tfds_dir, split="train",
                              text_keys=("sentence",))
    assert examples.class_names == ["neg", "pos"]
    assert examples.labels.dtype == np.int32
    assert examples.texts.dtype == object and examples.texts.shape == (6,)
    # TFDS shuffles examples when writing: compare as sets of (text, label).
    got = {(t, examples.class_names[l]) for t, l in zip(examples.texts, examples.labels)}
    assert got == {(t, ["neg", "pos"][l]) for t, l in TINY_TRAIN}
    assert all(isinstance(t, str) for t in examples.texts)


def test_load_tfds_text_falls_back_to_the_only_text_feature(tiny_tfds_dir, no_network):
    # text_keys defaults to ('text',); the dataset's only Text feature is 'sentence'.
    examples = load_tfds_text("tiny_sentiment", data_dir=tiny_tfds_dir, split="test")
    assert sorted(examples.texts.tolist()) == ["awful", "not bad"]


def test_load_tfds_text_split_expression_and_validation_classes(tiny_tfds_dir):
    examples = load_tfds_text(
        "tiny_sentiment", tiny_tfds_dir, "train[:2]", class_names=["pos", "neg"]
    )
    assert len(examples) == 2
    assert examples.class_names == ["pos", "neg"]
    # Indices follow the given class names, not the ClassLabel ids.
    for text, label in zip(examples.texts, examples.labels):
        assert examples.class_names[label] == ["neg", "pos"][dict(TINY_TRAIN)[text]]
    with pytest.raises(DataError, match=r"label 'neg' was never seen in training"):
        load_tfds_text("tiny_sentiment", tiny_tfds_dir, "train", class_names=["pos"])


def test_load_tfds_text_unknown_split_lists_splits(tiny_tfds_dir):
    with pytest.raises(DataError, match=r"split 'validation'.*\['train', 'test'\]"):
        load_tfds_text("tiny_sentiment", tiny_tfds_dir, "validation")


def test_load_tfds_text_missing_feature_lists_features(tiny_tfds_dir):
    with pytest.raises(DataError, match=r"no feature 'review'.*'sentence': 'Text'"):
        load_tfds_text("tiny_sentiment", tiny_tfds_dir, "train", text_keys=("review",))
    with pytest.raises(DataError, match=r"no feature 'stars' \(data\.label_column\)"):
        load_tfds_text("tiny_sentiment", tiny_tfds_dir, "train", label_key="stars")


def test_load_tfds_text_not_prepared_fails_fast_and_writes_nothing(tmp_path, no_network):
    empty = tmp_path / "empty_tfds"
    os.makedirs(empty)
    missing = tmp_path / "missing_tfds"
    for data_dir in (empty, missing):
        start = time.monotonic()
        with pytest.raises(DataError, match=r"is not prepared") as excinfo:
            load_tfds_text("tiny_sentiment", str(data_dir), "train")
        assert time.monotonic() - start < 10
        message = str(excinfo.value)
        assert str(data_dir) in message
        assert f"tfds build tiny_sentiment --data_dir={data_dir}" in message
        assert "tfds_download=True" in message
    assert os.listdir(empty) == []
    assert not os.path.exists(missing)


def test_load_tfds_text_not_prepared_registered_dataset(tmp_path, no_network):
    # A real TFDS catalogue dataset: its code is installed, its data is not.
    with pytest.raises(DataError, match=r"'glue/sst2' is not prepared"):
        load_tfds_text("glue/sst2", str(tmp_path), "train")
    assert os.listdir(tmp_path) == []


def test_load_tfds_text_reads_prepared_files_without_builder_code(tmp_path, no_network):
    # e.g. `tfds build` run on another machine, the folder copied here.
    data_dir = str(tmp_path)
    TinyUnregistered(data_dir=data_dir).download_and_prepare()
    assert "tiny_unregistered" not in tfds.list_builders(with_community_datasets=False)
    examples = load_tfds_text("tiny_unregistered", data_dir, "test")
    assert examples.class_names == ["neg", "pos"]
    assert sorted(examples.texts.tolist()) == ["awful", "not bad"]


def test_load_tfds_text_download_prepares_then_reads_pairs(tmp_path, no_network):
    # download=True on a generator builder without URLs: prepared offline.
    data_dir = str(tmp_path / "tfds")
    pairs = load_tfds_text("tiny_pairs", data_dir, "train", text_keys=("premise", "hypothesis"),
                           download=True)
    assert os.path.isfile(os.path.join(data_dir, "tiny_pairs", "1.0.0", "dataset_info.json"))
    assert pairs.texts.shape == (4, 2)
    # ClassLabel order kept, not re-sorted.
    assert pairs.class_names == ["neutral", "contradiction", "entailment"]
    got = {(p, h, pairs.class_names[l]) for (p, h), l in zip(pairs.texts.tolist(), pairs.labels)}
    names = ["neutral", "contradiction", "entailment"]
    assert got == {(p, h, names[l]) for p, h, l, _ in PAIR_ROWS}

    # Regression on a float feature; classification on a plain integer feature.
    scores = load_tfds_text("tiny_pairs", data_dir, "train", ("premise", "hypothesis"),
                            label_key="score", task="regression")
    assert scores.labels.dtype == np.float32 and scores.class_names == []
    assert sorted(scores.labels.tolist()) == [0.5, 2.0, 4.5, 5.0]
    ids = load_tfds_text("tiny_pairs", data_dir, "train", ("premise",), label_key="idx")
    assert ids.class_names == ["3", "5", "7"]  # Sorted by value.

    # Two Text features: the ('text',) fallback is ambiguous.
    with pytest.raises(DataError, match=r"no feature 'text'.*'premise': 'Text'.*'hypothesis'"):
        load_tfds_text("tiny_pairs", data_dir, "train")
    with pytest.raises(DataError, match=r"feature 'idx' holds int32 values, not text"):
        load_tfds_text("tiny_pairs", data_dir, "train", ("idx",))
    with pytest.raises(DataError, match=r"ClassLabel.*task='regression'"):
        load_tfds_text("tiny_pairs", data_dir, "train", ("premise",), task="regression")
    with pytest.raises(DataError, match=r"split 'test', example 0: label -1.*unlabelled"):
        load_tfds_text("tiny_pairs", data_dir, "test", ("premise", "hypothesis"))


def test_load_tfds_text_unknown_name(tmp_path, no_network):
    with pytest.raises(DataError, match=r"Unknown TFDS dataset.*'tiny_sentimnt'") as excinfo:
        load_tfds_text("tiny_sentimnt", str(tmp_path), "train")
    assert "Did you mean 'tiny_sentiment'" in str(excinfo.value)
    assert str(tmp_path) in str(excinfo.value)
    with pytest.raises(DataError, match=r"Not a TFDS dataset name"):
        load_tfds_text("tiny sentiment", str(tmp_path), "train")
    message = r"BuilderConfig sst99 not found.*Configs of 'glue': \[.*'sst2'"
    with pytest.raises(DataError, match=message):
        load_tfds_text("glue/sst99", str(tmp_path), "train")
    assert os.listdir(tmp_path) == []


def test_load_tfds_text_namespaced_name_needs_download(tmp_path, no_network):
    # huggingface: builders query the Hub when constructed: refused offline.
    with pytest.raises(DataError, match=r"namespace 'huggingface'.*tfds_download=True"):
        load_tfds_text("huggingface:imdb", str(tmp_path), "train")


# --- chatterbot-corpus --------------------------------------------------------------

needs_chatterbot = pytest.mark.skipif(
    importlib.util.find_spec("chatterbot_corpus") is None, reason="chatterbot-corpus not installed"
)


@needs_chatterbot
def test_load_chatterbot_topics_ai_and_trivia():
    examples = load_chatterbot_topics(("trivia", "ai"))
    assert examples.class_names == ["trivia", "ai"]  # The order given.
    assert examples.labels.dtype == np.int32
    counts = np.bincount(examples.labels)
    assert len(counts) == 2 and counts.min() > 100
    texts = examples.texts.tolist()
    assert len(set(texts)) == len(texts)  # No repeats.
    assert all(t == t.strip() and t for t in texts)  # trivia.yml has empty answers: dropped.
    assert "What is AI?" in texts and "Richard Nixon" in texts
    # Sorted by topic, then by text: deterministic.
    pairs = list(zip(examples.labels.tolist(), texts))
    assert pairs == sorted(pairs)
    again = load_chatterbot_topics(("trivia", "ai"))
    assert again.texts.tolist() == texts


@needs_chatterbot
def test_load_chatterbot_topics_drops_texts_shared_between_topics():
    # 'Yes.' and 'No.' appear in both ai.yml and emotion.yml (several times in ai.yml).
    ai = load_chatterbot_topics(("ai",)).texts.tolist()
    assert ai.count("Yes.") == 1 and ai.count("What is AI?") == 1
    both = load_chatterbot_topics(("ai", "emotion"))
    assert "Yes." not in both.texts.tolist() and "No." not in both.texts.tolist()
    assert "What is AI?" in both.texts.tolist()


@needs_chatterbot
def test_load_chatterbot_topics_unknown_topic_lists_available():
    with pytest.raises(DataError, match=r"\['robots'\].*'ai'.*'trivia'"):
        load_chatterbot_topics(("ai", "robots"))
    with pytest.raises(ConfigError, match=r"data\.topics"):
        load_chatterbot_topics(("ai", "ai"))


def test_load_chatterbot_topics_without_the_package(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "chatterbot_corpus" else find_spec(name, *a),
    )
    with pytest.raises(DataError, match=r"pip install chatterbot-corpus"):
        load_chatterbot_topics(("ai",))


# --- load_text_data -------------------------------------------------------------------


def _config(**data):
    config = get_default_config()
    for key, value in data.items():
        config.data[key] = value
    return config


def test_load_text_data_text_file_split_and_max_train_examples(tmp_path):
    rows = "".join(f"review {i} {EMOJI},{'pos' if i % 3 else 'neg'}\n" for i in range(30))
    path = write_text(tmp_path / "train.csv", "text,label\n" + rows)
    config = _config(source="text_file", path=path, validation_split=0.2)
    data = load_text_data(config.data, config.task, config.seed)
    assert isinstance(data, TextData)
    assert data.class_names == ["neg", "pos"]
    assert (len(data.train), len(data.validation)) == (24, 6)
    assert set(data.train.texts) & set(data.validation.texts) == set()

    config.data.max_train_examples = 9
    limited = load_text_data(config.data, config.task, config.seed)
    assert len(limited.train) == 9 and len(limited.validation) == 6  # Validation is not reduced.
    assert np.bincount(limited.train.labels).tolist() == [3, 6]
    assert set(limited.train.texts) <= set(data.train.texts)


def test_load_text_data_validation_file_with_other_columns(tmp_path):
    train = write_text(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\nfine\t1\n")
    val = write_text(tmp_path / "dev.jsonl", '{"review": "great", "label": 1}\n'
                                             '{"review": "awful", "label": 0}\n')
    config = _config(source="text_file", path=train, validation_path=val,
                     text_columns=("sentence",), validation_text_columns=("review",))
    config.task = "binary"
    data = load_text_data(config.data, config.task, config.seed)
    assert data.class_names == ["0", "1"]
    assert len(data.train) == 3
    assert data.validation.texts.tolist() == ["great", "awful"]
    np.testing.assert_array_equal(data.validation.labels, [1, 0])

    # Without validation_text_columns, the validation file is read with 'sentence'.
    config.data.validation_text_columns = ()
    with pytest.raises(DataError, match=r"no key 'sentence' \(data\.text_columns\)"):
        load_text_data(config.data, config.task, config.seed)
    config.data.validation_text_columns = ("text",)
    with pytest.raises(DataError, match=r"no key 'text' \(data\.validation_text_columns\)"):
        load_text_data(config.data, config.task, config.seed)
    config.data.validation_text_columns = ("review", "other")
    with pytest.raises(ConfigError, match=r"as many columns as data\.text_columns"):
        load_text_data(config.data, config.task, config.seed)


def test_load_text_data_validation_label_unseen_in_training(tmp_path):
    train = write_text(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    val = write_text(tmp_path / "val.csv", "text,label\nc,x\nd,z\n")
    config = _config(source="text_file", path=train, validation_path=val)
    with pytest.raises(DataError, match=where(val, 3) + r" label 'z' was never seen in training"):
        load_text_data(config.data, config.task, config.seed)


def test_load_text_data_binary_needs_two_classes(tmp_path):
    path = write_text(tmp_path / "t.csv", "text,label\na,x\nb,y\nc,z\n")
    config = _config(source="text_file", path=path)
    config.task = "binary"
    with pytest.raises(DataError, match=r"exactly 2 classes.*\['x', 'y', 'z'\]"):
        load_text_data(config.data, config.task, config.seed)
    one = write_text(tmp_path / "one.csv", "text,label\na,x\nb,x\n")
    config = _config(source="text_file", path=one)
    with pytest.raises(DataError, match=r"at least 2 classes"):
        load_text_data(config.data, config.task, config.seed)


def test_load_text_data_regression_file(tmp_path):
    rows = "".join(f"{{\"text\": \"t{i}\", \"score\": {i / 10}}}\n" for i in range(10))
    path = write_text(tmp_path / "stsb.jsonl", rows)
    config = _config(source="text_file", path=path, label_column="score", validation_split=0.3)
    config.task = "regression"
    data = load_text_data(config.data, config.task, config.seed)
    assert data.class_names == []
    assert (len(data.train), len(data.validation)) == (7, 3)
    assert data.train.labels.dtype == np.float32


def test_load_text_data_text_folder_with_validation_folder(tmp_path):
    train = _folder(tmp_path / "train", {"neg": 3, "pos": 2})
    val = _folder(tmp_path / "val", {"pos": 1})
    config = _config(source="text_folder", path=str(train), validation_path=str(val))
    data = load_text_data(config.data, config.task, config.seed)
    assert data.class_names == ["neg", "pos"]
    assert len(data.train) == 5 and data.validation.labels.tolist() == [1]
    config.task = "regression"
    with pytest.raises(ConfigError, match=r"task='regression'"):
        load_text_data(config.data, config.task, config.seed)


def test_load_text_data_tfds_with_validation_split(tiny_tfds_dir, no_network):
    config = _config(source="tfds", tfds_name="tiny_sentiment", tfds_data_dir=tiny_tfds_dir,
                     tfds_validation_split="test", max_train_examples=4)
    data = load_text_data(config.data, config.task, config.seed)
    assert data.class_names == ["neg", "pos"]
    assert len(data.train) == 4 and sorted(np.bincount(data.train.labels).tolist()) == [2, 2]
    assert sorted(data.validation.texts.tolist()) == ["awful", "not bad"]
    config.data.tfds_validation_split = ""
    held_out = load_text_data(config.data, config.task, config.seed)
    assert len(held_out.validation) == 2 and len(held_out.train) == 4
    config.data.validation_path = str(tiny_tfds_dir)
    with pytest.raises(ConfigError, match=r"tfds_validation_split"):
        load_text_data(config.data, config.task, config.seed)


@needs_chatterbot
def test_load_text_data_chatterbot_binary():
    config = _config(source="chatterbot", topics=("ai", "trivia"))
    config.task = "binary"
    data = load_text_data(config.data, config.task, config.seed)
    assert data.class_names == ["ai", "trivia"]
    assert len(data.train) + len(data.validation) == len(load_chatterbot_topics(("ai", "trivia")))
    assert set(np.unique(data.validation.labels)) == {0, 1}


def test_load_text_data_unknown_source():
    config = _config(source="digits")
    with pytest.raises(ConfigError, match=r"data\.source must be one of 'text_file'"):
        load_text_data(config.data, config.task, config.seed)
