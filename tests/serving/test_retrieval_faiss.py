"""The FAISS index exported beside a retrieval SavedModel ranks a 10k bank like the graph."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import helpers
from sft_keras.backbones import build_text_backbone, load_text_tokenizer, make_preprocessor
from sft_keras.errors import ExportError
from sft_keras.models.retrieval import build_dual_encoder
from sft_keras.serving.retrieval import FaissBank, export_retrieval_model

MESSAGES = ["tell me about the cat", "my dog", "what is your book", "so rain", "i like tea",
            "a song", "the sun is hot", "code", "your", "what"]


def test_faiss_top_k_equals_the_in_graph_top_k_on_a_10k_bank(tmp_path):
    preset = helpers.write_tiny_bert_preset(str(tmp_path / "bert"), helpers.CHAT_VOCAB,
                                            num_layers=1)
    model = build_dual_encoder(build_text_backbone("bert", preset), 12)
    preprocessor = make_preprocessor(load_text_tokenizer("bert", preset), 12)
    vectors = np.random.default_rng(0).standard_normal((10_000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bank = [f"reply {i}" for i in range(10_000)]
    path = export_retrieval_model(model, preprocessor, str(tmp_path / "export"), bank, top_k=10,
                                  bank_vectors=vectors, faiss_index=True)
    info = json.load(open(os.path.join(path, "assets.extra", "export_info.json")))
    assert info["faiss_index"] == "bank.faiss" and info["bank_size"] == 10_000

    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](text=tf.constant(MESSAGES))
    embedded = loaded.signatures["embed"](text=tf.constant(MESSAGES))["vectors"].numpy()
    scores, ids, replies = FaissBank(path).search(embedded, k=10)
    np.testing.assert_array_equal(ids, served["reply_ids"].numpy())
    np.testing.assert_allclose(scores, served["scores"].numpy(), atol=1e-5)
    assert replies == [[r.decode() for r in row] for row in served["replies"].numpy()]


def test_an_export_without_the_index_says_so(tmp_path):
    preset = helpers.write_tiny_bert_preset(str(tmp_path / "bert"), helpers.CHAT_VOCAB,
                                            num_layers=1)
    model = build_dual_encoder(build_text_backbone("bert", preset), 12)
    preprocessor = make_preprocessor(load_text_tokenizer("bert", preset), 12)
    path = export_retrieval_model(model, preprocessor, str(tmp_path / "export"), ["meow"])
    with pytest.raises(ExportError, match="No FAISS index"):
        FaissBank(path)
    with pytest.raises(ExportError, match=r"bank_vectors must be \[1, 16\]"):
        export_retrieval_model(model, preprocessor, str(tmp_path / "export"), ["meow"],
                               bank_vectors=np.zeros((2, 16), np.float32))
