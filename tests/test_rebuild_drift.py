"""A finished run rebuilt for sft-eval and load_run behaves as it did in training.

Each test here failed before the run folder had one owner (`sft_keras.run`): sft-eval had its
own rebuild, which read multi-label files without `data.label_separator`, compiled without
label smoothing, parsed labels.txt differently and raised other error types; and the LoRA
checkpoint kept its own "best", lost on resume.
"""

import json
import os
import shutil

import numpy as np
import pytest

from sft_keras.backbones import text as text_backbones
from sft_keras.config import validate_config
from sft_keras.errors import WorkdirError
from sft_keras.evaluation.eval_run import evaluate_workdir
from sft_keras.run import load_run
from sft_keras.training import train_and_evaluate

from helpers import write_tagged_csv, write_tiny_bert_preset


def _multilabel_csv(path, separator, n):
    write_tagged_csv(path, n=n)
    text = open(path).read().replace("|", separator)
    open(path, "w").write(text)
    return str(path)


def test_sft_eval_reads_multilabel_data_with_the_runs_label_separator(tmp_path):
    preset = write_tiny_bert_preset(tmp_path / "bert", hidden_dim=32, intermediate_dim=64)
    train_csv = _multilabel_csv(tmp_path / "train.csv", ";", n=48)
    test_csv = _multilabel_csv(tmp_path / "test.csv", ";", n=16)
    config = validate_config({
        "task": "multilabel",
        "data": {"source": "text_file", "path": train_csv, "label_column": "tags",
                 "label_separator": ";", "validation_path": test_csv, "sequence_length": 12},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": 1, "batch_size": 16, "monitor": "val_loss",
                  "early_stopping_patience": 0},
        "export": {"enabled": False},
    })
    workdir = str(tmp_path / "run")
    trained = train_and_evaluate(config, workdir)
    # Scoring the validation file again through --data gives the training run's numbers.
    again = evaluate_workdir(workdir, data_path=test_csv)
    assert again["report_dir"] == os.path.join(workdir, "report_test")
    for key in ("loss", "auc", "f1_micro"):
        assert again[key] == pytest.approx(trained[key], abs=1e-5), key


def test_sft_eval_reports_the_training_loss_of_a_label_smoothed_run(tiny_image_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_image_run[0], workdir)
    config = json.load(open(os.path.join(workdir, "config.json")))
    config["train"]["label_smoothing"] = 0.3
    json.dump(config, open(os.path.join(workdir, "config.json"), "w"))
    run = load_run(workdir)
    assert run.model.loss.label_smoothing == 0.3
    smoothed = evaluate_workdir(workdir)["loss"]
    # By hand: cross-entropy of the model's probabilities against smoothed targets.
    validation = run.modality.load_data().validation
    probabilities = run.model.predict(run.modality.make_dataset(validation), verbose=0)
    targets = np.eye(3)[validation.labels] * 0.7 + 0.3 / 3
    by_hand = float(np.mean(-np.sum(targets * np.log(probabilities), axis=-1)))
    plain = float(np.mean(-np.log(probabilities[np.arange(len(validation)), validation.labels])))
    assert smoothed == pytest.approx(by_hand, rel=1e-4)
    assert abs(smoothed - plain) > 1e-3, (smoothed, plain)


def test_labels_txt_with_blank_lines_reads_the_same_everywhere(tiny_image_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_image_run[0], workdir)
    with open(os.path.join(workdir, "labels.txt"), "a") as f:
        f.write("\n\n")
    assert load_run(workdir).class_names == ["diagonal", "horizontal", "vertical"]
    assert evaluate_workdir(workdir)["accuracy"] == pytest.approx(
        json.load(open(os.path.join(tiny_image_run[0], "metrics.json")))["accuracy"])


def test_a_missing_workdir_file_is_the_same_error_everywhere(tiny_image_run, tmp_path):
    for name in ("config.json", "labels.txt"):
        workdir = str(tmp_path / name)
        shutil.copytree(tiny_image_run[0], workdir)
        os.remove(os.path.join(workdir, name))
        for rebuild in (load_run, evaluate_workdir):
            with pytest.raises(WorkdirError, match=f"No {name} in workdir"):
                rebuild(workdir)


def test_lora_best_file_survives_a_worse_first_epoch_after_resume(tmp_path):
    """A resumed run's first epoch replaces best.lora.h5 only if it beats the best so far."""
    import keras

    from sft_keras.models import build_text_model
    from sft_keras.models.lora import save_lora_weights
    from sft_keras.run import CheckpointDir
    from sft_keras.training.callbacks import AtomicCheckpoint, LoraCheckpoint

    preset = write_tiny_bert_preset(tmp_path / "bert")
    config = validate_config({
        "data": {"source": "chatterbot", "sequence_length": 8},
        "model": {"backbone": "bert", "preset": preset, "lora_rank": 2},
    })
    model = build_text_model(config, text_backbones.build_text_backbone("bert", preset), 2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    checkpoints = CheckpointDir(str(tmp_path / "checkpoints"))
    save_lora_weights(model, checkpoints.lora("best"))  # Epoch 1's, the best: val_loss 0.1.
    before = open(checkpoints.lora("best"), "rb").read()
    # The weights change, as one more epoch of training would change them.
    for variable in model.trainable_variables:
        variable.assign(variable + 1.0)

    state = {"last_epoch": 1, "best": 0.1, "best_epoch": 1, "stage": 0}  # Read back on resume.
    checkpoint = AtomicCheckpoint(checkpoints, monitor="val_loss", state=state)
    callbacks = keras.callbacks.CallbackList([checkpoint, LoraCheckpoint(checkpoint)],
                                             model=model)
    callbacks.on_epoch_end(1, {"loss": 0.4, "val_loss": 0.5})  # Epoch 2: worse.
    assert checkpoint.best_epoch == 1
    assert open(checkpoints.lora("best"), "rb").read() == before
    assert os.path.exists(checkpoints.lora("last"))
    callbacks.on_epoch_end(2, {"loss": 0.05, "val_loss": 0.05})  # Epoch 3: better.
    assert open(checkpoints.lora("best"), "rb").read() != before
    assert np.isfinite(checkpoint.best)
