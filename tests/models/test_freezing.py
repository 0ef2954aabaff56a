"""Freezing by index and pattern, the trainable table, and BatchNorm statistics."""

import keras
import numpy as np
import pytest

from sft_keras.models import freezing
from sft_keras.backbones import build_image_backbone
from sft_keras.errors import ConfigError


@pytest.fixture(scope="module")
def vgg16():
    return build_image_backbone("vgg16", weights=None, input_shape=(32, 32, 3))


def _trainable_names(model):
    return [layer.name for layer in model.layers if layer.trainable]


def test_freeze_until_15_trains_only_block5(vgg16):
    frozen = freezing.set_trainable(vgg16, until=15)
    assert len(vgg16.layers) == 19
    assert frozen == [layer.name for layer in vgg16.layers[:15]]
    assert frozen[-1] == "block4_pool"
    assert _trainable_names(vgg16) == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    assert [w.path.split("/")[0] for w in vgg16.trainable_weights] == [
        "block5_conv1", "block5_conv1", "block5_conv2", "block5_conv2", "block5_conv3", "block5_conv3",
    ]


def test_negative_index_counts_from_the_end(vgg16):
    freezing.set_trainable(vgg16, until=-4)
    assert _trainable_names(vgg16) == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]


def test_refreezing_resets_previous_choice(vgg16):
    freezing.set_trainable(vgg16, until=15)
    freezing.set_trainable(vgg16, until=None)
    assert all(layer.trainable for layer in vgg16.layers)
    freezing.set_trainable(vgg16, freeze_all=True)
    assert vgg16.trainable_weights == []


def test_freeze_by_name_pattern(vgg16):
    frozen = freezing.set_trainable(vgg16, patterns=(r"^block[1-3]_",))
    assert all(name.startswith(("block1", "block2", "block3")) for name in frozen)
    assert len(frozen) == 10
    assert "block4_conv1" in _trainable_names(vgg16)


def test_index_and_pattern_combine(vgg16):
    frozen = freezing.set_trainable(vgg16, until=4, patterns=("block5_conv3",))
    assert frozen == [layer.name for layer in vgg16.layers[:4]] + ["block5_conv3"]
    assert frozen[1:4] == ["block1_conv1", "block1_conv2", "block1_pool"]


@pytest.mark.parametrize("until", [20, -20, 100])
def test_out_of_range_index_is_a_clear_error(vgg16, until):
    with pytest.raises(ConfigError, match=rf"model\.freeze\.until={until}.*|\[-19, 19\]") as e:
        freezing.set_trainable(vgg16, until=until)
    assert "19 layers" in str(e.value) and str(until) in str(e.value)


def test_pattern_matching_nothing_is_a_clear_error(vgg16):
    with pytest.raises(ConfigError, match="'blok5' matches no layer"):
        freezing.set_trainable(vgg16, patterns=("blok5",))


def test_trainable_summary_counts_parameters(vgg16):
    freezing.set_trainable(vgg16, until=15)
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(vgg16(inputs)))
    table = freezing.trainable_summary(keras.Model(inputs, outputs))
    block5 = sum(int(np.prod(w.shape)) for w in vgg16.trainable_weights)
    lines = table.splitlines()
    assert lines[1].split()[:4] == ["vgg16", "3/13", f"{block5:,}", f"{vgg16.count_params() - block5:,}"]
    assert lines[-1].split()[1] == f"{block5 + 512 * 10 + 10:,}"


def _batchnorm_stats(model):
    return [
        keras.ops.convert_to_numpy(w).copy()
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.non_trainable_weights
    ]


