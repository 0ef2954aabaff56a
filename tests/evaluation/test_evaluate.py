"""The evaluation report: metrics, plots, worst examples, and the report folder of a run."""

import csv
import json
import os

import matplotlib.image
import numpy as np
import pytest

from sft_keras.evaluation import plots
from sft_keras.config import validate_config
from sft_keras.evaluation.report import summary_metrics
from sft_keras.training import train_and_evaluate

from helpers import (run_cli, write_image_folder, write_sentiment_csv,
                     write_tiny_bert_preset)

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_HEADER, path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= 300, pixels.shape
    return pixels


def test_confusion_matrix_plot_with_3_and_25_classes(tmp_path):
    small = plots.plot_confusion_matrix([[5, 1, 0], [0, 4, 2], [1, 0, 6]], ["a", "b", "c"])
    ax = small.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted label", "True label")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert sorted(t.get_text() for t in ax.texts) == sorted("510042106")  # Counts in cells.

    names = [f"class_number_{i}" for i in range(25)]
    matrix = np.eye(25, dtype=int) * 4 + 1
    large = plots.plot_confusion_matrix(matrix, names, normalize=True)
    ax = large.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xticklabels()[0].get_rotation() == 45
    assert len(ax.texts) == 0  # Too many cells for numbers; the colour carries them.
    assert large.get_size_inches()[1] > 2 * small.get_size_inches()[1]
    np.testing.assert_allclose(ax.images[0].get_array().sum(axis=1), 1.0)  # Rows normalized.
    path = plots.save_figure(large, str(tmp_path / "cm25.png"))
    assert _assert_png(path).shape[0] >= 1000


def test_training_curves_from_a_csv_log(tmp_path):
    path = tmp_path / "training_log.csv"
    path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,0.4,1.3\n"
                    "1,0.7,0.8,0.6,1.0\n2,0.8,0.5,0.7,0.9\n")
    figure = plots.plot_training_curves(str(path))
    assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy"]
    loss_ax = figure.axes[0]
    assert loss_ax.get_xlabel() == "Epoch"
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation"]
    np.testing.assert_allclose(loss_ax.get_lines()[1].get_ydata(), [1.3, 1.0, 0.9])
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_xdata(), [1, 2, 3])


def test_summary_metrics_match_hand_computed_values():
    labels = np.array([0, 0, 1, 2])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    m = summary_metrics(labels, probs, "classification", 3)
    assert m["accuracy"] == 0.75
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["weighted_recall"] == pytest.approx(0.75)
    assert "roc_auc" not in m
    two = summary_metrics(np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]),
                          "classification", 2)
    assert two["roc_auc"] == 1.0 and two["accuracy"] == pytest.approx(2 / 3)
    r = summary_metrics(np.array([1.0, 2.0, 3.0]), np.array([[1.0], [2.0], [5.0]]), "regression", 0)
    assert r == pytest.approx({"mse": 4 / 3, "mae": 2 / 3, "r2": 1 - 4 / 2})


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_run")
    images = write_image_folder(str(root / "images"), per_class=8)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.5},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 2, "batch_size": 8, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })
    workdir = str(root / "workdir")
    metrics = train_and_evaluate(config, workdir)
    return workdir, images, metrics


def test_run_writes_the_report_folder(image_run):
    workdir, images, metrics = image_run
    report = os.path.join(workdir, "report")
    assert {"metrics.json", "classification_report.txt", "classification_report.json",
            "confusion_matrix.png", "confusion_matrix_normalized.png", "training_curves.png",
            "misclassified.jsonl"} <= set(os.listdir(report))
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "training_curves.png"):
        _assert_png(os.path.join(report, name))
    saved = json.load(open(os.path.join(report, "metrics.json")))
    assert saved == json.load(open(os.path.join(workdir, "metrics.json")))  # Same at top level.
    assert saved["num_examples"] == 12 and saved["split"] == "validation"
    assert {"loss", "accuracy", "macro_precision", "macro_recall", "macro_f1",
            "weighted_precision", "weighted_recall", "weighted_f1"} <= set(saved)
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    class_report = json.load(open(os.path.join(report, "classification_report.json")))
    assert sum(class_report[c]["support"] for c in ("diagonal", "horizontal", "vertical")) == 12
    assert open(os.path.join(workdir, "classification_report.txt")).read() == open(
        os.path.join(report, "classification_report.txt")).read()


