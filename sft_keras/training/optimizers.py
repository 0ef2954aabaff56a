"""Optimizers, learning-rate schedules and layer-wise learning-rate decay, from the `train` config.

`build_optimizer(train_config, model, total_steps)` is the one entry point:

- `train.optimizer` picks the Keras optimizer (`OPTIMIZERS`): `adam`,
  `adamw` (decoupled weight decay, never applied to biases, norm
  scales/offsets or any other 1-D variable), `sgd` (momentum).
- `train.schedule` picks the learning-rate schedule (`SCHEDULES`):
  `constant`, `cosine` or `linear`, after a linear warmup of
  `train.warmup_steps` (or `train.warmup_fraction` of the run) steps, decaying
  to `train.min_lr_ratio * learning_rate` at the last step.
- `train.clipnorm`, `train.global_clipnorm`, `train.gradient_accumulation_steps`
  are the Keras optimizer arguments of the same names.
- `train.layerwise_lr_decay` < 1 gives lower layers a lower learning rate
  (`layerwise_lr_scales`).
"""

import copy
import dataclasses
import re

import keras
from absl import logging

from sft_keras import patches
from sft_keras.errors import ConfigError
from sft_keras.models.build import find_backbone
from sft_keras.registry import Registry

# Variables that weight decay leaves alone, by name: Dense/Conv biases and the scale/offset
# of LayerNorm and BatchNorm. The TF backend matches the tf.Variable's name ('.../gamma:0').
# With a model at hand, every 1-D variable is excluded too, whatever a layer names it.
NO_DECAY_NAMES = (r"(^|/)(bias|gamma|beta)(:\d+)?$",)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A Keras optimizer class and the config keys it reads.

    Args:
        cls: a `keras.optimizers.Optimizer` subclass.
        options: callable `train_config -> dict` of constructor arguments
            beyond the learning rate and the shared ones (clipping, accumulation).
    """

    cls: type
    options: object


OPTIMIZERS = Registry("optimizer", config_key="train.optimizer")
OPTIMIZERS.register("adam", OptimizerSpec(keras.optimizers.Adam, lambda t: {}))
OPTIMIZERS.register(
    "adamw", OptimizerSpec(keras.optimizers.AdamW, lambda t: {"weight_decay": t.weight_decay})
)
OPTIMIZERS.register(
    "sgd",
    OptimizerSpec(
        keras.optimizers.SGD,
        lambda t: {"momentum": t.momentum, "weight_decay": t.weight_decay or None},
    ),
)


# === Learning-rate schedules ===


@keras.saving.register_keras_serializable(package="sft_keras")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then `after(step - warmup_steps)`.

    Args:
        peak: float. The learning rate at the end of warmup.
        warmup_steps: int >= 0. Length of the warmup.
        after: a `LearningRateSchedule` or None (constant `peak`), for the
            steps after warmup, counted from 0.

    Example:

    >>> schedule = LinearWarmup(1.0, 4)
    >>> [round(float(schedule(s)), 2) for s in (0, 2, 4, 9)]
    [0.25, 0.75, 1.0, 1.0]
    """

    def __init__(self, peak, warmup_steps, after=None):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.after = after

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        later = self.after(step - self.warmup_steps) if self.after is not None else self.peak
        if not self.warmup_steps:
            return keras.ops.cast(later, "float32")
        # Step 0 already trains, so it gets peak / warmup_steps, not 0.
        warm = self.peak * keras.ops.minimum(step + 1.0, self.warmup_steps) / self.warmup_steps
        return keras.ops.where(step < self.warmup_steps, warm, keras.ops.cast(later, "float32"))

    def get_config(self):
        after = keras.optimizers.schedules.serialize(self.after) if self.after else None
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "after": after}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("after"):
            config["after"] = keras.optimizers.schedules.deserialize(config["after"])
        return cls(**config)


def _constant(lr, total_steps, warmup, min_ratio):
    return LinearWarmup(lr, warmup) if warmup else lr


def _cosine(lr, total_steps, warmup, min_ratio):
    # Keras's own: warms up linearly from initial_learning_rate to warmup_target.
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=max(total_steps - warmup, 1),
        alpha=min_ratio,
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )


def _linear(lr, total_steps, warmup, min_ratio):
    decay = keras.optimizers.schedules.PolynomialDecay(
        lr, decay_steps=max(total_steps - warmup, 1), end_learning_rate=lr * min_ratio, power=1.0
    )
    return LinearWarmup(lr, warmup, decay) if warmup else decay


