"""The `Modality` interface and its registry."""

import dataclasses
from typing import Callable, List

from sft_keras.registry import Registry

MODALITIES = Registry("modality", config_key="the backbone's modality")


@dataclasses.dataclass
class PredictionInputs:
    """What `sft-predict` feeds an export: the inputs, and how a batch of them is sent.

    Attributes:
        items: list. One entry per input (an image path, a tuple of texts).
        feed: callable. A list of items -> the `serving_default` keyword
            arguments (dict of `tf.Tensor`).
        show: callable. An item -> what the output line calls it (`input`).
    """

    items: List
    feed: Callable
    show: Callable


class Modality:
    """What one kind of input does at each step of a run; subclasses fill every method.

    A modality is bound to one validated config. The spine calls, in order:
    `load_data` -> `make_dataset` -> `build_model` -> (fit) -> `export`;
    `read_examples` scores other data (`sft-eval --data`), and the class
    method `prediction_inputs` reads `sft-predict`'s inputs for an export.

    Args:
        config: a validated config.
    """

    name = None  # The `modality` of the backbones it serves.
    supports_lora = False  # `model.lora_rank > 0` is accepted.

    def __init__(self, config):
        self.config = config

    # === Config checks (class methods: called by `validate_config`, before any build) ===

    @classmethod
    def sources(cls):
        """The `data.source` values this modality reads."""
        raise NotImplementedError

    @classmethod
    def check_data_config(cls, data_config):
        """Raises `ConfigError` for a `data` key of this modality with a bad value."""
        raise NotImplementedError

    @classmethod
    def check_model_config(cls, model_config, check_files):
        """Raises `ConfigError` for a `model` key of this modality with a bad value."""
        raise NotImplementedError

    # === The spine ===

    def load_data(self):
        """Reads, checks and splits the run's data: `.train`, `.validation`, `.class_names`."""
        raise NotImplementedError

    def read_examples(self, path, class_names):
        """Reads a file or folder of the same kind as the training data, labels mapped by
        `class_names` (an unknown label is a `DataError` naming the file and line)."""
        raise NotImplementedError

    def make_dataset(self, examples):
        """A batched, unshuffled `tf.data.Dataset` of `(inputs, labels)` for `examples`."""
        raise NotImplementedError

    def build_model(self, num_classes, pretrained=True):
        """The uncompiled model; `pretrained=False` skips pretrained weights that a
        checkpoint will replace."""
        raise NotImplementedError

    def evaluate(self, model, dataset, examples, report_dir, training_log=None,
                 split="validation"):
        """Writes a report of this modality's own on `examples` (batched in `dataset`) to
        `report_dir` and returns its metrics (`split` names them), or returns None (the
        default) for the shared report (`sft_keras.evaluation.report.write_report`)."""
        return None

    def export(self, model, export_dir, class_names, task, info=None, version=None,
               overwrite=False):
        """Writes `<export_dir>/<version>/`, a SavedModel taking raw inputs; returns its path."""
        raise NotImplementedError

    @classmethod
    def prediction_inputs(cls, info, input_path, text_column=None):
        """Reads `sft-predict`'s inputs for an export described by `info`."""
        raise NotImplementedError
