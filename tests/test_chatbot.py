"""task='retrieval' end to end: a toy chatbot trained by sft-train's loop, its report with
baselines, its export (in a bare TensorFlow process), sft-predict, sft-chat and bad input.

One tiny run (a 2-layer BERT on `helpers.write_chat_pairs`) is shared by the module.
"""

import csv
import json
import logging
import os

import numpy as np
import pytest

import helpers
from bare_tensorflow import run_bare_tensorflow
from sft_keras.config import validate_config
from sft_keras.errors import ConfigError
from sft_keras.run import load_run
from sft_keras.training import train_and_evaluate

MESSAGES = ["tell me about the cat", "my dog", "what is your book", "so rain"]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("chatbot"))
    config = helpers.chat_config(root, epochs=6)
    workdir = os.path.join(root, "run")
    return workdir, train_and_evaluate(config, workdir)


def _keras_top_k(workdir, messages, k):
    """The Keras model's answers: top-k over the bank, embedded with the training tokenizer."""
    from sft_keras.models.retrieval import build_encoder, embed_texts

    run = load_run(workdir)
    encoder, preprocessor = build_encoder(run.model), run.modality.preprocessor
    bank = run.modality.bank()
    scores = embed_texts(encoder, preprocessor, messages) @ embed_texts(
        encoder, preprocessor, bank).T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return bank, ids, np.take_along_axis(scores, ids, axis=1)


def test_fine_tuning_beats_the_zero_shot_encoder_and_bm25(chat_run):
    workdir, metrics = chat_run
    assert metrics["recall@1"] >= 0.7, metrics
    assert metrics["recall@1"] > metrics["zero_shot"]["recall@1"] + 0.3, metrics
    assert metrics["recall@1"] > metrics["bm25"]["recall@1"], metrics  # No shared words.
    assert metrics["mrr"] > metrics["zero_shot"]["mrr"], metrics
    assert metrics["bank_size"] == 8 and metrics["num_questions"] == 24
    with open(os.path.join(workdir, "training_log.csv")) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses[-1] < 0.5 * losses[0]
    report = open(os.path.join(workdir, "report", "retrieval_report.md")).read()
    assert "| fine-tuned |" in report and "| BM25 (bm25s) |" in report
    assert "encoder before fine-tuning" in report and report.count("<br>") == 2 * 2 * 10
    with open(os.path.join(workdir, "metrics.json")) as f:  # Published at the top.
        assert json.load(f)["zero_shot"] == metrics["zero_shot"]


def test_rerun_of_a_finished_run_returns_its_metrics(chat_run):
    workdir, metrics = chat_run
    config = load_run(workdir).config
    again = train_and_evaluate(config, workdir)
    assert again["recall@1"] == metrics["recall@1"]


def test_sft_eval_rescores_the_validation_split_with_the_baselines(chat_run):
    from sft_keras.evaluation.eval_run import evaluate_workdir

    workdir, metrics = chat_run
    again = evaluate_workdir(workdir)
    assert again["recall@1"] == pytest.approx(metrics["recall@1"], abs=0.05)
    assert again["bm25"] == metrics["bm25"]
    assert again["report_dir"] == os.path.join(workdir, "report")
    assert again["split"] == "validation"


_SERVE = """
    import numpy as np
    path = request["path"]
    model = tf.saved_model.load(path)
    out = model.signatures["serving_default"](text=tf.constant(request["messages"]))
    vectors = model.signatures["embed"](text=tf.constant(request["messages"]))["vectors"]
    result({"replies": [[r.decode() for r in row] for row in out["replies"].numpy()],
            "ids": out["reply_ids"].numpy().tolist(), "scores": out["scores"].numpy().tolist(),
            "norms": np.linalg.norm(vectors.numpy(), axis=1).tolist()})
"""