SCHEDULES = Registry("schedule", config_key="train.schedule")
SCHEDULES.register("constant", _constant)
SCHEDULES.register("cosine", _cosine)
SCHEDULES.register("linear", _linear)


def warmup_steps(train_config, total_steps):
    """Returns the number of warmup steps: `warmup_steps`, else `warmup_fraction * total_steps`.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> t = get_default_config().train
    >>> t.warmup_fraction = 0.1
    >>> warmup_steps(t, total_steps=250)
    25
    """
    if train_config.warmup_steps:
        return int(train_config.warmup_steps)
    return int(round(train_config.warmup_fraction * (total_steps or 0)))


def build_learning_rate(train_config, total_steps=None):
    """Returns the learning rate `optimizer(learning_rate=...)` takes: a float or a schedule.

    Args:
        train_config: the `train` config (`learning_rate`, `schedule`,
            `warmup_steps`, `warmup_fraction`, `min_lr_ratio`).
        total_steps: int or None. Optimizer steps in the whole run
            (`steps_per_epoch * epochs`); the schedule reaches
            `min_lr_ratio * learning_rate` there. Needed unless the
            schedule is `constant` without warmup.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> t = get_default_config().train
    >>> t.schedule, t.learning_rate, t.warmup_steps = "linear", 1.0, 10
    >>> schedule = build_learning_rate(t, total_steps=110)
    >>> [round(float(schedule(s)), 2) for s in (0, 9, 10, 60, 110)]
    [0.1, 1.0, 1.0, 0.5, 0.0]
    """
    _check_resolved(train_config, ("learning_rate", "schedule")
                    + (() if train_config.warmup_steps else ("warmup_fraction",)))
    builder = SCHEDULES.get(train_config.schedule)
    warmup = warmup_steps(train_config, total_steps)
    lr = float(train_config.learning_rate)
    if train_config.schedule == "constant" and not warmup:
        return lr
    if not total_steps or total_steps <= 0:
        raise ConfigError(
            f"train.schedule={train_config.schedule!r} (with warmup {warmup} steps) needs the "
            f"run's total number of steps. Received: total_steps={total_steps!r}"
        )
    if warmup >= total_steps and train_config.schedule != "constant":
        raise ConfigError(
            f"train.warmup_steps/warmup_fraction give {warmup} warmup steps, but the run has "
            f"only {total_steps} steps: nothing would be left to decay over. Use fewer warmup "
            f"steps. Received: train.warmup_steps={train_config.warmup_steps!r}, "
            f"train.warmup_fraction={train_config.warmup_fraction!r}"
        )
    return builder(lr, total_steps, warmup, float(train_config.min_lr_ratio))


