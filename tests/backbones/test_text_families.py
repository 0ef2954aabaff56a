"""The text family table: each family's backbone, tokenizer, preprocessor and inputs agree."""

import time

import keras_hub
import numpy as np
import pytest

from sft_keras.backbones import TEXT_FAMILIES, text as text_backbones
from sft_keras.config import get_default_config
from sft_keras.errors import ConfigError, WeightsError
from sft_keras.models import build_text_model

from helpers import write_tiny_text_preset


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: write_tiny_text_preset(root / name, name) for name in TEXT_FAMILIES}


@pytest.mark.parametrize("family", sorted(TEXT_FAMILIES))
def test_table_matches_the_keras_hub_classes(presets, family):
    row = TEXT_FAMILIES[family]
    backbone = text_backbones.build_text_backbone(family, presets[family])
    tokenizer = text_backbones.load_text_tokenizer(family, presets[family])
    assert type(backbone) is row.backbone and type(tokenizer) is row.tokenizer
    assert tuple(backbone.input) == row.inputs
    preprocessor = text_backbones.make_preprocessor(tokenizer, 12, backbone)
    assert type(preprocessor) is row.preprocessor
    single = preprocessor(["the movie was good"])
    pair = preprocessor(x=(["the movie"], ["a bad plot"]))
    assert set(single) == set(pair) == set(row.inputs)
    # The pair holds both texts: more real tokens than the first text alone.
    first = preprocessor(["the movie"])
    assert np.sum(pair["padding_mask"]) > np.sum(first["padding_mask"])
    if "segment_ids" in row.inputs:
        assert np.asarray(pair["segment_ids"]).max() == 1


@pytest.mark.parametrize("family", ["roberta", "xlm_roberta", "distil_bert"])
def test_cls_pooling_without_a_pooler_reads_the_first_token(presets, family):
    config = get_default_config()
    config.model.backbone, config.model.preset = family, presets[family]
    config.model.head.pooling = "cls"
    config.data.sequence_length = 8
    backbone = text_backbones.build_text_backbone(family, presets[family])
    model = build_text_model(config, backbone, num_classes=3)
    assert sorted(model.input) == sorted(TEXT_FAMILIES[family].inputs)
    assert model.get_layer("cls_pool") is not None and model.output.shape == (None, 3)


def test_unknown_family_and_preset_names_list_the_known_ones(presets):
    with pytest.raises(ConfigError, match="Known: bert, deberta_v3, distil_bert, electra"):
        text_backbones.build_text_backbone("gpt2", presets["bert"])
    with pytest.raises(ConfigError, match="Known RobertaBackbone presets: .*roberta_base_en"):
        text_backbones.load_text_tokenizer("roberta", "roberta_huge")
    with pytest.raises(ConfigError, match="xlm_roberta_base_multi"):
        text_backbones.build_text_backbone("xlm_roberta", "xlm_roberta_huge")


def test_a_preset_of_another_family_is_a_clear_error(presets):
    with pytest.raises(WeightsError, match="'roberta' backbone .RobertaBackbone. from model.preset"):
        text_backbones.build_text_backbone("roberta", presets["bert"])


def test_family_preset_name_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    start = time.time()
    with pytest.raises(WeightsError, match="XLMRobertaBackbone preset.*looks offline. Known "
                                           "XLMRobertaBackbone presets: bge_m3, "):
        text_backbones.load_text_tokenizer("xlm_roberta", "xlm_roberta_base_multi")
    assert time.time() - start < 15


def test_save_tiny_text_preset_refuses_another_familys_tokenizer(tmp_path):
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                           "[MASK]"])
    with pytest.raises(ConfigError, match="needs a RobertaTokenizer. Received: tokenizer=Bert"):
        text_backbones.save_tiny_text_preset(str(tmp_path), "roberta", tokenizer)


def test_hugging_face_roberta_folder_is_converted(tmp_path):
    from helpers import write_tiny_hf_roberta

    embeddings = write_tiny_hf_roberta(str(tmp_path))
    backbone = text_backbones.build_text_backbone("roberta", str(tmp_path))
    np.testing.assert_array_equal(backbone.token_embedding.embeddings.numpy(), embeddings)
    assert backbone.max_sequence_length == 32
    tokenizer = text_backbones.load_text_tokenizer("roberta", str(tmp_path))
    vocabulary = list(tokenizer.get_vocabulary())
    ids = np.asarray(tokenizer("the movie was good")).tolist()
    assert [vocabulary[i] for i in ids] == ["the", "Ġmovie", "Ġwas", "Ġgood"]
