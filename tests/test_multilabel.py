"""task='multilabel': label cells with several labels, sigmoid head, metrics, export."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import validate_config
from sft_keras.data import read_csv_manifest, read_text_table, split_examples
from sft_keras.errors import ConfigError, DataError
from sft_keras.training import train_and_evaluate

from helpers import write_image_folder, write_tagged_csv, write_tiny_bert_preset


def test_label_cells_become_multi_hot(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,tags\nhello,b|a\nworld, c \nboth,a|c|a\n")
    examples = read_text_table(str(path), label_column="tags", task="multilabel")
    assert examples.class_names == ["a", "b", "c"]
    assert examples.labels.dtype == np.float32
    assert examples.labels.tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 1]]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "x", "tags": ["b", "a"]}\n{"text": "y", "tags": "c;b"}\n')
    examples = read_text_table(str(jsonl), label_column="tags", task="multilabel",
                               label_separator=";")
    assert examples.labels.tolist() == [[1, 1, 0], [0, 1, 1]]


def test_bad_label_cells_name_file_and_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,tags\nhello,a\nworld,a||b\n")
    with pytest.raises(DataError, match=r"t.csv:3: empty label in tags='a\|\|b'"):
        read_text_table(str(path), label_column="tags", task="multilabel")
    path.write_text("text,tags\nhello,a|z\n")
    with pytest.raises(DataError, match=r"t.csv:2: label 'z' was never seen.*\['a', 'b'\]"):
        read_text_table(str(path), label_column="tags", task="multilabel", class_names=["a", "b"])
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "x", "tags": ["a"]}\n')
    with pytest.raises(DataError, match="t.jsonl:1: .*needs task='multilabel'"):
        read_text_table(str(jsonl), label_column="tags", task="classification")


def test_multi_hot_labels_get_a_seeded_random_split(tmp_path):
    examples = read_text_table(write_tagged_csv(tmp_path / "t.csv", n=20), label_column="tags",
                               task="multilabel")
    train, validation = split_examples(examples, 0.25, seed=0)
    again, _ = split_examples(examples, 0.25, seed=0)
    assert len(train) == 15 and len(validation) == 5
    assert train.texts.tolist() == again.texts.tolist()
    assert validation.labels.shape == (5, 3)


def test_multilabel_needs_a_table_source(image_folder):
    with pytest.raises(ConfigError, match="data.source.*task='multilabel'.*'image_folder'"):
        validate_config({"task": "multilabel", "model": {"backbone": "small_cnn"},
                         "data": {"source": "image_folder", "path": image_folder}})


def test_image_csv_manifest_with_several_labels(tmp_path):
    write_image_folder(str(tmp_path), class_names=("h", "v"), per_class=2)
    path = tmp_path / "manifest.csv"
    path.write_text("path,label\nh/000.png,bar|flat\nv/000.png,bar\n")
    examples = read_csv_manifest(str(path), task="multilabel")
    assert examples.class_names == ["bar", "flat"]
    assert examples.labels.tolist() == [[1, 1], [1, 0]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    preset = write_tiny_bert_preset(root / "bert", hidden_dim=32, intermediate_dim=64)
    config = validate_config({
        "task": "multilabel",
        "data": {"source": "text_file", "path": write_tagged_csv(root / "train.csv"),
                 "label_column": "tags", "sequence_length": 12, "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        # A random-init tiny BERT learns from scratch: a constant rate, not the decaying
        # recipe for pretrained encoders.
        "train": {"epochs": 8, "batch_size": 24, "learning_rate": 5e-3, "schedule": "constant",
                  "monitor": "val_auc",
                  "early_stopping_patience": 0, "multilabel_threshold": 0.4},
    })
    workdir = str(root / "workdir")
    return config, workdir, train_and_evaluate(config, workdir)


def test_multilabel_learns_better_than_chance(trained):
    _, workdir, metrics = trained
    assert metrics["auc"] > 0.85, metrics  # Chance: 0.5.
    assert metrics["f1_micro"] > 0.75, metrics
    assert {"f1_macro", "micro_f1", "samples_f1", "exact_match"} <= set(metrics)
    assert open(os.path.join(workdir, "labels.txt")).read() == "cinema\nnegative\npositive\n"
    report = json.load(open(os.path.join(workdir, "classification_report.json")))
    assert {"cinema", "negative", "positive", "micro avg", "samples avg"} <= set(report)


def test_multilabel_export_returns_probabilities_predicted_and_labels(trained):
    _, _, metrics = trained
    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    out = serve(text=tf.constant(["good film was the plot", "bad and very a"]))
    assert set(out) == {"probabilities", "predicted", "labels"}
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (2, 3)
    np.testing.assert_array_equal(out["predicted"].numpy(), probabilities >= 0.4)
    labels = [x.decode() for x in out["labels"].numpy()]
    names = np.array(["cinema", "negative", "positive"])
    assert labels == ["|".join(names[row >= 0.4]) for row in probabilities]
    assert "positive" in labels[0] and "negative" in labels[1], labels
    info = json.load(open(os.path.join(metrics["export_path"], "assets.extra", "export_info.json")))
    assert info["task"] == "multilabel"
    assert info["multilabel_thresholds"] == {"cinema": 0.4, "negative": 0.4, "positive": 0.4}


def test_image_multilabel_trains_and_serves(tmp_path):
    # Each image has a horizontal bar, a vertical bar, or both: labels 'h', 'v'.
    rng = np.random.RandomState(0)
    rows = ["path,label"]
    for i in range(72):
        kind = ["h", "v", "h|v"][i % 3]
        image = rng.randint(0, 60, (32, 32, 3)).astype(np.uint8)
        if "h" in kind:
            image[12:20, :, :] = 230
        if "v" in kind:
            image[:, 12:20, :] = 230
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
        rows.append(f"{i}.png,{kind}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    config = validate_config({
        "task": "multilabel",
        "data": {"source": "csv", "path": str(tmp_path / "manifest.csv"), "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 8, "batch_size": 8, "learning_rate": 3e-3, "early_stopping_patience": 0,
                  "monitor": "val_f1_macro"},
    })
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["auc"] > 0.75, metrics  # Chance: 0.5.
    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    png = tf.io.read_file(str(tmp_path / "2.png"))  # Both bars.
    out = serve(image_bytes=tf.stack([png]))
    assert out["probabilities"].shape == (1, 2) and out["predicted"].dtype == tf.bool
    assert out["labels"].dtype == tf.string
