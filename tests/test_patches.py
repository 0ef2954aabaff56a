"""The version guard of sft_keras.patches, the paths that use it, and its layer helpers."""

import importlib.metadata

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from sft_keras import patches
from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.models import build_image_model
from sft_keras.models import lora
from sft_keras.training import distribute, optimizers


@pytest.fixture(autouse=True)
def fresh_guard():
    # require_tested caches what passed: every test checks the versions it sets.
    patches.require_tested.cache_clear()
    yield
    patches.require_tested.cache_clear()


def _pretend(monkeypatch, package, text):
    real = patches._version
    parts = tuple(int(p) for p in text.split(".")[:3])
    monkeypatch.setattr(
        patches, "_version", lambda name: (text, parts) if name == package else real(name)
    )


@pytest.fixture
def untested_keras(monkeypatch):
    _pretend(monkeypatch, "keras", "3.16.0")


def _image_model():
    config = get_default_config()
    config.model.backbone = "small_cnn"
    return build_image_model(config, num_classes=3)


def _tiny_bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4, intermediate_dim=8
    )


def test_guard_passes_on_the_installed_versions():
    for package in patches.TESTED:
        assert patches.require_tested(package, "a test") is None


@pytest.mark.parametrize("package,text,tested", [
    ("keras", "3.16.0", ">= 3.15, < 3.16"),
    ("keras", "3.14.2", ">= 3.15, < 3.16"),
    ("keras-hub", "0.33.1", ">= 0.32, < 0.33"),
])
def test_guard_names_package_installed_version_and_tested_range(monkeypatch, package, text,
                                                                tested):
    _pretend(monkeypatch, package, text)
    with pytest.raises(patches.UntestedVersionError) as info:
        patches.require_tested(package, "some_patch")
    message = str(info.value)
    assert message.startswith(f"some_patch uses a {package} internal")
    assert f"tested only with {package} {tested}" in message
    assert f"this machine has {package} {text}." in message
    assert "sft_keras/patches.py" in message


def test_guard_reads_the_installed_distribution(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "3.16.0rc1" if name == "keras" else "0.32.0")
    with pytest.raises(patches.UntestedVersionError, match=r"this machine has keras 3\.16\.0rc1"):
        patches.require_tested("keras", "some_patch")
    assert patches.require_tested("keras-hub", "some_patch") is None


def test_every_keras_patch_checks_the_version_first(untested_keras):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    calls = {
        "weighted_test_step": lambda: patches.weighted_test_step(model),
        "prepare_for_multi_worker_fit": lambda: patches.prepare_for_multi_worker_fit(
            model, tf.distribute.get_strategy()),
        "flatten_layers": lambda: patches.flatten_layers(model),
        "set_lora_alpha": lambda: patches.set_lora_alpha(model.layers[0], 2.0),
        "PerVariableLearningRate": lambda: optimizers.with_layerwise_lr(keras.optimizers.SGD)(),
    }
    for name, call in calls.items():
        with pytest.raises(patches.UntestedVersionError, match=rf"^{name}\b.*keras 3\.16\.0"):
            call()


def test_single_worker_runs_do_not_reach_the_multi_worker_patch(untested_keras):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert distribute.prepare_for_multi_worker_fit(model, tf.distribute.get_strategy()) is model


def test_layerwise_optimizer_fails_at_once_on_an_untested_keras(untested_keras):
    t = optimizers.resolve_recipe(validate_config(get_default_config()))[0].train
    model = _image_model()
    assert type(optimizers.build_optimizer(t, model)).__name__ == "Adam"  # Public APIs only.
    t.layerwise_lr_decay = 0.5
    with pytest.raises(patches.UntestedVersionError, match="PerVariableLearningRate"):
        optimizers.build_optimizer(t, model)


def test_lora_fails_at_once_on_an_untested_keras(untested_keras):
    backbone = _tiny_bert()
    with pytest.raises(patches.UntestedVersionError, match="keras 3.16.0"):
        lora.enable_lora(backbone, rank=2)
    assert not any(getattr(layer, "lora_enabled", False) for layer in backbone._flatten_layers())


def test_lora_alpha_is_set_on_every_lora_layer():
    backbone = _tiny_bert()
    paths = lora.enable_lora(backbone, rank=2, alpha=8.0)
    layers = lora.lora_layers(backbone)
    assert [layer.path for layer in layers] == paths and len(layers) == 2
    assert all(layer.lora_rank == 2 and layer.lora_alpha == 8.0 for layer in layers)
    # keras-hub recorded its own LoRA layers: its save_lora_weights accepts the backbone.
    assert lora.find_lora_backbone(backbone) is backbone
    with pytest.raises(ConfigError, match="already enabled"):
        lora.enable_lora(backbone, rank=2)


def test_flatten_layers_walks_plain_layers_too():
    backbone = _tiny_bert()
    names = [layer.name for layer in patches.flatten_layers(backbone, include_self=False)]
    # query/value live inside a TransformerEncoder's attention layer: no `.layers` reaches them.
    assert {"transformer_layer_0", "query", "value", "pooled_dense"} <= set(names)
    assert "query" not in [layer.name for layer in backbone.layers]
    assert np.unique([id(x) for x in patches.flatten_layers(backbone)]).size == len(names) + 1