def test_misclassified_lists_the_worst_wrong_predictions(image_run):
    workdir, images, metrics = image_run
    lines = open(os.path.join(workdir, "report", "misclassified.jsonl")).read().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == round((1 - metrics["accuracy"]) * 12)
    for row in rows:
        assert row["input"].startswith(images) and os.path.isfile(row["input"])
        assert row["true_label"] != row["predicted_label"]
        assert row["true_label"] == os.path.basename(os.path.dirname(row["input"]))
        assert row["true_label_probability"] < row["probability"] <= 1.0
    probabilities = [row["true_label_probability"] for row in rows]
    assert probabilities == sorted(probabilities)  # Worst first.


def test_worst_examples_for_text_and_regression(tmp_path):
    from sft_keras.data import TextExamples
    from sft_keras.evaluation.report import worst_examples

    examples = TextExamples(np.array(["fine", "awful", "great", "meh"], object),
                            np.array([1, 0, 1, 0], np.int32), ["neg", "pos"])
    outputs = np.array([[0.9], [0.7], [0.1], [0.4]])  # P(pos): 2 wrong, "great" worst.
    rows = worst_examples(examples, outputs, "binary", ["neg", "pos"], str(tmp_path), k=5)
    assert [(r["input"], r["true_label"], r["predicted_label"]) for r in rows] == [
        ("great", "pos", "neg"), ("awful", "neg", "pos")]
    assert rows[0]["probability"] == pytest.approx(0.9)
    assert rows[0]["true_label_probability"] == pytest.approx(0.1)
    assert rows[0]["loss"] == pytest.approx(-np.log(0.1))

    targets = TextExamples(np.array(["a", "b", "c"], object), np.array([1.0, 2.0, 3.0], np.float32), [])
    rows = worst_examples(targets, np.array([[1.5], [2.0], [0.0]]), "regression", [], str(tmp_path), k=2)
    assert [(r["input"], r["abs_error"]) for r in rows] == [("c", 3.0), ("a", 0.5)]


# --- sft-eval ---------------------------------------------------------------------


def test_eval_rebuilds_the_run_and_reproduces_its_validation_metrics(image_run):
    from sft_keras.evaluation.eval_run import evaluate_workdir

    workdir, _, metrics = image_run
    before = json.load(open(os.path.join(workdir, "report", "metrics.json")))
    again = evaluate_workdir(workdir)
    assert again["report_dir"] == os.path.join(workdir, "report")
    assert again["num_examples"] == 12
    for key in ("loss", "accuracy", "macro_f1"):
        assert again[key] == pytest.approx(before[key], abs=1e-5), key
    assert json.load(open(os.path.join(workdir, "report", "metrics.json")))["split"] == "validation"


