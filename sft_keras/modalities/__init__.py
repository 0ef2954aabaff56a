"""Modalities: what images and text each do at every step of a run, behind one interface.

A `Modality` is chosen once, from the backbone's registered modality
(`get_modality(config)`), and then asked for everything that depends on the
kind of input: reading examples, the tf.data pipeline, the model, the export
and the inputs of `sft-predict`. The training loop, `load_run`, `sft-eval`
and `sft-predict` call this interface and never ask which modality they have.

A new modality is a module here with a `Modality` subclass, registered with
`MODALITIES.register(name, cls)`, and backbones registered with that
`modality` name (`sft_keras.backbones.BackboneSpec`).
"""

from sft_keras.modalities.base import MODALITIES, Modality, PredictionInputs
from sft_keras.modalities import image, retrieval, text  # noqa: F401  (registers them)


def get_modality(config):
    """Returns the `Modality` of a validated config, chosen by its backbone.

    `task="retrieval"` (a text dual encoder) has a modality of its own.

    Args:
        config: a validated config.

    Returns:
        A `Modality` bound to `config`.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.model.backbone = "small_cnn"
    >>> get_modality(config).name
    'image'
    """
    from sft_keras.backbones import get_backbone_spec

    if config.task == "retrieval":
        return MODALITIES.get("retrieval")(config)
    return MODALITIES.get(get_backbone_spec(config.model.backbone).modality)(config)


def modality_of_export(info, where="export_info.json"):
    """Returns the `Modality` class that wrote an export, from its `export_info.json` dict.

    Args:
        info: dict. The export's `assets.extra/export_info.json`.
        where: str. Named in the error for an unknown modality.

    Example:

    >>> modality_of_export({"modality": "text"}).name
    'text'
    """
    from sft_keras.errors import ExportError

    name = info.get("modality")
    if name not in MODALITIES:
        raise ExportError(f"Unknown modality in {where}: expected one of {MODALITIES.names()}. "
                          f"Received: {name!r}")
    return MODALITIES.get(name)


__all__ = ["MODALITIES", "Modality", "PredictionInputs", "get_modality", "modality_of_export"]
