"""LiteRT and ONNX files of tiny models give Keras's outputs when run by their own runtimes."""

import json
import os

import keras
import numpy as np
import pytest

from sft_keras.config import get_default_config
from sft_keras.errors import ConfigError, ExportError
from sft_keras.evaluation.exports import litert_predictor, onnx_predictor
from sft_keras.serving.formats import (export_graph_format, float32_model, graph_inputs,
                                       parse_formats, text_preprocessing)
from sft_keras.training.distribute import precision_policy

import helpers

PREDICTORS = {"litert": litert_predictor, "onnx": onnx_predictor}


def _tiny_text_model(tmp_path):
    from sft_keras.backbones import (build_text_backbone, load_text_tokenizer,
                                     make_preprocessor)
    from sft_keras.models import build_text_model

    config = get_default_config()
    config.model.backbone = "bert"
    config.model.preset = helpers.write_tiny_bert_preset(str(tmp_path / "bert"), hidden_dim=32,
                                                         intermediate_dim=64)
    config.data.sequence_length = 16
    keras.utils.set_random_seed(1)
    model = build_text_model(config, build_text_backbone("bert", config.model.preset), 3)
    preprocessor = make_preprocessor(load_text_tokenizer("bert", config.model.preset), 16)
    texts = [f"the movie was {w} and {v}" for w in helpers.POSITIVE + helpers.NEGATIVE
             for v in ("really", "very")]
    tokens = {k: np.asarray(v, np.int32) for k, v in preprocessor(texts).items()}
    return model, preprocessor, tokens


def _tiny_image_model():
    from sft_keras.models import build_image_model

    config = get_default_config()
    config.model.backbone = "small_cnn"
    keras.utils.set_random_seed(1)
    model = build_image_model(config, num_classes=3)
    images = np.stack([helpers.make_pattern_image(i % 3, seed=i) for i in range(12)])
    return model, {"images": images.astype(np.float32)}