def test_export_answers_like_keras_without_keras_or_tensorflow_text(chat_run):
    workdir, metrics = chat_run
    path = metrics["export_path"]
    info = json.load(open(os.path.join(path, "assets.extra", "export_info.json")))
    assert info["modality"] == "retrieval" and info["top_k"] == 3 and info["bank_size"] == 8
    served, _ = run_bare_tensorflow(_SERVE,
                                    {"path": path, "messages": MESSAGES})
    assert served["modules"] == []
    bank, ids, scores = _keras_top_k(workdir, MESSAGES, 3)
    assert served["ids"] == ids.tolist()
    assert served["replies"] == [[bank[i] for i in row] for row in ids]
    np.testing.assert_allclose(served["scores"], scores, atol=1e-4)
    np.testing.assert_allclose(served["norms"], 1.0, atol=1e-5)
    assert served["replies"][0][0] == "meow"  # The toy mapping was learned.


def test_sft_predict_and_sft_chat_answer_with_replies_and_scores(chat_run, tmp_path):
    from sft_keras.serving.predict import predict_file

    workdir, metrics = chat_run
    messages = tmp_path / "messages.txt"
    messages.write_text("\n".join(MESSAGES) + "\n")
    records = list(predict_file(os.path.join(workdir, "export"), str(messages)))
    assert [r["input"] for r in records] == MESSAGES
    assert all(len(r["replies"]) == 3 and r["scores"] == sorted(r["scores"], reverse=True)
               for r in records)
    chat = helpers.run_cli(["python", "-m", "sft_keras.cli.chat",
                            f"--model={workdir}/export", "--top_k=2"],
                           input="the cat\n\nsong please\n")
    assert chat.returncode == 0, chat.stderr[-2000:]
    answers = [block.splitlines() for block in chat.stdout.strip().split("\n\n")]
    assert len(answers) == 2 and all(len(a) == 2 for a in answers)
    score, reply = answers[0][0].split("\t")
    assert reply == "meow" and -1.0 <= float(score) <= 1.0
    too_many = helpers.run_cli(["python", "-m", "sft_keras.cli.chat",
                                f"--model={workdir}/export", "--top_k=9"], input="hi\n")
    assert "sft-chat: error: --top_k must be an integer in [1, 3]" in too_many.stderr


def test_a_bank_smaller_than_top_k_serves_all_its_replies_and_logs_it(chat_run, tmp_path,
                                                                        caplog):
    import tensorflow as tf

    from sft_keras.serving.retrieval import export_retrieval_model

    run = load_run(chat_run[0])
    with caplog.at_level(logging.WARNING):
        path = export_retrieval_model(run.model, run.modality.preprocessor, str(tmp_path),
                                      ["meow", "woof"], top_k=5)
    assert "export.top_k=5 is more than the 2 replies of the bank" in caplog.text
    out = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(["cat"]))
    assert sorted(r.decode() for r in out["replies"].numpy()[0]) == ["meow", "woof"]


@pytest.mark.slow  # A second training run; the chat reader itself is tested in test_pairs.py.
def test_chat_jsonl_trains_through_the_same_loop(tmp_path):
    config = helpers.chat_config(str(tmp_path), epochs=1, fmt="chat")
    config.export.enabled = False
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["num_questions"] == 24 and "export_path" not in metrics


@pytest.mark.parametrize("override, match", [
    ({"model": {"backbone": "small_cnn"}}, "model.backbone must be a text backbone"),
    ({"model": {"head": {"pooling": "cls"}}}, "model.head.pooling must be 'avg'"),
    ({"model": {"lora_rank": 4}}, "model.lora_rank is not supported"),
    ({"data": {"source": "text_folder"}}, "data.source must be one of 'text_file', 'chatterbot'"),
    ({"data": {"context_turns": 0}}, "data.context_turns must be an integer >= 1"),
    ({"export": {"top_k": 0}}, "export.top_k must be a positive integer"),
    ({"train": {"monitor": "val_auc"}}, "train.monitor must be one of 'val_loss', 'val_accuracy'"),
])
def test_bad_retrieval_config_names_the_key_and_value(tmp_path, override, match):
    base = {"task": "retrieval", "data": {"source": "text_file",
                                          "path": helpers.write_chat_pairs(str(tmp_path / "c.csv"))},
            "model": {"backbone": "bert", "preset": str(tmp_path)}}
    for part, values in override.items():
        base.setdefault(part, {}).update(values)
    with pytest.raises(ConfigError, match=match):
        validate_config(base)
