"""Head L2, label smoothing and class weights."""

import logging
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.models import build_image_model
from sft_keras.tasks import get_task, resolve_class_weight
from sft_keras.training import train_and_evaluate


def test_head_l2_adds_the_penalty_to_model_losses():
    config = get_default_config()
    config.model.backbone = "small_cnn"
    config.model.head.hidden_units = (8,)
    assert build_image_model(config, 3).losses == []
    config.model.head.l2 = 0.01
    model = build_image_model(config, 3)
    kernels = [model.get_layer(n).kernel for n in ("head_dense_0", "head_output")]
    expected = sum(0.01 * float(np.sum(keras.ops.convert_to_numpy(k) ** 2)) for k in kernels)
    assert len(model.losses) == 2
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_changes_the_loss():
    y_true, y_pred = np.array([0, 2]), np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7]], np.float32)
    task = get_task("classification")
    plain, smooth = float(task.loss()(y_true, y_pred)), float(task.loss(0.3)(y_true, y_pred))
    # Smoothed targets: 0.8 on the true class, 0.1 on each other.
    target = np.full((2, 3), 0.1)
    target[[0, 1], [0, 2]] = 0.8
    assert smooth == pytest.approx(float(np.mean(-np.sum(target * np.log(y_pred), axis=1))), rel=1e-5)
    assert plain == pytest.approx(float(np.mean(-np.log([0.8, 0.7]))), rel=1e-5)
    binary = get_task("binary")
    yb, pb = np.array([[1.0]]), np.array([[0.99]], np.float32)
    assert float(binary.loss(0.2)(yb, pb)) > 5 * float(binary.loss()(yb, pb))


def test_balanced_class_weight_matches_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 8 + [1] * 2 + [2] * 2)
    weights = resolve_class_weight("balanced", labels, ["a", "b", "c"])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(list(weights.values()), expected, rtol=1e-3)
    assert resolve_class_weight("1,2,3", labels, ["a", "b", "c"]) == {0: 1.0, 1: 2.0, 2: 3.0}
    assert resolve_class_weight("c:5", labels, ["a", "b", "c"]) == {0: 1.0, 1: 1.0, 2: 5.0}
    assert resolve_class_weight("", labels, ["a", "b", "c"]) is None


def test_class_weight_errors_echo_value_and_classes():
    with pytest.raises(ConfigError, match=r"unknown class 'd'.*\['a', 'b', 'c'\].*'d:2'"):
        resolve_class_weight("d:2", [0], ["a", "b", "c"])
    with pytest.raises(ConfigError, match="2 weights for 3 classes"):
        resolve_class_weight("1,2", [0], ["a", "b", "c"])
    with pytest.raises(ConfigError, match="train.class_weight.*Received: train.class_weight='heavy'"):
        validate_config({"train": {"class_weight": "heavy"}})
    with pytest.raises(ConfigError, match="train.label_smoothing.*regression"):
        validate_config({"task": "regression", "train": {"label_smoothing": 0.1, "monitor": "val_loss"}})


def test_class_weight_weighs_the_loss_with_tf_data():
    # Keras 3 turns class_weight into sample weights inside a tf.data pipeline.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax",
                                                                     kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    ds = tf.data.Dataset.from_tensor_slices((np.ones((4, 1), np.float32), np.array([0, 0, 0, 1]))).batch(4)
    plain = model.fit(ds, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    weighted = model.fit(ds, epochs=1, verbose=0, shuffle=False, class_weight={0: 1.0, 1: 5.0}).history["loss"][0]
    assert plain == pytest.approx(np.log(2), rel=1e-5)
    assert weighted == pytest.approx(np.log(2) * (3 + 5) / 4, rel=1e-5)


def test_run_with_l2_smoothing_and_balanced_weights(tmp_path, image_folder, caplog):
    shutil.rmtree(os.path.join(image_folder, "diagonal"))  # Imbalanced: 12 vs 4 examples.
    vertical = os.path.join(image_folder, "vertical")
    for name in sorted(os.listdir(vertical))[4:]:
        os.remove(os.path.join(vertical, name))
    config = validate_config({
        "data": {"source": "image_folder", "path": image_folder, "validation_split": 0.25},
        "model": {"backbone": "small_cnn", "head": {"l2": 0.001}},
        "train": {"epochs": 3, "batch_size": 8, "label_smoothing": 0.1,
                  "class_weight": "balanced", "early_stopping_patience": 0},
    })
    caplog.set_level(logging.INFO, logger="absl")
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(metrics["loss"])
    # 12 training examples: 9 horizontal, 3 vertical -> 12 / (2 * count).
    assert "{'horizontal': 0.6667, 'vertical': 2.0}" in caplog.text
