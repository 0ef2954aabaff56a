"""Per-label multilabel thresholds: parsing, errors, metrics, tuning, report and export."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as sk_metrics

from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.evaluation.report import tune_thresholds
from sft_keras.serving.export import export_image_model
from sft_keras.models import build_image_model
from sft_keras.tasks import (ThresholdedBinaryAccuracy, ThresholdedF1Score, get_task,
                             parse_thresholds, resolve_thresholds, task_from_config)
from sft_keras.training import train_and_evaluate


def test_parse_thresholds():
    assert parse_thresholds("") == {} and parse_thresholds("tune") == {}
    assert parse_thresholds(" a:0.3 , b c:0.75") == {"a": 0.3, "b c": 0.75}
    assert parse_thresholds("x:y:0.2") == {"x:y": 0.2}  # The last ':' splits.


@pytest.mark.parametrize("spec, why", [
    ("a=0.3", r"item 'a=0.3' is not 'label:threshold'"),
    ("a:0.3,", r"item '' is not 'label:threshold'"),
    (":0.3", r"item ':0.3' has no label name"),
    ("a:high", r"label 'a' the threshold 'high', which is not a number"),
    ("a:0", r"label 'a' the threshold 0.0, outside \(0, 1\)"),
    ("a:1.5", r"label 'a' the threshold 1.5, outside \(0, 1\)"),
    ("a:0.2,a:0.4", r"names label 'a' twice"),
])
def test_bad_thresholds_are_config_errors_echoing_the_value(spec, why, tmp_path):
    with pytest.raises(ConfigError, match=why + r".*Received: train.multilabel_thresholds="):
        parse_thresholds(spec)
    (tmp_path / "x.csv").write_text("path,label\n")
    config = {"task": "multilabel", "data": {"source": "csv", "path": str(tmp_path / "x.csv")},
              "model": {"backbone": "small_cnn"}, "train": {"multilabel_thresholds": spec}}
    with pytest.raises(ConfigError, match="train.multilabel_thresholds"):
        validate_config(config)


def test_thresholds_need_task_multilabel():
    with pytest.raises(ConfigError, match="is for task='multilabel', not task='classification'"):
        validate_config({"train": {"multilabel_thresholds": "a:0.3"}})


def test_unknown_label_names_the_label_and_lists_the_classes():
    with pytest.raises(ConfigError, match=r"label 'sprots', which is not one of the classes "
                                          r"\['news', 'sports'\].*Received: .*='sprots:0.3'"):
        resolve_thresholds("sprots:0.3", ["news", "sports"])
    config = get_default_config()
    config.task = "multilabel"
    config.train.multilabel_threshold = 0.6
    config.train.multilabel_thresholds = "sports:0.3"
    assert task_from_config(config, ["news", "sports"]).label_thresholds(2) == [0.6, 0.3]
    assert task_from_config(config).label_thresholds(2) == [0.6, 0.6]  # Names not known yet.
    config.train.multilabel_thresholds = "tune"
    tuned = task_from_config(config, ["news", "sports"], tuned={"news": 0.2, "sports": 0.8})
    assert tuned.thresholds == (0.2, 0.8)


def test_training_rejects_an_unknown_label_before_building_a_model(tmp_path):
    rows = ["path,label"]
    for i in range(8):
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)))
        rows.append(f"{i}.png,{'h|v' if i % 2 else 'h'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    config = validate_config({
        "task": "multilabel", "data": {"source": "csv", "path": str(tmp_path / "m.csv")},
        "model": {"backbone": "small_cnn"}, "train": {"multilabel_thresholds": "h:0.4,x:0.3"},
    })
    with pytest.raises(ConfigError, match=r"label 'x', which is not one of the classes \['h', 'v'\]"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_thresholded_metrics_match_scikit_learn():
    rng = np.random.RandomState(0)
    y_true = (rng.rand(50, 3) < 0.4).astype(np.float32)
    y_pred = rng.rand(50, 3).astype(np.float32)
    thresholds = [0.2, 0.5, 0.8]
    predicted = (y_pred >= np.array(thresholds)).astype(int)
    for average in ("micro", "macro"):
        metric = ThresholdedF1Score(thresholds, average=average)
        metric.update_state(y_true, y_pred)
        expected = sk_metrics.f1_score(y_true.astype(int), predicted, average=average)
        assert float(metric.result()) == pytest.approx(expected, abs=1e-5)
    accuracy = ThresholdedBinaryAccuracy(thresholds)
    accuracy.update_state(y_true, y_pred)
    assert float(accuracy.result()) == pytest.approx(np.mean(predicted == y_true), abs=1e-6)
    assert ThresholdedF1Score.from_config(metric.get_config()).thresholds == thresholds


def test_tuned_thresholds_beat_the_default_where_the_scale_is_off():
    # Label 'low' is only ever predicted with probabilities below 0.5.
    rng = np.random.RandomState(0)
    y = (rng.rand(200, 2) < 0.5).astype(int)
    p = np.clip(np.stack([0.15 + 0.2 * y[:, 0], 0.3 + 0.4 * y[:, 1]], 1)
                + rng.normal(0, 0.05, (200, 2)), 0.01, 0.99)
    tuned = tune_thresholds(y, p, ["low", "fair"])
    assert 0.2 <= tuned["low"] <= 0.3 and 0.4 <= tuned["fair"] <= 0.6, tuned
    f1 = lambda t: sk_metrics.f1_score(y[:, 0], p[:, 0] >= t)  # noqa: E731
    assert f1(tuned["low"]) > 0.95 > 0.5 > f1(0.5)
    assert tune_thresholds(np.zeros((4, 1)), np.full((4, 1), 0.9), ["none"], 0.4) == {"none": 0.4}


def test_export_applies_per_label_thresholds(tmp_path):
    config = get_default_config()
    config.task, config.model.backbone = "multilabel", "small_cnn"
    keras.utils.set_random_seed(0)
    model = build_image_model(config, 3)
    images = tf.constant(np.random.RandomState(0).randint(0, 255, (6, 32, 32, 3)), tf.float32)
    probabilities = model.predict(images, verbose=0)
    # Each column's median: some rows above, some below, per label.
    thresholds = tuple(float(t) for t in np.median(probabilities, axis=0))
    task = get_task("multilabel", thresholds=thresholds, label_separator=";")
    path = export_image_model(model, str(tmp_path), ["a", "b", "c"], task, (32, 32))
    out = tf.saved_model.load(path).signatures["serve_images"](images=images)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-5)
    served = out["probabilities"].numpy()
    expected = served >= np.array(thresholds, np.float32)
    np.testing.assert_array_equal(out["predicted"].numpy(), expected)
    assert 0 < expected.sum() < expected.size
    assert [s.decode() for s in out["labels"].numpy()] == [
        ";".join(np.array(["a", "b", "c"])[row]) for row in expected
    ]
    info = json.load(open(os.path.join(path, "assets.extra", "export_info.json")))
    assert info["multilabel_thresholds"] == dict(zip("abc", thresholds))
    assert info["label_separator"] == ";"


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    """A 2-epoch small_cnn multilabel run with train.multilabel_thresholds='tune'.

    The default threshold 0.9 is far too high for a model this short-trained,
    so tuning has to move it.
    """
    tmp_path = tmp_path_factory.mktemp("tuned")
    rng = np.random.RandomState(0)
    rows = ["path,label"]
    for i in range(24):
        kind = ["h", "v", "h|v"][i % 3]
        image = rng.randint(0, 60, (32, 32, 3)).astype(np.uint8)
        if "h" in kind:
            image[12:20, :, :] = 230
        if "v" in kind:
            image[:, 12:20, :] = 230
        tf.io.write_file(str(tmp_path / f"{i}.png"), tf.io.encode_png(image))
        rows.append(f"{i}.png,{kind}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    config = validate_config({
        "task": "multilabel",
        "data": {"source": "csv", "path": str(tmp_path / "m.csv"), "validation_split": 0.5},
        "model": {"backbone": "small_cnn"},
        "train": {"epochs": 2, "batch_size": 12, "early_stopping_patience": 0,
                  "multilabel_threshold": 0.9, "multilabel_thresholds": "tune"},
    })
    workdir = str(tmp_path / "run")
    return tmp_path, workdir, train_and_evaluate(config, workdir)


def test_tune_writes_thresholds_used_by_report_and_export(tuned_run):
    tmp_path, workdir, metrics = tuned_run
    saved = json.load(open(os.path.join(workdir, "report", "thresholds.json")))
    thresholds = saved["thresholds"]
    assert list(thresholds) == ["h", "v"] and saved["source"].startswith("tuned")
    assert all(0 < t < 1 for t in thresholds.values()) and min(thresholds.values()) < 0.9
    assert saved["default"] == 0.9
    info = json.load(open(os.path.join(metrics["export_path"], "assets.extra", "export_info.json")))
    assert info["multilabel_thresholds"] == thresholds
    # The export serves with the tuned thresholds.
    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    out = serve(image_bytes=tf.stack([tf.io.read_file(str(tmp_path / f"{i}.png"))
                                      for i in range(24)]))
    np.testing.assert_array_equal(
        out["predicted"].numpy(), out["probabilities"].numpy() >= np.array(list(thresholds.values()),
                                                                            np.float32))
    # Keras metrics were recompiled with the tuned thresholds: they agree with the report.
    assert metrics["f1_micro"] == pytest.approx(metrics["micro_f1"], abs=1e-4)


def test_sft_eval_and_reexport_use_the_tuned_thresholds(tuned_run, tmp_path):
    from sft_keras.evaluation.eval_run import evaluate_workdir
    from sft_keras.run import load_run

    _, workdir, trained = tuned_run
    thresholds = json.load(open(os.path.join(workdir, "report", "thresholds.json")))["thresholds"]
    metrics = evaluate_workdir(workdir)  # The validation split again, same weights.
    assert metrics["micro_f1"] == pytest.approx(trained["micro_f1"], abs=1e-6)
    assert metrics["f1_micro"] == pytest.approx(metrics["micro_f1"], abs=1e-4)
    path = load_run(workdir).export(str(tmp_path / "export"))
    info = json.load(open(os.path.join(path, "assets.extra", "export_info.json")))
    assert info["multilabel_thresholds"] == thresholds
