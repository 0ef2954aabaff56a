"""Distillation from a finished run (`model.distill_from`) and smaller encoders (`model.num_layers`)."""

import csv
import os

import numpy as np
import pytest

from sft_keras.backbones import build_text_backbone, kept_layers
from sft_keras.config import validate_config
from sft_keras.errors import ConfigError
from sft_keras.models.build import find_backbone
from sft_keras.run import load_run
from sft_keras.training import train_and_evaluate
from sft_keras.training.distill import init_from_teacher
from tests.helpers import train_text_run


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished 2-layer tiny BERT run: (workdir, csv path, preset)."""
    root = str(tmp_path_factory.mktemp("teacher"))
    workdir, csv_path = train_text_run(root, epochs=2)
    return workdir, csv_path, os.path.join(root, "tiny_bert")


def student_config(teacher, **train):
    workdir, csv_path, preset = teacher
    return validate_config({
        "data": {"source": "text_file", "path": csv_path, "sequence_length": 16,
                 "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset, "num_layers": 1,
                  "distill_from": workdir},
        "train": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3,
                  "early_stopping_patience": 0, **train},
        "export": {"enabled": False},
    })


def test_student_starts_from_the_teachers_top_layer_and_learns(teacher, tmp_path):
    run = load_run(teacher[0])
    config = student_config(teacher, distill_temperature=2.0, distill_alpha=0.5)
    from sft_keras.modalities import get_modality

    student = get_modality(config).build_model(2)
    assert init_from_teacher(student, run.model) == [1]  # 1 of 2 layers: the top one.
    source, target = find_backbone(run.model), find_backbone(student)
    for got, want in zip(target.get_layer("transformer_layer_0").get_weights(),
                         source.get_layer("transformer_layer_1").get_weights()):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(target.get_layer("token_embedding").get_weights()[0],
                                  source.get_layer("token_embedding").get_weights()[0])

    workdir = str(tmp_path / "student")
    metrics = train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "training_log.csv"), encoding="utf-8") as f:
        log = list(csv.DictReader(f))
    assert float(log[-1]["loss"]) < float(log[0]["loss"])
    assert set(log[0]) >= {"accuracy", "val_accuracy", "val_loss"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    rebuilt = load_run(workdir)  # A normal run: no teacher inside.
    assert find_backbone(rebuilt.model).num_layers == 1
    assert rebuilt.model.count_params() < run.model.count_params()


def test_bad_distill_from_names_the_key_and_value(teacher, tmp_path):
    missing = str(tmp_path / "nowhere")
    config = student_config(teacher)
    config.model.distill_from = missing
    with pytest.raises(ConfigError, match=r"no such folder.*model\.distill_from='.*nowhere'"):
        train_and_evaluate(config, str(tmp_path / "a"))

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    config.model.distill_from = str(unfinished)
    with pytest.raises(ConfigError, match=r"no finished training run.*model\.distill_from="):
        train_and_evaluate(config, str(tmp_path / "b"))

    # Other labels: the same sentences with the classes renamed.
    with open(teacher[1], encoding="utf-8") as f:
        rows = list(csv.reader(f))
    other = str(tmp_path / "other.csv")
    with open(other, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:1] + [[text, f"x_{label}"] for text, label in rows[1:]])
    config.model.distill_from = teacher[0]
    config.data.path = other
    with pytest.raises(ConfigError, match=r"labels.txt .*differs.*model\.distill_from="):
        train_and_evaluate(config, str(tmp_path / "c"))


def test_num_layers_larger_than_the_presets_is_an_error(teacher):
    with pytest.raises(ConfigError, match=r"at most the 2 .*Received: model.num_layers=3"):
        build_text_backbone("bert", teacher[2], num_layers=3)


def test_num_layers_is_checked_in_the_config():
    with pytest.raises(ConfigError, match=r"Received: model.num_layers=-1"):
        validate_config({"model": {"backbone": "small_cnn", "num_layers": -1}})
    with pytest.raises(ConfigError, match=r"text .*Received: model.num_layers=2"):
        validate_config({"model": {"backbone": "small_cnn", "num_layers": 2}})
    with pytest.raises(ConfigError, match=r"Received: train.distill_alpha=1.5"):
        validate_config({"train": {"distill_alpha": 1.5}})


def test_kept_layers_span_the_encoder():
    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(6, 6) == list(range(6))


def test_image_student_reads_the_images_at_its_own_size(tmp_path):
    """The teacher's predictions come through its own preprocessing (32x32 here, 40x40 the student)."""
    from tests.helpers import train_image_run

    workdir, images = train_image_run(str(tmp_path), epochs=1)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25,
                 "image_size": (40, 40)},
        "model": {"backbone": "small_cnn", "distill_from": workdir},
        "train": {"epochs": 2, "batch_size": 8, "early_stopping_patience": 0,
                  "distill_alpha": 0.0},
        "export": {"enabled": False},
    })
    student = str(tmp_path / "student")
    metrics = train_and_evaluate(config, student)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert load_run(student).model.input.shape[1:3] == (40, 40)


def test_distillation_term_equals_keras_logits_distillation():
    """With alpha=0 the loss is Keras's own LogitsDistillation (T^2-scaled KL) on the logits.

    (Keras 3.15's default `loss="kl_divergence"` resolves to the function, not
    `KLDivergence`, and then skips the softmax: the KL of the raw logits. The
    instance takes the softmax path.)
    """
    import keras

    from sft_keras.training.distill import DistillationLoss

    rng = np.random.default_rng(0)
    teacher_logits = rng.normal(size=(4, 3)).astype("float32")
    student_logits = rng.normal(size=(4, 3)).astype("float32")
    student_probs = keras.ops.convert_to_numpy(keras.ops.softmax(student_logits))
    teacher_log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(teacher_logits))
    packed = np.c_[np.zeros((4, 1), "float32"), teacher_log_probs]
    ours = DistillationLoss(keras.losses.SparseCategoricalCrossentropy(), 3,
                            temperature=3.0, alpha=0.0)(packed, student_probs)
    theirs = keras.distillation.LogitsDistillation(
        temperature=3.0, loss=keras.losses.KLDivergence()).compute_loss(
        teacher_logits, student_logits)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-4)
