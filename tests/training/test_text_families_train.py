"""End to end for the text families beyond BERT: tiny random presets written here, trained
by `train_and_evaluate` (what sft-train runs), exported, and served in a fresh process.

WordPiece exports (DistilBERT, ELECTRA) are served where only TensorFlow imports; BPE
(RoBERTa) and SentencePiece (XLM-R, DeBERTaV3) exports where TensorFlow has loaded
tensorflow-text's compiled ops (no keras, keras-hub or tensorflow_text package imported).
"""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.backbones import TEXT_FAMILIES
from sft_keras.config import validate_config
from sft_keras.run import load_run
from sft_keras.training import train_and_evaluate

from bare_tensorflow import run_bare_tensorflow, tensorflow_text_op_libraries
from helpers import run_cli, write_sentiment_csv, write_tiny_text_preset

_SERVE = """
    loaded = tf.saved_model.load(request["export"])
    feed = {k: tf.constant(v) for k, v in request["feed"].items()}
    outputs = loaded.signatures["serving_default"](**feed)
    result({k: v.numpy().tolist() for k, v in outputs.items() if v.dtype != tf.string})
"""

TEXTS = ["the movie was good", "awful plot", "", " ".join(["a really very fine film"] * 40),
         "Très BIEN!", "这部电影很好"]


def _train(root, family, epochs=6, language="en", pairs=False, n=64):
    preset = write_tiny_text_preset(os.path.join(root, "preset"), family, hidden_dim=32,
                                    intermediate_dim=64)
    path = write_sentiment_csv(os.path.join(root, "train.csv"), n=n, pairs=pairs,
                               language=language)
    config = validate_config({
        "data": {"source": "text_file", "path": path, "sequence_length": 16,
                 "validation_split": 0.25,
                 "text_columns": ("text", "other") if pairs else ("text",)},
        "model": {"backbone": family, "preset": preset},
        "train": {"epochs": epochs, "batch_size": 16, "learning_rate": 3e-3,
                  "early_stopping_patience": 0},
    })
    workdir = os.path.join(root, "workdir")
    metrics = train_and_evaluate(config, workdir)
    rows = list(csv.DictReader(open(os.path.join(workdir, "training_log.csv"))))
    return workdir, metrics, [float(r["loss"]) for r in rows]


def _keras_probabilities(run, *texts):
    """The trained Keras model on `texts`, tokenized as in training (graph mode)."""
    preprocessor = run.modality.preprocessor
    x = texts[0] if len(texts) == 1 else tuple(texts)
    features = tf.function(lambda x: preprocessor(x=x))(x)
    features = {k: tf.cast(v, tf.int32) for k, v in features.items()}
    return run.model(features, training=False).numpy()


def _served(export, feed, family):
    ops = [] if TEXT_FAMILIES[family].tokenizer_type == "wordpiece" else \
        tensorflow_text_op_libraries()
    served, _ = run_bare_tensorflow(_SERVE, {"export": export, "feed": feed}, op_libraries=ops)
    assert served.pop("modules") == []  # No keras, keras-hub, tensorflow_text, sft_keras.
    return served


# Each takes about a minute on 2 shared CPU cores (tracing keras-hub's BPE graph alone
# takes ~10 s): RoBERTa runs by default, XLM-R in the Chinese test below, the rest are slow.
@pytest.mark.parametrize("family", [
    "roberta",
    pytest.param("xlm_roberta", marks=pytest.mark.slow),
    pytest.param("deberta_v3", marks=pytest.mark.slow),
    pytest.param("distil_bert", marks=pytest.mark.slow),
    pytest.param("electra", marks=pytest.mark.slow),
])
def test_family_trains_exports_and_serves_raw_strings(family, tmp_path, capsys):
    workdir, metrics, losses = _train(str(tmp_path), family)
    assert losses[-1] < 0.6 * losses[0], losses
    assert metrics["accuracy"] >= 0.75, metrics  # Chance is 0.5; 16 validation examples.

    export = metrics["export_path"]
    info = json.load(open(os.path.join(export, "assets.extra", "export_info.json")))
    needs_tf_text = TEXT_FAMILIES[family].tokenizer_type != "wordpiece"
    assert info["requires_tensorflow_text"] is needs_tf_text
    assert list(info["inputs"]["serve_tokens"]) == list(TEXT_FAMILIES[family].inputs)
    assert ("needs tensorflow-text ops" in capsys.readouterr().out) is needs_tf_text

    served = _served(export, {"text": TEXTS}, family)
    expected = _keras_probabilities(load_run(workdir), tf.constant(TEXTS))
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-4)
    assert served["class_id"] == expected.argmax(-1).tolist()


@pytest.mark.slow  # Pair packing of every family is checked fast in tests/backbones.
@pytest.mark.parametrize("family", ["roberta", "distil_bert"])
def test_sentence_pairs_without_segment_ids(family, tmp_path):
    workdir, metrics, _ = _train(str(tmp_path), family, epochs=1, pairs=True, n=32)
    first, second = ["the movie was good", "awful", ""], ["a plot", "", "very bad film"]
    served = _served(metrics["export_path"], {"text": first, "text_pair": second}, family)
    expected = _keras_probabilities(load_run(workdir), tf.constant(first), tf.constant(second))
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-4)


def test_chinese_sentiment_through_sentence_piece_served_and_predicted(tmp_path):
    workdir, metrics, losses = _train(str(tmp_path), "xlm_roberta", language="zh")
    assert losses[-1] < 0.6 * losses[0], losses
    assert metrics["accuracy"] >= 0.75, metrics
    run = load_run(workdir)
    tokens = np.asarray(run.modality.preprocessor.tokenizer("这部电影真的很好")).tolist()
    assert 3 not in tokens, tokens  # <unk> is 3: every piece is known.

    texts = ["这部电影真的很好", "剧情非常糟糕", "演员很棒", "the movie was good"]
    served = _served(metrics["export_path"], {"text": texts}, "xlm_roberta")
    expected = _keras_probabilities(run, tf.constant(texts))
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-4)
    with open(tmp_path / "texts.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    # sft-predict in a fresh process: export_info says requires_tensorflow_text, so it
    # imports tensorflow_text before loading the SavedModel.
    result = run_cli(["python", "-m", "sft_keras.cli.predict", f"--model={workdir}/export",
                      f"--input={tmp_path / 'texts.txt'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["input"] for r in records] == texts
    expected = _keras_probabilities(run, tf.constant(texts))
    np.testing.assert_allclose([r["probabilities"] for r in records], expected, atol=1e-4)