def describe_learning_rate(learning_rate, total_steps=None):
    """Returns a one-line description of a learning rate or schedule, for the log.

    Example:

    >>> describe_learning_rate(0.001)
    'constant 0.001'
    """
    if not callable(learning_rate):
        return f"constant {learning_rate:g}"
    points = sorted({0, (total_steps or 1) // 4, (total_steps or 1) // 2, (total_steps or 1) - 1})
    values = ", ".join(f"step {s}: {float(learning_rate(s)):.3g}" for s in points)
    return f"{type(learning_rate).__name__} over {total_steps} steps ({values})"


# === Layer-wise learning-rate decay ===


_STAGE = re.compile(r"(?:^|_)(?:block|conv|stage)_?(\d+)", re.IGNORECASE)


def backbone_blocks(backbone, num_chunks=4):
    """Groups a backbone's layers into blocks, bottom (0) to top, for layer-wise decay.

    keras-hub encoders: the embeddings (every layer before
    `transformer_layer_0`) are block 0 and `transformer_layer_i` is block
    i + 1; layers after the last transformer layer (the pooler) join the top
    block. Image backbones: the stage number in the layer name
    (`block3_conv1`, `conv4_block2_out`, `block_13_expand`); layers without
    one join the block before them. A backbone whose names give fewer than
    two stages is cut into `num_chunks` equal runs of its weighted layers.

    Args:
        backbone: a `keras.Model` (`keras.applications` model, keras-hub
            backbone, `small_cnn`).
        num_chunks: int. Blocks of the equal-chunk fallback.

    Returns:
        list of lists of layers, bottom block first; layers without weights
        are left out.

    Example:

    >>> from sft_keras.backbones import build_image_backbone
    >>> blocks = backbone_blocks(build_image_backbone("small_cnn", input_shape=(32, 32, 3)))
    >>> [[layer.name for layer in block] for block in blocks]
    [['block1_conv', 'block1_bn'], ['block2_conv', 'block2_bn'], ['block3_conv', 'block3_bn']]
    """
    layers = [layer for layer in backbone.layers if layer.weights]
    names = [layer.name for layer in layers]
    if any(name.startswith("transformer_layer_") for name in names):
        index, ids = 0, []
        for name in names:
            match = re.fullmatch(r"transformer_layer_(\d+)", name)
            if match:
                index = int(match.group(1)) + 1
            ids.append(index)
    else:
        ids, current = [], None
        for name in names:
            match = _STAGE.search(name)
            if match:
                current = int(match.group(1))
            ids.append(current)
        known = sorted({i for i in ids if i is not None})
        if len(known) >= 2:
            first = known[0]
            ids = [first if i is None else i for i in ids]
        else:
            size = -(-len(layers) // max(1, min(num_chunks, len(layers))))
            ids = [i // size for i in range(len(layers))]
    blocks = {}
    for layer, block_id in zip(layers, ids):
        blocks.setdefault(block_id, []).append(layer)
    return [blocks[k] for k in sorted(blocks)]


def layerwise_lr_scales(model, decay):
    """Returns the learning-rate factor of each variable for layer-wise decay.

    With `n` backbone blocks (`backbone_blocks`), a variable of block `i`
    (0 = bottom) gets `decay ** (n - i)`; the head and everything outside
    the backbone get 1.

    Args:
        model: a `keras.Model` from `sft_keras.models`; its backbone is
            `sft_keras.models.find_backbone(model)`.
        decay: float in (0, 1].

    Returns:
        dict: variable path -> factor, for the backbone's variables only.

    Raises:
        ConfigError: `model` does not hold exactly one nested backbone.
    """
    try:
        backbone = find_backbone(model)
    except ConfigError as e:
        raise ConfigError(f"train.layerwise_lr_decay={decay!r}: {e}") from None
    blocks = backbone_blocks(backbone)
    scales = {}
    for index, block in enumerate(blocks):
        for layer in block:
            for variable in layer.weights:
                scales[variable.path] = float(decay ** (len(blocks) - index))
    return scales


class LayerwiseLearningRate(patches.PerVariableLearningRate):
    """Mixin for a Keras optimizer: each variable is updated at `learning_rate * scale`.

    Why a mixin and not `keras.optimizers.MultiOptimizer` (which Keras 3.15
    has): MultiOptimizer would hold one optimizer and one schedule per block
    and clip each block's gradients on its own, so `global_clipnorm` would
    stop being global. Here one optimizer keeps one schedule, one step
    counter and one clipping of all gradients; only the step size differs.

    Why scale the learning rate and not the gradient: Adam and AdamW divide
    by the running RMS of the gradient, so a gradient scaled by `s` gives the
    same update; the learning rate is what sets the step. The decoupled
    weight decay (`AdamW`, `SGD(weight_decay=...)`) is applied per variable
    too, at the scaled rate, as in the ELECTRA/BEiT recipes.

    Keras has no public per-variable learning rate: the overrides of its
    optimizer internals are `sft_keras.patches.PerVariableLearningRate`,
    which checks the Keras version when the optimizer is created.

    Set `lr_scales` (variable path -> factor; missing paths get 1) before
    the optimizer is built. Use `with_layerwise_lr` to make a class.
    """


_LAYERWISE_CLASSES = {}


def with_layerwise_lr(cls):
    """Returns `cls` (a Keras optimizer class) with `LayerwiseLearningRate` mixed in.

    Example:

    >>> import keras
    >>> with_layerwise_lr(keras.optimizers.AdamW).__name__
    'LayerwiseAdamW'
    """
    if cls not in _LAYERWISE_CLASSES:
        _LAYERWISE_CLASSES[cls] = type(f"Layerwise{cls.__name__}", (LayerwiseLearningRate, cls), {})
    return _LAYERWISE_CLASSES[cls]


# === The recipe: defaults that fit the backbone ===

# What 'auto' / None in train.{optimizer, learning_rate, weight_decay, schedule,
# warmup_fraction} become, by kind of run (`recipe_kind`). Text: BERT's fine-tuning
# recipe (Devlin et al. 2019; Hugging Face's Trainer): AdamW with weight decay 0.01, a
# 10% linear warmup, linear decay. Image CNNs: Adam at a constant rate, 10x lower when
# the pretrained weights are fine-tuned than from scratch (Keras's transfer-learning
# guide). A frozen encoder (the head alone) and LoRA's few new weights take larger steps
# (LoRA: Hu et al. 2021 used 4e-4 to 5e-4 for RoBERTa-base).
RECIPES = {
    "text": dict(optimizer="adamw", learning_rate=5e-5, weight_decay=0.01, schedule="linear",
                 warmup_fraction=0.1),
    "text_head": dict(optimizer="adamw", learning_rate=1e-3, weight_decay=0.01,
                      schedule="linear", warmup_fraction=0.1),
    "text_lora": dict(optimizer="adamw", learning_rate=5e-4, weight_decay=0.01,
                      schedule="linear", warmup_fraction=0.1),
    "image_pretrained": dict(optimizer="adam", learning_rate=1e-4, weight_decay=0.0,
                             schedule="constant", warmup_fraction=0.0),
    "image_scratch": dict(optimizer="adam", learning_rate=1e-3, weight_decay=0.0,
                          schedule="constant", warmup_fraction=0.0),
}
RECIPE_KEYS = ("optimizer", "learning_rate", "weight_decay", "schedule", "warmup_fraction")
# Fine-tuning a whole text encoder: the learning rate by its hidden size. BERT-base's
# 5e-5 (Devlin et al. 2019) is too small a step for small encoders (Turc et al. 2019
# fine-tune BERT-Tiny..Medium at up to 1e-4) and large ones want less. Measured on
# MiniLM (hidden 384), linear decay after a 10% warmup: SST-2, 8,000 sentences, 1 epoch:
# 0.8578 at 1e-4 vs 0.8394 at 5e-5; the quickstart: 0.9080 vs 0.9004 (docs/training.md).
TEXT_LEARNING_RATES = ((512, 1e-4), (768, 5e-5), (None, 2e-5))  # (up to width, rate).
_RECIPE_NAMES = {
    "text": "a fine-tuned text encoder", "text_head": "a frozen text encoder (head only)",
    "text_lora": "a text encoder with LoRA", "image_pretrained": "a pretrained image backbone",
    "image_scratch": "an image backbone from scratch or frozen",
}


def _unset(key, value):
    return value is None or (key in ("optimizer", "schedule") and value == "auto")


def recipe_kind(config):
    """Returns which `RECIPES` entry fits the config's backbone and how it is trained.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.model.backbone, config.model.weights = "resnet50", "imagenet"
    >>> recipe_kind(config)
    'image_pretrained'
    """
    from sft_keras.backbones import get_backbone_spec

    m = config.model
    if config.task == "retrieval" or get_backbone_spec(m.backbone).modality == "text":
        if m.lora_rank:
            return "text_lora"
        return "text_head" if m.freeze.backbone else "text"
    pretrained = bool(m.weights) or (m.backbone == "hub_image" and m.preset_weights)
    return "image_pretrained" if pretrained and not m.freeze.backbone else "image_scratch"


def resolve_recipe(config):
    """Fills the config's 'auto' / None optimizer keys with the backbone's recipe.

    `train.optimizer`, `learning_rate`, `weight_decay`, `schedule` and
    `warmup_fraction` left at their defaults ('auto' or None) take the values
    of `RECIPES[recipe_kind(config)]`; keys the config sets are kept. A
    `weight_decay` left unset is 0 for an optimizer other than AdamW. With
    `train.stages` the schedule is constant without warmup (each stage sets
    its own rate, `lr=`).
    `train_and_evaluate` calls it first, so `config.json` holds the values used.

    Args:
        config: a validated `ConfigDict`.

    Returns:
        (config, description): a copy of `config` with concrete values, and a
        one-line description for the log, naming the recipe and which keys it set.

    Example:

    >>> from sft_keras.config import get_default_config, validate_config
    >>> config = validate_config(get_default_config())  # mobilenet_v2 from scratch.
    >>> resolved, line = resolve_recipe(config)
    >>> resolved.train.optimizer, resolved.train.learning_rate, resolved.train.schedule
    ('adam', 0.001, 'constant')
    >>> line
    'Recipe: adam, learning rate 0.001, constant, weight decay 0 (optimizer, learning_rate, weight_decay, schedule, warmup_fraction: the default for an image backbone from scratch or frozen)'
    """
    kind = recipe_kind(config)
    recipe = dict(RECIPES[kind])
    width = None
    if kind == "text":
        from sft_keras.backbones.text import encoder_width

        width = encoder_width(config.model.preset)
        if width is not None:
            recipe["learning_rate"] = next(
                rate for limit, rate in TEXT_LEARNING_RATES if limit is None or width <= limit)
    resolved = copy.deepcopy(config)
    t = resolved.train
    filled = [key for key in RECIPE_KEYS if _unset(key, t[key])]
    if t.stages:  # Each stage sets its own constant rate (lr=): a schedule cannot be scaled.
        recipe["schedule"], recipe["warmup_fraction"] = "constant", 0.0
    for key in filled:
        t[key] = recipe[key]
    if "weight_decay" in filled and t.optimizer != "adamw":
        t.weight_decay = 0.0
    warmup = (f"{t.warmup_steps} warmup steps, " if t.warmup_steps else
              f"{t.warmup_fraction:.0%} warmup, " if t.warmup_fraction else "")
    line = (f"Recipe: {t.optimizer}, learning rate {t.learning_rate:g}, {warmup}{t.schedule}, "
            f"weight decay {t.weight_decay:g}")
    if filled:
        size = f" of hidden size {width}" if width and "learning_rate" in filled else ""
        line += f" ({', '.join(filled)}: the default for {_RECIPE_NAMES[kind]}{size})"
    else:
        line += " (all set by the config)"
    return resolved, line


def _check_resolved(t, keys=RECIPE_KEYS):
    unset = [key for key in keys if _unset(key, t[key])]
    if unset:
        raise ConfigError(
            f"train.{unset[0]} is {t[unset[0]]!r}: the backbone's default, which "
            "sft_keras.training.optimizers.resolve_recipe(config) fills in (train_and_evaluate "
            f"calls it). Call it first, or set train.{unset[0]}. Received: "
            + ", ".join(f"train.{k}={t[k]!r}" for k in unset))


# === The optimizer ===


def build_optimizer(train_config, model=None, total_steps=None):
    """Returns the Keras optimizer the `train` config describes.

    Args:
        train_config: the `train` part of the config (`optimizer`,
            `learning_rate`, `weight_decay`, `momentum`, `schedule`,
            `warmup_steps`, `warmup_fraction`, `min_lr_ratio`, `clipnorm`,
            `global_clipnorm`, `gradient_accumulation_steps`,
            `layerwise_lr_decay`).
        model: the `keras.Model` to train, or None. Needed for layer-wise
            decay; with it, weight decay skips every 1-D variable (biases,
            norm scales and offsets), not only those named `bias`, `gamma`,
            `beta`.
        total_steps: int or None. Optimizer steps in the run
            (`steps_per_epoch * epochs`), for schedules and warmup.

    Example:

    >>> from sft_keras.config import get_default_config, validate_config
    >>> config, _ = resolve_recipe(validate_config(get_default_config()))
    >>> config.train.optimizer = "sgd"
    >>> type(build_optimizer(config.train)).__name__
    'SGD'
    """
    t = train_config
    _check_resolved(t)
    spec = OPTIMIZERS.get(t.optimizer)
    learning_rate = build_learning_rate(t, total_steps)
    decay = t.layerwise_lr_decay
    layerwise = decay not in (0, 1, 0.0, 1.0)
    cls = with_layerwise_lr(spec.cls) if layerwise else spec.cls
    optimizer = cls(
        learning_rate=learning_rate,
        clipnorm=t.clipnorm or None,
        global_clipnorm=t.global_clipnorm or None,
        gradient_accumulation_steps=(
            t.gradient_accumulation_steps if t.gradient_accumulation_steps > 1 else None
        ),
        **spec.options(t),
    )
    if optimizer.weight_decay:
        # Every 1-D variable, frozen ones included: staged unfreezing trains them later.
        one_dim = [v for v in model.weights if len(v.shape) <= 1] if model else None
        optimizer.exclude_from_weight_decay(var_list=one_dim, var_names=list(NO_DECAY_NAMES))
    if layerwise:
        if model is None:
            raise ConfigError(
                "train.layerwise_lr_decay needs the model: call build_optimizer(train_config, "
                f"model). Received: train.layerwise_lr_decay={decay!r}"
            )
        optimizer.lr_scales = layerwise_lr_scales(model, decay)
        logging.info(
            "Layer-wise learning-rate decay %g: factors %s", decay,
            sorted(set(optimizer.lr_scales.values())),
        )
    logging.info(
        "Optimizer %s, learning rate %s%s%s%s", type(optimizer).__name__,
        describe_learning_rate(learning_rate, total_steps),
        f", clipnorm {t.clipnorm:g}" if t.clipnorm else "",
        f", global_clipnorm {t.global_clipnorm:g}" if t.global_clipnorm else "",
        f", gradient accumulation {t.gradient_accumulation_steps}"
        if t.gradient_accumulation_steps > 1 else "",
    )
    return optimizer
