"""LoRA on a tiny 2-layer BERT: what trains, the .lora.h5 file, merged export."""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sft_keras.models import lora
from sft_keras.backbones import text as text_backbones
from sft_keras.config import validate_config
from sft_keras.data import make_text_dataset, read_text_table
from sft_keras.errors import ConfigError, WeightsError
from sft_keras.serving.export import export_text_model
from sft_keras.models import build_text_model
from sft_keras.training import train_and_evaluate

from helpers import write_sentiment_csv, write_tiny_bert_preset


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    return write_tiny_bert_preset(tmp_path_factory.mktemp("tiny_bert"), hidden_dim=32,
                                  intermediate_dim=64)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return write_sentiment_csv(tmp_path_factory.mktemp("lora_data") / "train.csv")


def _config(preset, path, **model):
    return validate_config({
        "data": {"source": "text_file", "path": path, "sequence_length": 16,
                 "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset, "lora_rank": 4, **model},
        "train": {"epochs": 6, "batch_size": 16, "learning_rate": 3e-2,
                  "early_stopping_patience": 0},
    })


def _build(config):
    backbone = text_backbones.build_text_backbone("bert", config.model.preset)
    return build_text_model(config, backbone, 2)


def _features(config, n=8):
    examples = read_text_table(config.data.path, class_names=["neg", "pos"])
    tokenizer = text_backbones.load_text_tokenizer("bert", config.model.preset)
    preprocessor = text_backbones.make_preprocessor(tokenizer, config.data.sequence_length)
    dataset = make_text_dataset(examples.subset(range(n)), preprocessor, batch_size=n)
    return preprocessor, next(iter(dataset))


def _snapshot(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


@pytest.fixture(scope="module")
def trained(tiny_preset, csv_path, tmp_path_factory):
    config = _config(tiny_preset, csv_path)
    workdir = str(tmp_path_factory.mktemp("lora_run"))
    return config, workdir, train_and_evaluate(config, workdir)


def test_lora_trains_only_lora_matrices_and_the_head(tiny_preset, csv_path):
    config = _config(tiny_preset, csv_path)
    model = _build(config)
    trainable = sorted(v.path.split("/")[-1] for v in model.trainable_weights)
    # 2 transformer layers x (query, value) x (A, B), and the head's kernel and bias.
    assert trainable == ["bias"] + ["kernel"] + ["lora_kernel_a"] * 4 + ["lora_kernel_b"] * 4
    _, (features, labels) = _features(config, n=16)
    before = _snapshot(model)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(features, labels, epochs=3, batch_size=8, verbose=0)
    after = _snapshot(model)
    changed = sorted(path for path in before if not np.array_equal(before[path], after[path]))
    assert len(changed) == 10, changed  # All 8 LoRA matrices and 2 head weights.
    assert all("lora_kernel" in p or p.startswith("head_output/") for p in changed), changed
    # Every base weight of the encoder is bit-identical, kernels and biases of query/value too.
    assert sum("query" in p and "lora" not in p for p in before) == 4
    assert all(np.array_equal(before[p], after[p]) for p in before if "lora" not in p
               and not p.startswith("head_output/"))


def test_lora_summary_counts_parameters(tiny_preset, csv_path):
    model = _build(_config(tiny_preset, csv_path, lora_alpha=8.0))
    line = lora.lora_summary(model)
    # Keras's EinsumDense LoRA: A is [hidden, heads, rank], B is [rank, head_dim], so
    # 2 layers x 2 projections x (32x2x4 + 4x16) = 1,280; the head 32x2 + 2 = 66.
    assert line == ("LoRA rank 4, alpha 8.0 on 4 layers (query, value): 1,346 trainable of "
                    "22,338 parameters (6.03%): LoRA 1,280, rest 66")
    assert all(layer.lora_alpha == 8.0 for layer in lora.lora_layers(model))


def test_lora_targets_patterns_and_errors(tiny_preset, csv_path):
    model = _build(_config(tiny_preset, csv_path, lora_targets=("query|key|value", "feedforward_.*")))
    assert sorted({layer.name for layer in lora.lora_layers(model)}) == [
        "feedforward_intermediate_dense", "feedforward_output_dense", "key", "query", "value"]
    with pytest.raises(ConfigError, match=r"'querry' matches no layer .* query"):
        _build(_config(tiny_preset, csv_path, lora_targets=("querry",)))
    with pytest.raises(ConfigError, match=r"model.freeze.until cannot be combined with LoRA"):
        _config(tiny_preset, csv_path, freeze={"until": 3})
    with pytest.raises(ConfigError, match=r"image backbone\. Received: model.lora_rank=4"):
        validate_config({"model": {"backbone": "small_cnn", "lora_rank": 4}})
    with pytest.raises(ConfigError, match=r"Received: model.lora_rank=-1"):
        _config(tiny_preset, csv_path, lora_rank=-1)


def test_train_and_evaluate_with_lora(trained):
    _, workdir, metrics = trained
    rows = list(csv.DictReader(open(os.path.join(workdir, "training_log.csv"))))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0], losses
    assert metrics["accuracy"] > 0.6, metrics
    names = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    assert {"best.lora.h5", "last.lora.h5", "best.weights.h5"} <= set(names), names
    size = os.path.getsize(os.path.join(workdir, "checkpoints", "best.lora.h5"))
    assert size < os.path.getsize(os.path.join(workdir, "checkpoints", "best.weights.h5")) / 4


def test_preset_plus_lora_file_rebuilds_the_model_and_export_matches(trained):
    config, workdir, metrics = trained
    _, (features, _) = _features(config)
    lora_file = os.path.join(workdir, "checkpoints", "best.lora.h5")
    # LoRA enabled from the file's own settings on a model built without LoRA.
    plain_config = _config(config.model.preset, config.data.path, lora_rank=0)
    rebuilt = _build(plain_config)
    untrained = rebuilt.predict(features, verbose=0)
    lora.load_lora_weights(rebuilt, lora_file)
    assert len(lora.lora_layers(rebuilt)) == 4
    expected = rebuilt.predict(features, verbose=0)
    assert not np.allclose(untrained, expected)
    # The same with a model built from the LoRA config; and best.weights.h5 (merged kernels).
    second = _build(config)
    lora.load_lora_weights(second, lora_file)
    np.testing.assert_allclose(second.predict(features, verbose=0), expected, atol=1e-6)
    merged_ckpt = _build(plain_config)
    merged_ckpt.load_weights(os.path.join(workdir, "checkpoints", "best.weights.h5"))
    np.testing.assert_allclose(merged_ckpt.predict(features, verbose=0), expected, atol=1e-5)
    # The run's export: merged kernels, no LoRA variables, same outputs.
    loaded = tf.saved_model.load(metrics["export_path"])
    used = loaded.signatures["serve_tokens"].variables  # What the served graph reads.
    assert used and not [v.name for v in used if "lora" in v.name]
    served = loaded.signatures["serve_tokens"](**features)["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_merge_lora_exports_plain_kernels_with_equal_outputs(tiny_preset, csv_path, tmp_path):
    config = _config(tiny_preset, csv_path, lora_alpha=16.0)
    model = _build(config)
    rng = np.random.RandomState(0)
    for layer in lora.lora_layers(model):  # A non-zero update, as after training.
        layer.lora_kernel_b.assign(rng.normal(0, 0.1, layer.lora_kernel_b.shape))
    preprocessor, (features, _) = _features(config)
    expected = model.predict(features, verbose=0)
    merged = lora.merge_lora(model)
    assert not lora.lora_layers(merged) and len(merged.weights) == len(model.weights) - 8
    np.testing.assert_allclose(merged.predict(features, verbose=0), expected, atol=1e-5)
    query = lora.lora_layers(model)[-1]
    merged_query = [layer for layer in merged._flatten_layers() if layer.path == query.path][0]
    a, b, kernel = (keras.ops.convert_to_numpy(v) for v in
                    (query.lora_kernel_a, query.lora_kernel_b, query._kernel))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(merged_query.kernel),
                               kernel + (16.0 / 4) * np.matmul(a, b), atol=1e-6)
    path = export_text_model(model, preprocessor, str(tmp_path / "export"), ["neg", "pos"],
                             "classification")
    loaded = tf.saved_model.load(path)
    used = loaded.signatures["serve_tokens"].variables
    assert used and not [v.name for v in used if "lora" in v.name]
    served = loaded.signatures["serve_tokens"](**features)["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_lora_file_errors(trained, tiny_preset, csv_path, tmp_path):
    config, workdir, _ = trained
    lora_file = os.path.join(workdir, "checkpoints", "best.lora.h5")
    with pytest.raises(WeightsError, match="rank of .* is 4, but .*model.lora_rank=2"):
        lora.load_lora_weights(_build(_config(tiny_preset, csv_path, lora_rank=2)), lora_file)
    with pytest.raises(WeightsError, match="not found"):
        lora.load_lora_weights(_build(config), str(tmp_path / "missing.lora.h5"))
    with pytest.raises(WeightsError, match="must end in '.lora.h5'"):
        lora.save_lora_weights(_build(config), str(tmp_path / "x.h5"))
