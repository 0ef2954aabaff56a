"""model.freeze.adabn: BatchNorm statistics re-estimated on the training images, end to end."""

import keras
import numpy as np
import pytest

from sft_keras.config import get_default_config, validate_config
from sft_keras.errors import ConfigError
from sft_keras.models import freezing
from sft_keras.modalities.image import ImageModality
from sft_keras.training import train_and_evaluate

from helpers import write_image_folder


def _stats(model):
    return [keras.ops.convert_to_numpy(v).copy() for layer in freezing.batchnorm_layers(model)
            for v in (layer.moving_mean, layer.moving_variance)]


class _RecordStats(keras.callbacks.Callback):
    """The BatchNorm statistics when training starts and ends; and AdaBN's, recomputed."""

    def __init__(self, train_batches=None):
        super().__init__()
        self.train_batches = train_batches

    def on_train_begin(self, logs=None):
        self.begin = _stats(self.model)
        if self.train_batches is None:
            return
        # The statistics depend on the non-BatchNorm weights and the images only: a
        # second pass over the unaugmented images gives them again.
        freezing.reestimate_batchnorm(self.model, self.train_batches)
        self.again = _stats(self.model)

    def on_train_end(self, logs=None):
        self.end = _stats(self.model)


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_adabn_run_starts_from_the_training_images_statistics(tmp_path, strategy):
    config = validate_config({
        "data": {"source": "image_folder", "validation_split": 0.25, "image_size": (32, 32),
                 "path": write_image_folder(tmp_path / "images", per_class=8),
                 "augment": {"flip": "horizontal", "rotation": 0.1}},  # Must not reach AdaBN.
        "model": {"backbone": "small_cnn", "freeze": {"adabn": True}},
        "train": {"epochs": 1, "batch_size": 8, "early_stopping_patience": 0},
        "runtime": {"strategy": strategy},
        "export": {"enabled": False},
    })
    modality = ImageModality(config)
    record = _RecordStats(modality.make_dataset(modality.load_data().train, cache=False))

    metrics = train_and_evaluate(config, str(tmp_path / "run"), callbacks=[record])

    assert "accuracy" in metrics
    assert len(record.begin) == 6  # small_cnn: 3 BatchNorm layers, mean and variance each.
    for mean, variance in zip(record.begin[0::2], record.begin[1::2]):
        assert not np.allclose(mean, 0.0) and not np.allclose(variance, 1.0)  # Not the init.
    for begin, again, end in zip(record.begin, record.again, record.end):
        np.testing.assert_allclose(again, begin, rtol=1e-4, atol=1e-5)  # No augmentation.
        np.testing.assert_array_equal(end, again)  # freeze.batchnorm=True: kept frozen.


def test_adabn_needs_batchnorm_layers(tmp_path):
    config = get_default_config()
    config.model.backbone, config.model.preset = "bert", "bert_tiny_en_uncased"
    config.data.source, config.data.path = "text_file", "train.csv"
    config.model.freeze.adabn = True
    with pytest.raises(ConfigError, match=r"model.freeze.adabn .*model.backbone='bert'.*LayerNorm"
                                          r".*Received: model.freeze.adabn=True"):
        validate_config(config, check_files=False)

    # An image backbone without BatchNorm fails when its model is built, before training.
    config = validate_config({
        "data": {"source": "image_folder", "validation_split": 0.25, "image_size": (32, 32),
                 "path": write_image_folder(tmp_path / "images", per_class=4)},
        "model": {"backbone": "vgg16", "freeze": {"adabn": True}},
        "train": {"epochs": 1, "batch_size": 4},
    })
    with pytest.raises(ConfigError, match=r"model.freeze.adabn .*model.backbone='vgg16' has no "
                                          r"BatchNormalization.*Received: model.freeze.adabn=True"):
        train_and_evaluate(config, str(tmp_path / "run"))


def test_resumed_adabn_run_keeps_the_checkpoint_statistics(tmp_path, monkeypatch):
    import json
    import os

    def config(epochs):
        return validate_config({
            "data": {"source": "image_folder", "validation_split": 0.25, "image_size": (32, 32),
                     "path": str(tmp_path / "images")},
            "model": {"backbone": "small_cnn", "freeze": {"adabn": True}},
            "train": {"epochs": epochs, "batch_size": 8, "early_stopping_patience": 0},
            "export": {"enabled": False},
        })

    write_image_folder(tmp_path / "images", per_class=8)
    workdir = str(tmp_path / "run")
    first = _RecordStats()
    train_and_evaluate(config(1), workdir, callbacks=[first])
    state_path = os.path.join(workdir, "checkpoints", "state.json")
    state = json.load(open(state_path))
    state["complete"] = False  # As if the process died after epoch 1.
    open(state_path, "w").write(json.dumps(state))
    calls = []
    monkeypatch.setattr(freezing, "reestimate_batchnorm", lambda *args: calls.append(args))
    resumed = _RecordStats()

    train_and_evaluate(config(2), workdir, callbacks=[resumed])

    assert calls == []  # The checkpoint holds the statistics: no second AdaBN pass.
    assert len(resumed.begin) == len(first.end) == 6
    for begin, end in zip(resumed.begin, first.end):
        np.testing.assert_array_equal(begin, end)