def test_batchnorm_statistics_do_not_change_in_partly_frozen_resnet50():
    keras.utils.set_random_seed(0)
    backbone = build_image_backbone("resnet50", weights=None, input_shape=(32, 32, 3))
    freezing.set_trainable(backbone, until=100)  # Stage 5 and part of stage 4 train.
    assert any(
        layer.trainable for layer in backbone.layers
        if not isinstance(layer, keras.layers.BatchNormalization) and layer.weights
    )
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.RandomState(0).rand(8, 32, 32, 3).astype("float32") * 255
    y = np.array([0, 1] * 4)
    conv = backbone.get_layer("conv5_block3_3_conv")
    kernel_before = keras.ops.convert_to_numpy(conv.kernel).copy()
    stats_before = _batchnorm_stats(backbone)

    model.fit(x, y, epochs=1, batch_size=4, verbose=0)

    assert not np.allclose(kernel_before, keras.ops.convert_to_numpy(conv.kernel)), "conv did not train"
    for before, after in zip(stats_before, _batchnorm_stats(backbone)):
        np.testing.assert_array_equal(before, after)

    # Control: with BatchNorm left trainable the same fit does move the statistics,
    # so the assertion above is meaningful.
    freezing.set_trainable(backbone, until=100, freeze_batchnorm=False)
    model.compile("adam", "sparse_categorical_crossentropy")  # Recompile after changing trainable.
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    changed = [
        not np.array_equal(a, b) for a, b in zip(stats_before, _batchnorm_stats(backbone))
    ]
    assert any(changed)


def test_reestimate_batchnorm_averages_the_batch_statistics():
    # A frozen BatchNorm inside a nested model, Dropout around it, under mixed precision.
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
                                  keras.layers.BatchNormalization(momentum=0.9, name="bn")],
                                 name="inner")
        inputs = keras.Input((4,))
        x = inner(keras.layers.Dropout(0.5, name="drop")(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
    finally:
        keras.config.set_dtype_policy("float32")
    bn = inner.get_layer("bn")
    freezing.set_trainable(inner)  # Freezes the BatchNorm, as fine-tuning does.
    rng = np.random.RandomState(0)
    batches = [rng.normal(1.0, 3.0, (8, 4)).astype("float32") for _ in range(3)]
    batches.append(rng.normal(size=(5, 4)).astype("float32"))  # A smaller last batch.
    stats = (bn.moving_mean.path, bn.moving_variance.path)
    others = [w for w in model.weights if w.path not in stats]
    others_before = [keras.ops.convert_to_numpy(w).copy() for w in others]

    assert freezing.reestimate_batchnorm(model, [(b, np.zeros(len(b))) for b in batches]) == 1

    kernel = keras.ops.convert_to_numpy(inner.get_layer("dense").kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(inner.get_layer("dense").bias).astype("float64")
    # The BatchNorm's inputs: float16 outputs of the Dense layer (Dropout inactive).
    h = [(b.astype("float16").astype("float64") @ kernel + bias) for b in batches]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               np.mean([x.mean(axis=0) for x in h], axis=0), atol=1e-2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance),
                               np.mean([x.var(axis=0) for x in h], axis=0), rtol=1e-2)
    for w, before in zip(others, others_before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), before)
    assert (bn.trainable, bn.momentum, "call" in bn.__dict__) == (False, 0.9, False)
    assert model.get_layer("drop").rate == 0.5


def test_reestimate_batchnorm_is_exact_in_float32():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
                              keras.layers.Dropout(0.5, name="drop"),
                              keras.layers.BatchNormalization(name="bn")])
    rng = np.random.RandomState(1)
    batches = [rng.normal(2.0, 5.0, (16, 4)).astype("float32") for _ in range(4)]
    freezing.reestimate_batchnorm(model, batches)
    h = [keras.ops.convert_to_numpy(model.get_layer("dense")(b)) for b in batches]
    bn = model.get_layer("bn")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               np.mean([x.mean(axis=0) for x in h], axis=0), atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance),
                               np.mean([x.var(axis=0) for x in h], axis=0), atol=1e-5, rtol=1e-5)
    assert (bn.trainable, bn.momentum, model.get_layer("drop").rate) == (True, 0.99, 0.5)
    assert freezing.reestimate_batchnorm(keras.Sequential([keras.layers.Dense(2)]), batches) == 0
