"""Staged unfreezing during fit: which layers train, at which learning rate, from which epoch.

`train.stages` is parsed by `sft_keras.models.freezing.parse_stages`; this
module applies a stage to a model and splits the run's epochs into one
`fit` call per stage.
"""

from sft_keras.errors import ConfigError
from sft_keras.models import find_backbone, freeze_unused_pooler, freezing


def stage_bounds(stages, epochs):
    """The 0-based first epoch of each stage, then `epochs`: one `fit` per consecutive pair.

    Example:

    >>> from sft_keras.models.freezing import parse_stages
    >>> stage_bounds(parse_stages(("0:backbone", "2:all")), 5), stage_bounds((), 5)
    ([0, 2, 5], [0, 5])
    """
    return [s.epoch for s in stages] + [epochs] if stages else [0, epochs]


def set_learning_rate(optimizer, value, stage):
    """Sets a constant learning rate for stage `stage`; a schedule cannot be scaled."""
    try:
        optimizer.learning_rate = value
    except TypeError:
        raise ConfigError(
            f"train.stages[{stage}] sets a learning rate factor, but the optimizer's learning "
            "rate is a schedule, which cannot be scaled per stage. Drop 'lr=' from the stages."
        ) from None


def unfreeze_all(model, config):
    """Makes every backbone layer trainable (BatchNorm as configured): what any stage may train.

    One optimizer serves every stage: built on all the variables any stage
    will train, its state (Adam moments, step count) carries over as layers
    unfreeze; a Keras optimizer cannot add variables after it is built.
    """
    freezing.set_trainable(find_backbone(model), freeze_batchnorm=config.model.freeze.batchnorm)


def apply_stage(model, config, stages, index):
    """Sets the trainable layers and learning rate of stage `index`.

    Args:
        model: a compiled model built by `sft_keras.models`.
        config: the run's validated config.
        stages: the parsed `train.stages`.
        index: int. The stage to apply.
    """
    stage = stages[index]
    backbone = find_backbone(model)
    try:
        freezing.set_trainable(
            backbone, until=stage.until, patterns=stage.patterns, freeze_all=stage.freeze_all,
            freeze_batchnorm=config.model.freeze.batchnorm,
        )
    except ConfigError as e:
        raise ConfigError(f"train.stages[{index}]={stage.text!r}: {e}") from None
    freeze_unused_pooler(backbone, config.model.head.pooling)
    set_learning_rate(model.optimizer, config.train.learning_rate * stage.lr_factor, index)
