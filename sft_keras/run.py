"""Rebuild a finished run from its workdir: config, class names, trained model.

`load_run(workdir)` reads what `train_and_evaluate` left in the workdir
(`config.json`, `labels.txt`, `checkpoints/{best,last}.weights.h5`), rebuilds
the model with the same builders training used, loads the checkpoint, and
reads no training data. Used by `sft-export` and for evaluating a run later.
"""

import dataclasses
import json
import os
from typing import Any, List, Optional

from sft_keras import config as config_lib
from sft_keras.errors import SftError, WorkdirError

CHECKPOINTS = ("best", "last")


@dataclasses.dataclass
class Run:
    """A trained run rebuilt from its workdir (see `load_run`).

    Attributes:
        workdir: str. The run's folder.
        config: the validated, locked `ConfigDict` of the run.
        class_names: list of str in class-index order (empty for regression).
        model: the `keras.Model` with the checkpoint's weights (uncompiled).
        checkpoint: str. The weights file that was loaded.
        preprocessor: the keras-hub preprocessor (text runs); None for images.
    """

    workdir: str
    config: Any
    class_names: List[str]
    model: Any
    checkpoint: str
    preprocessor: Optional[Any] = None

    @property
    def modality(self):
        """`"image"` or `"text"`."""
        return "image" if self.preprocessor is None else "text"

    def export(self, export_base=None, version=None, overwrite=False):
        """Writes the model as a SavedModel for TF Serving, as training does.

        Args:
            export_base: str or None. The folder holding the versions; None
                means `<workdir>/export`.
            version: int or None. None: one more than the highest present.
            overwrite: bool. Replace an existing `version` (else `ExportError`).

        Returns:
            str. The path of the written version folder.
        """
        from sft_keras.serving.export import export_model
        from sft_keras.tasks import read_tuned_thresholds, task_from_config

        info = {"backbone": self.config.model.backbone, "preset": self.config.model.preset,
                "workdir": os.path.abspath(self.workdir),
                "checkpoint": os.path.basename(self.checkpoint)}
        metrics = os.path.join(self.workdir, "metrics.json")
        if os.path.isfile(metrics):
            with open(metrics, encoding="utf-8") as f:
                info["metrics"] = json.load(f)
        return export_model(
            self.config, self.model, export_base or os.path.join(self.workdir, "export"),
            self.class_names, self.preprocessor, info=info, version=version, overwrite=overwrite,
            task=task_from_config(self.config, self.class_names,
                                  tuned=read_tuned_thresholds(self.workdir)),
        )


def load_run(workdir, checkpoint="best"):
    """Rebuilds the trained model of a workdir written by `train_and_evaluate`.

    Image backbones are rebuilt without pretrained weights and text encoders
    from `model.preset` (which must still be readable: it holds the
    vocabulary); the checkpoint then sets every weight. The training data is
    not read, and need not exist any more.

    Args:
        workdir: str. The run's folder.
        checkpoint: str, default `"best"`. `"best"` or `"last"`
            (`checkpoints/<name>.weights.h5`), or the path of a
            `.weights.h5` file.

    Returns:
        A `Run` (config, class_names, model, checkpoint, preprocessor, and
        `export()`).

    Raises:
        WorkdirError: the workdir, its `config.json` or the checkpoint is
            missing or does not fit the rebuilt model.
        ConfigError: `config.json` holds a value that is not accepted.

    Example:

    >>> run = load_run("/tmp/sft_digits")  # doctest: +SKIP
    >>> run.model.predict(images)  # doctest: +SKIP
    >>> run.export()  # doctest: +SKIP
    '/tmp/sft_digits/export/2'
    """
    if not os.path.isdir(workdir):
        raise WorkdirError(f"Workdir {workdir!r} does not exist or is not a folder.")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise WorkdirError(
            f"No config.json in workdir {workdir!r}: expected {config_path!r}, which "
            f"sft-train writes at the start of a run. Is this a workdir of sft-train?"
        )
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except ValueError as e:
        raise WorkdirError(f"Cannot parse {config_path!r} as JSON: {e}") from None
    try:
        config = config_lib.validate_config(raw, check_files=False)
    except SftError as e:
        raise type(e)(f"{config_path}: {e}") from None
    weights = _checkpoint_path(workdir, checkpoint)
    labels_path = os.path.join(workdir, "labels.txt")
    if not os.path.isfile(labels_path):
        raise WorkdirError(f"No labels.txt in workdir {workdir!r}: expected {labels_path!r}.")
    with open(labels_path, encoding="utf-8") as f:
        class_names = [line.rstrip("\n") for line in f if line.rstrip("\n")]

    from sft_keras import backbones
    from sft_keras.models import build_model

    num_classes = max(len(class_names), 1)
    if backbones.get_backbone_spec(config.model.backbone).modality == "image":
        build_config = config_lib.validate_config(config.to_dict(), check_files=False)
        build_config.model.weights = None  # The checkpoint holds every weight.
        model, preprocessor = build_model(build_config, num_classes), None
    else:
        tokenizer = backbones.load_text_tokenizer(config.model.backbone, config.model.preset)
        preprocessor = backbones.make_preprocessor(tokenizer, config.data.sequence_length)
        model = build_model(config, num_classes, tokenizer)
    try:
        model.load_weights(weights)
    except Exception as e:
        raise WorkdirError(
            f"Checkpoint {weights!r} does not fit the model rebuilt from {config_path!r}: {e}"
        ) from None
    return Run(workdir=workdir, config=config, class_names=class_names, model=model,
               checkpoint=weights, preprocessor=preprocessor)


def _checkpoint_path(workdir, checkpoint):
    if checkpoint in CHECKPOINTS:
        path = os.path.join(workdir, "checkpoints", f"{checkpoint}.weights.h5")
        if not os.path.isfile(path):
            present = sorted(os.listdir(os.path.dirname(path))) if os.path.isdir(
                os.path.dirname(path)) else []
            raise WorkdirError(
                f"No {checkpoint!r} checkpoint in workdir {workdir!r}: {path!r} does not exist "
                f"(checkpoints/ holds: {present}). Pass checkpoint='best' or 'last' "
                f"for one that exists."
            )
        return path
    if isinstance(checkpoint, str) and checkpoint.endswith(".weights.h5"):
        if not os.path.isfile(checkpoint):
            raise WorkdirError(f"Checkpoint file {checkpoint!r} does not exist.")
        return checkpoint
    raise WorkdirError(
        f"checkpoint must be 'best', 'last' or the path of a .weights.h5 file. "
        f"Received: checkpoint={checkpoint!r}"
    )
