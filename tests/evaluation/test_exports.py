"""The export check: agreement, probability difference, accuracy and the accuracy-drop flag."""

import os

import keras
import numpy as np

from sft_keras.evaluation.exports import check_exports, write_exports_report
from sft_keras.serving.formats import export_graph_format


def test_a_file_less_accurate_than_keras_is_flagged(tmp_path):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    folder = export_graph_format("litert", model, str(tmp_path / "litert"), ["a", "b", "c"],
                                 "classification", ("float32",), {})
    x = {"images": np.random.RandomState(0).uniform(0, 255, (30, 8, 8, 3)).astype(np.float32)}
    keras_top1 = np.asarray(model(x["images"])).argmax(-1)
    path = os.path.join(folder, "model_float32.tflite")

    # Labels equal to Keras's top-1: the same file, same accuracy, not flagged.
    rows = check_exports(lambda b: np.asarray(model(b["images"])), [("litert", "float32", path)],
                         x, keras_top1, max_accuracy_drop=0.01, latency=False)
    assert [r["accuracy"] for r in rows] == [1.0, 1.0]
    assert rows[1]["agreement"] == 1.0 and rows[1]["max_prob_diff"] < 1e-5
    assert not rows[1]["flagged"]

    # A reference that is always right: the file is less accurate than it, and flagged.
    labels = (keras_top1 + 1) % 3

    def oracle(batch):  # Evaluated in one batch of 30: its rows line up with the labels.
        return np.eye(3, dtype=np.float32)[labels][:len(batch["images"])]

    rows = check_exports(oracle, [("litert", "float32", path)], x, labels,
                         max_accuracy_drop=0.01, latency=False)
    assert rows[0]["accuracy"] == 1.0 and rows[1]["accuracy"] == 0.0 and rows[1]["flagged"]
    report = write_exports_report(str(tmp_path / "report"), rows, 0.01, workdir=str(tmp_path))
    text = open(report).read()
    assert "| litert | float32 | litert/1/model_float32.tflite |" in text
    assert "accuracy drop > 0.01" in text and "Flagged: litert float32" in text
