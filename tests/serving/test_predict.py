"""sft-predict: JSON lines from an exported SavedModel, for image and text exports."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.errors import DataError, ExportError
from sft_keras.serving.predict import predict_file, read_texts, resolve_export

from helpers import run_cli


def test_cli_predicts_an_image_folder_recursively(tiny_image_run, tmp_path):
    workdir, images = tiny_image_run
    output = tmp_path / "predictions.jsonl"
    result = run_cli(["python", "-m", "sft_keras.cli.predict", f"--model={workdir}/export",
                      f"--input={images}", f"--output={output}", "--batch_size=5"])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 24 and "Wrote 24 predictions" in result.stderr
    assert "24/24" in result.stderr  # The progress bar (5 batches), on stderr.
    assert [r["input"] for r in records] == sorted(r["input"] for r in records)
    serve = tf.saved_model.load(os.path.join(workdir, "export", "1")).signatures[
        "serving_default"]
    first = records[:3]
    expected = serve(image_bytes=tf.constant([open(r["input"], "rb").read() for r in first]))
    np.testing.assert_allclose([r["probabilities"] for r in first], expected["probabilities"],
                               atol=1e-6)
    assert [r["label"] for r in first] == [x.decode() for x in expected["label"].numpy()]
    accuracy = np.mean([r["label"] == os.path.basename(os.path.dirname(r["input"]))
                        for r in records])
    assert accuracy > 1 / 3  # Above chance after 2 epochs on the training images.


def test_single_image_and_version_folder(tiny_image_run):
    workdir, images = tiny_image_run
    path = os.path.join(images, "vertical", "000.png")
    (record,) = predict_file(os.path.join(workdir, "export", "1"), path)
    assert record["input"] == path and len(record["probabilities"]) == 3
    assert record["label"] in ("diagonal", "horizontal", "vertical")


def test_text_inputs_csv_txt_jsonl(tiny_text_run, tmp_path):
    workdir, csv_path = tiny_text_run
    export = os.path.join(workdir, "export")
    from_csv = list(predict_file(export, csv_path, batch_size=16))
    assert len(from_csv) == 48
    texts = [r["input"] for r in from_csv[:4]]
    serve = tf.saved_model.load(os.path.join(export, "1")).signatures["serving_default"]
    expected = serve(text=tf.constant(texts))["probabilities"].numpy()
    np.testing.assert_allclose([r["probabilities"] for r in from_csv[:4]], expected, atol=1e-6)

    txt = tmp_path / "texts.txt"
    txt.write_text("\n".join(texts) + "\n\n")
    # Another batch size: equal up to float32 summation order.
    np.testing.assert_allclose([r["probabilities"] for r in predict_file(export, str(txt))],
                               [r["probabilities"] for r in from_csv[:4]], atol=1e-6)
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"review": t, "id": i}) + "\n"
                             for i, t in enumerate(texts)))
    records = list(predict_file(export, str(jsonl), text_column="review"))
    assert [r["input"] for r in records] == texts and [r["label"] for r in records] == [
        r["label"] for r in from_csv[:4]]
    with pytest.raises(DataError, match=r"texts.jsonl:1: no key 'text' \(--text_column\)"):
        list(predict_file(export, str(jsonl)))


def test_read_texts_reads_tables_with_the_training_data_reader(tmp_path):
    table = tmp_path / "in.csv"
    table.write_text('id,review\n1,"good, really"\n2,\n')
    assert read_texts(str(table), ("review",)) == [("good, really",), ("",)]  # Empty: predicted.
    with pytest.raises(DataError, match=r"in\.csv' has no column 'text' \(--text_column\)"):
        read_texts(str(table))
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nok\na,b\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: 2 field\(s\), but the header has 1"):
        read_texts(str(bad))
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": 5}\n')
    with pytest.raises(DataError, match=r"in\.jsonl:2: text column 'text' must hold a string"):
        read_texts(str(jsonl))
    txt = tmp_path / "in.txt"
    txt.write_text("one\n\n  \ntwo\n")
    assert read_texts(str(txt)) == [("one",), ("two",)]  # Blank lines skipped.
    with pytest.raises(DataError, match="takes text pairs"):
        read_texts(str(txt), ("a", "b"))
    packed = tmp_path / "in.csv.gz"
    packed.write_text("x")
    with pytest.raises(DataError, match=r"Accepted: \.txt .*\.csv, \.tsv"):
        read_texts(str(packed))


def test_export_base_picks_the_highest_version(tiny_image_run, tmp_path):
    base = tmp_path / "export"
    source = os.path.join(tiny_image_run[0], "export", "1")
    for version in ("2", "10"):
        shutil.copytree(source, base / version)
    assert resolve_export(str(base)) == str(base / "10")
    with pytest.raises(ExportError, match="numbered versions.*Received: '.*nope' "
                                          r"\(does not exist\)"):
        resolve_export(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="No image files"):
        list(predict_file(str(base), str(tmp_path / "export" / "2" / "variables")))
