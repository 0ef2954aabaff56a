"""End to end for text: a tiny local BERT preset fine-tuned on a generated CSV."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.backbones import text as text_backbones
from sft_keras.config import get_default_config, validate_config
from sft_keras.data import make_text_dataset, read_text_table
from sft_keras.models import build_text_model
from sft_keras.training import train_and_evaluate

from helpers import FILLER, run_cli, write_sentiment_csv, write_tiny_bert_preset

@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    return write_tiny_bert_preset(tmp_path_factory.mktemp("tiny_bert"), hidden_dim=32,
                                  intermediate_dim=64)


def _config(preset, csv_path, **train):
    return validate_config({
        "data": {"source": "text_file", "path": csv_path, "sequence_length": 16,
                 "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": 8, "batch_size": 16, "learning_rate": 3e-3,
                  "early_stopping_patience": 0, **train},
    })


@pytest.fixture(scope="module")
def trained(tiny_preset, tmp_path_factory):
    root = tmp_path_factory.mktemp("text_e2e")
    config = _config(tiny_preset, write_sentiment_csv(root / "train.csv"))
    workdir = str(root / "workdir")
    metrics = train_and_evaluate(config, workdir)
    return config, workdir, metrics


def test_loss_goes_down_and_accuracy_beats_chance(trained):
    _, workdir, metrics = trained
    rows = list(csv.DictReader(open(os.path.join(workdir, "training_log.csv"))))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.6 * losses[0], losses
    assert metrics["accuracy"] >= 0.75, metrics  # Chance is 0.5; 24 validation examples.
    assert metrics["num_examples"] == 24


def test_workdir_has_the_text_outputs(trained):
    _, workdir, metrics = trained
    assert open(os.path.join(workdir, "labels.txt")).read() == "neg\npos\n"
    report = json.load(open(os.path.join(workdir, "classification_report.json")))
    assert set(report) >= {"neg", "pos", "macro avg", "weighted avg"}
    assert report["pos"]["support"] + report["neg"]["support"] == 24
    assert "precision" in open(os.path.join(workdir, "classification_report.txt")).read()
    saved = json.load(open(os.path.join(workdir, "metrics.json")))
    assert {"accuracy", "loss", "macro_f1", "weighted_f1", "num_examples"} <= set(saved)
    assert metrics["export_path"].endswith(os.path.join("export", "1"))


def _validation_tokens(config, workdir):
    examples = read_text_table(config.data.path, class_names=["neg", "pos"])
    tokenizer = text_backbones.load_text_tokenizer("bert", config.model.preset)
    preprocessor = text_backbones.make_preprocessor(tokenizer, 16)
    dataset = make_text_dataset(examples.subset(range(8)), preprocessor, batch_size=8)
    features, _ = next(iter(dataset))
    return examples.texts[:8], features


def test_checkpoint_reloads_from_preset_plus_weights(trained):
    config, workdir, _ = trained
    texts, features = _validation_tokens(config, workdir)
    first = build_text_model(config, text_backbones.build_text_backbone("bert", config.model.preset), 2)
    first.load_weights(os.path.join(workdir, "checkpoints", "best.weights.h5"))
    second = build_text_model(config, text_backbones.build_text_backbone("bert", config.model.preset), 2)
    fresh = second.predict(features, verbose=0)
    second.load_weights(os.path.join(workdir, "checkpoints", "best.weights.h5"))
    np.testing.assert_array_equal(first.predict(features, verbose=0), second.predict(features, verbose=0))
    assert not np.allclose(fresh, second.predict(features, verbose=0))


RELOAD_SCRIPT = """
import json, sys
sys.modules["tensorflow_text"] = None  # Unimportable: the export must need core TF only.
sys.modules["keras_hub"] = None
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "label": [x.decode() for x in out["label"].numpy()],
                  "keras_hub_loaded": sys.modules.get("keras_hub") is not None}))
"""


def test_export_takes_raw_strings_and_matches_the_keras_model(trained, tmp_path):
    config, workdir, metrics = trained
    texts, features = _validation_tokens(config, workdir)
    model = build_text_model(config, text_backbones.build_text_backbone("bert", config.model.preset), 2)
    model.load_weights(os.path.join(workdir, "checkpoints", "best.weights.h5"))
    expected = model.predict(features, verbose=0)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    result = run_cli(["python", str(script), metrics["export_path"], json.dumps(list(texts))])
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["keras_hub_loaded"] is False
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert served["label"] == [["neg", "pos"][i] for i in expected.argmax(axis=1)]


def test_sentence_pairs_and_mirrored_strategy(tiny_preset, tmp_path):
    assert len(tf.config.list_logical_devices("CPU")) == 2
    path = write_sentiment_csv(tmp_path / "pairs.csv", n=32, pairs=True)
    config = _config(tiny_preset, path, epochs=1)
    config.data.text_columns = ("text", "other")
    config.runtime.strategy = "mirrored"
    metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
    assert np.isfinite(metrics["loss"]) and metrics["num_examples"] == 8
    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    assert sorted(serve.structured_input_signature[1]) == ["text", "text_pair"]
    out = serve(text=tf.constant(["good film"]), text_pair=tf.constant(["the plot"]))
    assert out["probabilities"].shape == (1, 2)


def test_missing_text_column_fails_before_training(tiny_preset, tmp_path):
    path = write_sentiment_csv(tmp_path / "train.csv", n=8)
    result = run_cli([
        "python", "-m", "sft_keras.cli.train", "--config=configs/quickstart.py",
        f"--workdir={tmp_path / 'workdir'}", "--config.data.source=text_file",
        f"--config.data.path={path}", "--config.data.text_columns=('sentence',)",
        f"--config.model.preset={tiny_preset}",
    ])
    assert result.returncode != 0
    assert "sft-train: error:" in result.stderr and "'sentence'" in result.stderr
    assert "['text', 'label']" in result.stderr
    assert "Epoch 1" not in result.stdout


def test_text_regression_learns_a_numeric_target(tiny_preset, tmp_path):
    rng = np.random.RandomState(1)
    path = tmp_path / "scores.jsonl"
    with open(path, "w") as f:
        for _ in range(64):
            k = rng.randint(0, 4)  # The target: how many times "good" appears.
            words = ["good"] * k + list(rng.choice(FILLER, size=6 - k))
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": float(k)}) + "\n")
    config = _config(tiny_preset, str(path), epochs=10, learning_rate=5e-3)
    config.task = "regression"
    config.train.monitor = "val_mae"
    metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
    assert metrics["mae"] < 0.8, metrics  # Predicting the mean (1.5) gives MAE ~1.0.
    serve = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    out = serve(text=tf.constant(["good good good the film", "the film was a plot"]))
    assert set(out) == {"prediction"}
    assert out["prediction"].numpy()[0] > out["prediction"].numpy()[1]
