"""task='retrieval' with hard negatives (`train.retrieval_hard_negatives`), and the length of
the retrieval datasets Keras sees.

Mining is checked against a brute-force numpy search with the same tiny encoder; training
runs sft-train's loop end to end on the toy chatbot of `helpers.chat_config`.
"""

import csv
import math
import os
import warnings

import numpy as np
import pytest

import helpers
from sft_keras.config import validate_config
from sft_keras.data.pairs import make_pair_examples
from sft_keras.errors import ConfigError
from sft_keras.modalities.retrieval import RetrievalModality
from sft_keras.models.retrieval import (
    InBatchNegativesLoss,
    build_encoder,
    embed_texts,
    mine_hard_negatives,
)
from sft_keras.training import train_and_evaluate


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """A toy chatbot config, its modality and pairs (one context with two replies)."""
    config = helpers.chat_config(str(tmp_path_factory.mktemp("hard_negatives")))
    with open(config.data.path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    contexts = [r["question"] for r in rows] + [rows[0]["question"]]
    responses = [r["answer"] for r in rows] + ["woof" if rows[0]["answer"] != "woof" else "hot"]
    modality = RetrievalModality(config)
    return config, modality, make_pair_examples(contexts, responses)


def _brute_force(encoder, preprocessor, pairs, k):
    """Each pair's k best wrong replies (text, score), searched with numpy one pair at a time."""
    bank = pairs.bank()
    scores = embed_texts(encoder, preprocessor, pairs.contexts.tolist()) @ embed_texts(
        encoder, preprocessor, bank).T
    expected = []
    for i, context in enumerate(pairs.contexts):
        correct = {r for c, r in zip(pairs.contexts, pairs.responses) if c == context}
        wrong = sorted((-scores[i, j], bank[j]) for j in range(len(bank)) if bank[j] not in correct)
        expected.append([(text, -score) for score, text in wrong[:k]])
    return expected


def test_mined_negatives_are_the_best_scored_wrong_replies(chat):
    config, modality, pairs = chat
    encoder = build_encoder(modality.build_model())
    mined = mine_hard_negatives(encoder, modality.preprocessor, pairs, k=3, batch_size=32)
    expected = _brute_force(encoder, modality.preprocessor, pairs, k=3)
    assert mined.negatives.shape == (len(pairs), 3) and mined.labels.shape == (len(pairs), 5)
    for i in range(len(pairs)):
        correct = {r for c, r in zip(pairs.contexts, pairs.responses) if c == pairs.contexts[i]}
        assert not correct & set(mined.negatives[i]), i
        assert mined.negatives[i].tolist() == [text for text, _ in expected[i]], i
        ids = [pairs.response_ids[pairs.responses.tolist().index(t)] for t in mined.negatives[i]]
        assert mined.negative_ids[i].tolist() == ids
    both = {pairs.responses[0], pairs.responses[-1]}  # The two replies of the first context.
    assert len(both) == 2 and not both & (set(mined.negatives[0]) | set(mined.negatives[-1]))


def test_more_negatives_than_wrong_replies_leaves_empty_slots(chat):
    config, modality, pairs = chat
    encoder = build_encoder(modality.build_model())
    k = len(pairs.bank())  # 8 replies: one context has 6 wrong ones, the others 7.
    mined = mine_hard_negatives(encoder, modality.preprocessor, pairs, k=k)
    empty = (mined.negative_ids == -1).sum(axis=1)
    assert empty[0] == 2 and empty[-1] == 2 and set(empty[1:-1].tolist()) == {1}
    assert (mined.negatives[mined.negative_ids == -1] == "").all()


def test_empty_negative_slots_leave_the_loss_unchanged():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(4, 4, 8)).astype("float32")
    pred /= np.linalg.norm(pred, axis=-1, keepdims=True)
    ids = np.array([[0, 0], [1, 1], [2, 1], [0, 2]])
    loss = InBatchNegativesLoss(scale=5.0, symmetric=True)
    empty = np.concatenate([ids, -np.ones((4, 2), int)], axis=1)
    np.testing.assert_allclose(loss(empty, pred), loss(ids, pred[:, :2]), rtol=1e-6)
    hard = np.concatenate([ids, [[1, 2], [0, 2], [0, 0], [1, 1]]], axis=1)
    assert float(loss(hard, pred)) > float(loss(ids, pred[:, :2]))  # Real negatives count.


def test_training_with_hard_negatives_runs_and_its_loss_goes_down(tmp_path, caplog):
    config = helpers.chat_config(str(tmp_path), epochs=3)
    config.train.retrieval_hard_negatives = 2
    config.export.enabled = False
    caplog.set_level("INFO", logger="absl")
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    assert "Mined 144 hard negatives for 72 training pairs (0 empty slots" in caplog.text
    with open(tmp_path / "run" / "training_log.csv", encoding="utf-8") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert metrics["num_questions"] == 24 and 0.0 <= metrics["recall@1"] <= 1.0


@pytest.mark.parametrize("value, match", [
    (-1, "must be an integer >= 0. Received: train.retrieval_hard_negatives=-1"),
    (1.5, "Received: train.retrieval_hard_negatives=1.5"),
    ("2", "Received: train.retrieval_hard_negatives='2'"),
])
def test_bad_hard_negatives_name_the_key_and_value(tmp_path, value, match):
    with pytest.raises(ConfigError, match=match):
        validate_config({"task": "retrieval",
                         "data": {"source": "text_file",
                                  "path": helpers.write_chat_pairs(str(tmp_path / "c.csv"))},
                         "model": {"backbone": "bert", "preset": str(tmp_path)},
                         "train": {"retrieval_hard_negatives": value}})


@pytest.mark.parametrize("hard_negatives", [0, 2])
def test_retrieval_datasets_have_a_known_length_and_evaluate_without_warnings(
        chat, hard_negatives):
    """Keras warned "Your input ran out of data" at the end of each validation pass: the
    dataset's length was unknown (unbatched tokens), so Keras read it until it ran dry."""
    config, _, pairs = chat
    config = config.copy_and_resolve_references()
    config.train.retrieval_hard_negatives = hard_negatives
    modality = RetrievalModality(config)
    dataset = modality.make_dataset(pairs)
    batches = math.ceil(len(pairs) / config.train.batch_size)
    assert int(dataset.cardinality()) == batches == sum(1 for _ in dataset)
    model = modality.build_model()
    model.compile(loss=InBatchNegativesLoss(10.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.evaluate(dataset, verbose=0)
    assert not [w for w in caught if "ran out of data" in str(w.message)]