def _check_every_variant(model, inputs, folders):
    """Every file: float variants within tolerance; top-1 equal where Keras is not near a tie."""
    expected = np.asarray(model(inputs if isinstance(model.input, dict) else inputs["images"],
                                training=False))
    top2 = np.sort(expected, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.1  # Rows where a quantized file may not flip top-1.
    checked = []
    for export_format, folder in folders.items():
        info = json.load(open(os.path.join(folder, "export_info.json")))
        for variant, entry in info["variants"].items():
            got = PREDICTORS[export_format](os.path.join(folder, entry["file"]))(inputs)
            assert got.shape == expected.shape
            if variant == "float32":
                np.testing.assert_allclose(got, expected, atol=1e-4)
                np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
            else:
                assert np.abs(got - expected).max() < 0.1, (export_format, variant)
                np.testing.assert_array_equal(got.argmax(-1)[clear], expected.argmax(-1)[clear])
            checked.append((export_format, variant))
    return checked


def test_text_model_litert_and_onnx_match_keras(tmp_path):
    model, preprocessor, tokens = _tiny_text_model(tmp_path)
    # Make the fixed batch's top-1 clear so quantized files can be held to the same top-1.
    head = model.layers[-1]
    head.kernel.assign(head.kernel * 20.0)
    preprocessing, files = text_preprocessing(preprocessor)

    def representative():
        for i in range(len(tokens["token_ids"])):
            yield {k: v[i : i + 1] for k, v in tokens.items()}

    folders = {
        "litert": export_graph_format(
            "litert", model, str(tmp_path / "litert"), ["a", "b", "c"], "classification",
            ("float32", "float16", "dynamic_int8", "int8"), preprocessing, files=files,
            representative=representative),
        "onnx": export_graph_format(
            "onnx", model, str(tmp_path / "onnx"), ["a", "b", "c"], "classification",
            ("float32", "int8"), preprocessing, files=files),
    }
    assert len(_check_every_variant(model, tokens, folders)) == 6
    folder = folders["litert"]
    assert sorted(os.listdir(folder)) == [
        "export_info.json", "labels.txt", "model_dynamic_int8.tflite", "model_float16.tflite",
        "model_float32.tflite", "model_int8.tflite", "vocabulary.txt"]
    info = json.load(open(os.path.join(folder, "export_info.json")))
    assert info["inputs"] == {n: "int32 [batch, 16]"
                              for n in ("padding_mask", "segment_ids", "token_ids")}
    assert info["preprocessing"]["tokenizer_options"]["lowercase"] is True
    assert info["preprocessing"]["sequence_length"] == 16
    assert info["preprocessing"]["special_tokens"]["cls_token"] == {"token": "[CLS]", "id": 2}
    # The recorded example is what the keras-hub preprocessor gives: a client can check itself.
    example = info["preprocessing"]["example"]
    again = preprocessor([example["text"]])
    assert example["token_ids"] == np.asarray(again["token_ids"])[0].tolist()
    with open(os.path.join(folder, "vocabulary.txt")) as f:
        assert f.read().split("\n")[:len(helpers.VOCAB)] == helpers.VOCAB
    sizes = {v: e["bytes"] for v, e in info["variants"].items()}
    assert sizes["dynamic_int8"] < sizes["float16"] < sizes["float32"]


def test_image_model_litert_and_onnx_match_keras(tmp_path):
    model, images = _tiny_image_model()
    head = model.layers[-1]
    head.kernel.assign(head.kernel * 20.0)

    def representative():
        for i in range(len(images["images"])):
            yield {"images": images["images"][i : i + 1]}

    folders = {
        f: export_graph_format(f, model, str(tmp_path / f), ["h", "v", "d"], "classification",
                               variants, {"kind": "pixels"}, representative=representative)
        for f, variants in (("litert", ("float32", "float16", "dynamic_int8", "int8")),
                            ("onnx", ("float32", "int8")))
    }
    assert len(_check_every_variant(model, images, folders)) == 6


def test_binary_graph_returns_both_probabilities(tmp_path):
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    x = np.random.RandomState(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    folder = export_graph_format("onnx", model, str(tmp_path), ["neg", "pos"], "binary",
                                 ("float32",), {})
    got = onnx_predictor(os.path.join(folder, "model_float32.onnx"))({"images": x})
    p = np.asarray(model(x))
    np.testing.assert_allclose(got, np.concatenate([1 - p, p], axis=-1), atol=1e-5)


def test_an_existing_version_is_refused_and_nothing_is_left_behind(tmp_path):
    model, _ = _tiny_image_model()
    args = ("litert", model, str(tmp_path), ["h", "v", "d"], "classification", ("float32",), {})
    assert export_graph_format(*args) == str(tmp_path / "1")
    with pytest.raises(ExportError, match="already exists"):
        export_graph_format(*args, version=1)
    assert export_graph_format(*args, version=1, overwrite=True) == str(tmp_path / "1")
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_regression_is_refused_with_the_task():
    model, _ = _tiny_image_model()
    with pytest.raises(ExportError, match="Received: task='regression'"):
        export_graph_format("onnx", model, "/nonexistent", [], "regression", ("float32",), {})


def test_bad_format_and_variant_names_list_the_known_ones():
    with pytest.raises(ExportError, match="known formats: saved_model, litert, onnx. "
                                          "Received: --format='tflite'"):
        parse_formats("tflite")
    from sft_keras.config import validate_config

    with pytest.raises(ConfigError, match="known litert variants: float32, float16, "
                                          "dynamic_int8, int8. Received: "
                                          "export.litert_variants=\\('int4',\\)"):
        validate_config({"model": {"backbone": "small_cnn"},
                         "export": {"litert_variants": ("int4",)}}, check_files=False)


def test_mixed_precision_model_is_exported_from_a_float32_copy(tmp_path):
    from sft_keras.models import build_image_model

    config = get_default_config()
    config.model.backbone = "small_cnn"
    with precision_policy("mixed_bfloat16"):
        mixed = build_image_model(config, num_classes=3)
    copy = float32_model(mixed, lambda: build_image_model(config, num_classes=3))
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    for a, b in zip(mixed.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [s.dtype.name for s in graph_inputs(copy)] == ["float32"]


def test_litert_and_onnx_for_regression_are_refused_in_the_config():
    from sft_keras.config import validate_config

    with pytest.raises(ConfigError, match="for task 'classification' or 'binary'.*"
                                          "Received: export.formats=\\('onnx',\\)"):
        validate_config({"task": "regression", "model": {"backbone": "small_cnn"},
                         "export": {"formats": ("onnx",)}}, check_files=False)


def test_a_text_run_exports_and_checks_on_its_validation_split(tiny_text_run, tmp_path):
    import shutil

    from sft_keras.evaluation.exports import check_run_exports
    from sft_keras.run import load_run

    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_text_run[0], workdir)  # The shared run is not modified.
    run = load_run(workdir)
    path = run.export(format="onnx", variants=("float32",))
    assert path == os.path.join(workdir, "export_onnx", "1")
    rows, report = check_run_exports(run, [path], latency=False)
    assert [(r["format"], r["variant"]) for r in rows] == [("keras", "float32 (reference)"),
                                                           ("onnx", "float32")]
    assert rows[1]["num_examples"] == 12  # 48 examples, validation_split 0.25.
    assert rows[1]["agreement"] == 1.0 and rows[1]["max_prob_diff"] < 1e-4
    assert rows[1]["accuracy"] == rows[0]["accuracy"]
    assert "| onnx | float32 | export_onnx/1/model_float32.onnx |" in open(report).read()
    info = json.load(open(os.path.join(path, "export_info.json")))
    assert info["preprocessing"]["text_columns"] == ["text"]
    assert info["trained_precision"] == "float32" and info["checkpoint"] == "best.weights.h5"