def test_eval_cli_scores_new_data_into_its_own_report(image_run, tmp_path):
    workdir, _, _ = image_run
    new = write_image_folder(str(tmp_path / "holdout"), class_names=("vertical", "diagonal"),
                             per_class=3)
    result = run_cli(["python", "-m", "sft_keras.cli.eval", f"--workdir={workdir}",
                      f"--data={new}", "--checkpoint=last"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = os.path.join(workdir, "report_holdout")
    metrics = json.load(open(os.path.join(report, "metrics.json")))
    assert metrics["num_examples"] == 6 and metrics["split"] == new
    class_report = json.load(open(os.path.join(report, "classification_report.json")))
    assert class_report["horizontal"]["support"] == 0  # Labels mapped through labels.txt.
    assert class_report["vertical"]["support"] == 3
    _assert_png(os.path.join(report, "confusion_matrix.png"))

    missing = run_cli(["python", "-m", "sft_keras.cli.eval", f"--workdir={tmp_path / 'nope'}"])
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1].startswith("sft-eval: error: ")
    assert "does not exist or is not a folder" in missing.stderr


def test_eval_unknown_label_names_file_line_and_label(image_run, tmp_path):
    from sft_keras.errors import DataError
    from sft_keras.evaluation.eval_run import evaluate_workdir

    workdir, images, _ = image_run
    manifest = tmp_path / "test.csv"
    manifest.write_text(f"path,label\n{images}/vertical/000.png,vertical\n"
                        f"{images}/diagonal/000.png,sideways\n")
    with pytest.raises(DataError, match=r"test\.csv:3: label 'sideways' was never seen"):
        evaluate_workdir(workdir, data_path=str(manifest))


def test_regression_report_with_in_memory_images(tmp_path):
    import keras
    import tensorflow as tf

    from sft_keras.data import ImageExamples
    from sft_keras.evaluation.report import write_report

    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, (10, 8, 8, 3)).astype(np.uint8)
    examples = ImageExamples(images, np.arange(10, dtype=np.float32), [])
    dataset = tf.data.Dataset.from_tensor_slices(
        (images.astype(np.float32), examples.labels)).batch(4)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    model.compile(loss="mse", metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    report = str(tmp_path / "report")
    metrics = write_report(model, dataset, examples, [], "regression", report, "validation")
    predictions = model.predict(images.astype(np.float32), verbose=0)[:, 0]
    assert metrics["mse"] == pytest.approx(np.mean((predictions - np.arange(10)) ** 2), rel=1e-4)
    assert metrics["loss"] == pytest.approx(metrics["mse"], rel=1e-4)
    assert {"mae", "r2", "num_examples"} <= set(metrics)
    assert {"metrics.json", "predictions.png", "misclassified.jsonl"} <= set(os.listdir(report))
    assert "classification_report.json" not in os.listdir(report)
    _assert_png(os.path.join(report, "predictions.png"))
    rows = [json.loads(line) for line in open(os.path.join(report, "misclassified.jsonl"))]
    assert len(rows) == 10
    errors = [r["abs_error"] for r in rows]
    assert errors == sorted(errors, reverse=True)
    first = rows[0]
    # In-memory images are written out so each line names a file.
    np.testing.assert_array_equal(matplotlib.image.imread(first["input"]) * 255,
                                  images[first["index"]].astype(np.float32))


@pytest.mark.slow  # 95 s measured on 2 cores shared by 4 test runs: a BERT run, then its rebuild.
def test_eval_on_a_text_run_with_new_data(tmp_path):
    from sft_keras.evaluation.eval_run import evaluate_workdir

    preset = write_tiny_bert_preset(tmp_path / "bert", hidden_dim=16, intermediate_dim=32)
    config = validate_config({
        "data": {"source": "text_file", "path": write_sentiment_csv(tmp_path / "train.csv", n=32),
                 "sequence_length": 16, "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": 1, "batch_size": 16, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })
    workdir = str(tmp_path / "workdir")
    train_and_evaluate(config, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "report", "misclassified.jsonl"))]
    assert all(isinstance(r["input"], str) and r["input"] for r in rows)

    test_csv = write_sentiment_csv(tmp_path / "test.csv", n=10, seed=5)
    metrics = evaluate_workdir(workdir, data_path=test_csv)
    assert metrics["report_dir"] == os.path.join(workdir, "report_test")
    assert metrics["num_examples"] == 10 and "roc_auc" in metrics
    texts = [row[0] for row in csv.reader(open(test_csv))][1:]
    for row in map(json.loads, open(os.path.join(workdir, "report_test", "misclassified.jsonl"))):
        assert row["input"] == texts[row["index"]]


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on the mismatch.
def test_eval_labels_that_do_not_fit_the_run_are_clear_errors(image_run, tmp_path):
    import shutil

    from sft_keras.errors import DataError, WorkdirError
    from sft_keras.evaluation.eval_run import evaluate_workdir

    workdir, _, _ = image_run
    edited = str(tmp_path / "edited")
    shutil.copytree(workdir, edited, ignore=shutil.ignore_patterns("report*", "logs"))
    with open(os.path.join(edited, "labels.txt"), "w") as f:
        f.write("horizontal\nvertical\n")
    with pytest.raises(WorkdirError, match=r"does not fit the model rebuilt .*\(2 classes\)"):
        evaluate_workdir(edited)
    # The run's data folder changed since training: its classes no longer match labels.txt.
    moved = str(tmp_path / "moved")
    shutil.copytree(workdir, moved, ignore=shutil.ignore_patterns("report*", "logs"))
    two = write_image_folder(str(tmp_path / "two"), class_names=("horizontal", "vertical"),
                             per_class=4)
    config = json.load(open(os.path.join(moved, "config.json")))
    config["data"]["path"] = two
    json.dump(config, open(os.path.join(moved, "config.json"), "w"))
    with pytest.raises(DataError, match=r"now has classes \['horizontal', 'vertical'\]"):
        evaluate_workdir(moved)
    # Scoring a folder with a subset of the classes is fine.
    assert evaluate_workdir(moved, data_path=two)["num_examples"] == 8
