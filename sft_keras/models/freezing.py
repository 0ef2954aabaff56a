"""Set which backbone layers train: by index, by name pattern, and BatchNorm.

Keras freezes a layer with `layer.trainable = False`; a change only takes
effect after the model is compiled again. A frozen BatchNormalization layer
also runs in inference mode (Keras 3), which is what fine-tuning wants: its
moving statistics stay those of the pretrained weights. Calling the backbone
with `training=False` is NOT enough in Keras 3.15 when the backbone itself is
trainable (keras-team/keras#20285), so BatchNorm layers are frozen one by one.

`reestimate_batchnorm` is AdaBN: it replaces the moving statistics with
those of the target data, for `model.freeze.adabn`.
"""

import re

import keras

from sft_keras.errors import ConfigError

_BATCHNORM_TYPES = (keras.layers.BatchNormalization,)


def _walk(layer):
    """Yields `layer`'s sublayers depth first (nested models included)."""
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from _walk(sub)


def set_trainable(backbone, until=None, patterns=(), freeze_all=False, freeze_batchnorm=True):
    """Freezes part of `backbone` and makes the rest trainable.

    Args:
        backbone: `keras.Model`. Its `layers` are indexed as Keras lists them
            (the input layer is index 0).
        until: int or None. Freeze `backbone.layers[:until]`; a negative value
            counts from the end, so `until=-4` leaves the last 4 layers
            trainable. Must satisfy `-len(layers) <= until <= len(layers)`.
        patterns: sequence of str. Also freeze every layer whose name matches
            one of these regular expressions (`re.search`).
        freeze_all: bool. Freeze every backbone layer.
        freeze_batchnorm: bool. Freeze every BatchNormalization layer, which
            keeps it in inference mode with fixed moving statistics.

    Returns:
        List of the names of the frozen layers, in layer order.

    Raises:
        ConfigError: `until` is out of range, or a pattern matches no layer.

    Example:

    >>> from sft_keras.backbones import build_image_backbone
    >>> vgg = build_image_backbone("vgg16", weights=None, input_shape=(32, 32, 3))
    >>> frozen = set_trainable(vgg, until=15)  # Train only block 5.
    >>> [layer.name for layer in vgg.layers if layer.trainable]
    ['block5_conv1', 'block5_conv2', 'block5_conv3', 'block5_pool']
    """
    layers = backbone.layers
    n = len(layers)
    if until is not None and not -n <= until <= n:
        raise ConfigError(
            f"model.freeze.until is out of range for backbone {backbone.name!r}, "
            f"which has {n} layers: use an index in [{-n}, {n}]. "
            f"Received: model.freeze.until={until}"
        )
    backbone.trainable = True
    for layer in _walk(backbone):
        layer.trainable = True

    frozen = set()
    if freeze_all:
        frozen.update(id(layer) for layer in layers)
    if until is not None:
        frozen.update(id(layer) for layer in layers[:until])
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ConfigError(
                f"model.freeze.patterns holds an invalid regular expression ({e}). "
                f"Received: {pattern!r}"
            ) from None
        matches = [layer for layer in layers if regex.search(layer.name)]
        if not matches:
            examples = ", ".join(layer.name for layer in layers[:3] + layers[-3:])
            raise ConfigError(
                f"model.freeze.patterns entry {pattern!r} matches no layer of backbone "
                f"{backbone.name!r} (layer names look like: {examples})."
            )
        frozen.update(id(layer) for layer in matches)

    for layer in layers:
        if id(layer) in frozen:
            layer.trainable = False
    if freeze_batchnorm:
        for layer in _walk(backbone):
            if isinstance(layer, _BATCHNORM_TYPES):
                layer.trainable = False
    return [layer.name for layer in layers if not layer.trainable]


def batchnorm_layers(model):
    """The BatchNormalization layers of `model`, nested models included, in layer order."""
    return [layer for layer in _walk(model) if isinstance(layer, _BATCHNORM_TYPES)]


def reestimate_batchnorm(model, dataset):
    """Re-estimates every BatchNorm layer's moving statistics on `dataset` (AdaBN).

    One pass over `dataset`: each BatchNormalization layer's moving mean and
    variance become the plain average, over the batches, of the mean and
    variance of its inputs in each batch (batch `k`, 0-based, is weighted in
    with momentum `k / (k + 1)`), as the rest of the model runs in inference
    mode: Dropout and augmentation layers do nothing, and no other weight
    changes. Each BatchNorm layer's `trainable` flag, `momentum` and `call`
    are restored afterwards, also when an error stops the pass.

    Keras 3 BatchNorm updates its statistics only when called with
    `training=True` and `trainable`; here the BatchNorm layers alone are
    called so, for this pass. Renormalising BatchNorm (`renorm=True`) layers
    are not supported.

    Args:
        model: a built `keras.Model` (a backbone or a whole model).
        dataset: iterable of batches: `inputs`, or tuples whose first item is
            the inputs (`(images, labels)`, as `make_dataset` gives). Batches
            should not be augmented.

    Returns:
        int: the number of BatchNormalization layers updated (0 when `model`
        has none: nothing changes).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
    >>> batches = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 5.0], [6.0, 7.0]])]
    >>> reestimate_batchnorm(model, batches)
    1
    >>> np.round(keras.ops.convert_to_numpy(model.layers[0].moving_mean), 4).tolist()
    [3.0, 4.0]
    """
    norms = batchnorm_layers(model)
    if not norms:
        return 0
    saved = [(layer, layer.trainable, layer.momentum) for layer in norms]
    try:
        for layer in norms:
            layer.trainable = True  # Also re-enables them inside a frozen parent (Keras 3).
            layer.call = _forced_training_call(layer)
        for k, batch in enumerate(dataset):
            inputs = batch[0] if isinstance(batch, tuple) else batch
            for layer in norms:
                layer.momentum = k / (k + 1)  # A cumulative average of the batch statistics.
            model(inputs, training=False)
    finally:
        for layer, trainable, momentum in saved:
            layer.trainable, layer.momentum = trainable, momentum
            layer.__dict__.pop("call", None)  # The class's own `call` again.
    return len(norms)


def _forced_training_call(layer):
    """`layer.call` as if called with `training=True` (its statistics update)."""
    call = type(layer).call.__get__(layer)

    def forced(inputs, training=None, mask=None):
        return call(inputs, training=True, mask=mask)

    return forced


def _count(weights):
    return int(sum(keras.ops.size(w) for w in weights))


def trainable_summary(model):
    """Returns a table of trainable vs frozen parameters per top-level layer.

    Nested models (the backbone) count as one row, with how many of their
    layers are trainable.

    Args:
        model: a built `keras.Model`.

    Returns:
        str. One line per top-level layer with weights, then a `total` line.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    >>> model.layers[0].trainable = False
    >>> print(trainable_summary(model))
    layer                  layers trainable    trainable params    frozen params
    dense                               0/1                   0                8
    total                                                     0                8
    """
    rows = []
    for layer in model.layers:
        if not layer.weights:
            continue
        sub = list(getattr(layer, "layers", [])) or [layer]
        trainable_layers = sum(1 for s in sub if s.trainable and s.weights)
        rows.append(
            (
                layer.name,
                f"{trainable_layers}/{sum(1 for s in sub if s.weights)}",
                _count(layer.trainable_weights),
                _count(layer.non_trainable_weights),
            )
        )
    lines = [f"{'layer':<22} {'layers trainable':>16} {'trainable params':>19} {'frozen params':>16}"]
    for name, ratio, trainable, frozen in rows:
        lines.append(f"{name:<22} {ratio:>16} {trainable:>19,} {frozen:>16,}")
    total_t = sum(r[2] for r in rows)
    total_f = sum(r[3] for r in rows)
    lines.append(f"{'total':<22} {'':>16} {total_t:>19,} {total_f:>16,}")
    return "\n".join(lines)


class Stage:
    """One step of a staged-unfreezing schedule (see `parse_stages`).

    Args:
        epoch: int. The first epoch (0-based) this stage trains.
        until: int or None. Freeze `backbone.layers[:until]` (`model.freeze.until`).
        patterns: tuple of str. Also freeze layers matching these regular expressions.
        freeze_all: bool. Freeze the whole backbone (train the head only).
        lr_factor: float. Learning rate of this stage as a multiple of
            `train.learning_rate`.
        text: str. The stage as written in the config, for messages.
    """

    def __init__(self, epoch, until=None, patterns=(), freeze_all=False, lr_factor=1.0, text=""):
        self.epoch = epoch
        self.until = until
        self.patterns = tuple(patterns)
        self.freeze_all = freeze_all
        self.lr_factor = lr_factor
        self.text = text

    def __repr__(self):
        return f"Stage({self.text!r})"


def _stage_error(index, text, problem):
    return ConfigError(
        f"train.stages[{index}] {problem}. Received: train.stages[{index}]={text!r}. "
        "A stage is 'EPOCH:ITEM,ITEM,...' with items 'backbone' (head only), 'all' (train "
        "everything), 'until=N' (freeze backbone.layers[:N]), 'freeze=REGEX' (freeze "
        "matching layers; repeatable) and 'lr=FACTOR' (times train.learning_rate), e.g. "
        "('0:backbone', '2:until=-4,lr=0.1', '4:all,lr=0.01')"
    )


def parse_stages(texts):
    """Parses `train.stages` strings into `Stage`s, checking every value.

    Each string is `"EPOCH:ITEM,ITEM,..."`: from 0-based epoch `EPOCH` on,
    train with this freezing until the next stage starts. Items:
    `backbone` freezes the whole backbone (head only); `all` freezes
    nothing; `until=N` freezes `backbone.layers[:N]` (negative counts from
    the end, as `model.freeze.until`); `freeze=REGEX` freezes layers whose
    name matches (as `model.freeze.patterns`; repeat the item for several);
    `lr=FACTOR` sets the learning rate to FACTOR x `train.learning_rate`
    (default 1). The first stage starts at epoch 0; epochs increase.

    Args:
        texts: sequence of str, e.g. `("0:backbone", "2:until=-4,lr=0.1")`.

    Returns:
        List of `Stage`, in epoch order.

    Raises:
        ConfigError: naming the stage, the value and the accepted format.

    Example:

    >>> stages = parse_stages(("0:backbone", "2:until=-4,lr=0.1", "4:all,lr=0.01"))
    >>> [(s.epoch, s.freeze_all, s.until, s.lr_factor) for s in stages]
    [(0, True, None, 1.0), (2, False, -4, 0.1), (4, False, None, 0.01)]
    """
    if isinstance(texts, str):
        raise ConfigError(
            f"train.stages must be a tuple of strings, not one string. Received: "
            f"train.stages={texts!r}; write e.g. ('0:backbone', '2:all,lr=0.1')"
        )
    stages = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or ":" not in text:
            raise _stage_error(i, text, "must be a string 'EPOCH:ITEMS'")
        epoch_text, _, items_text = text.partition(":")
        try:
            epoch = int(epoch_text.strip())
        except ValueError:
            raise _stage_error(i, text, f"starts with {epoch_text!r}, not an epoch number") from None
        if epoch < 0:
            raise _stage_error(i, text, "starts at a negative epoch")
        stage = Stage(epoch, text=text)
        patterns = []
        for item in (x.strip() for x in items_text.split(",")):
            key, has_value, value = item.partition("=")
            key = key.strip()
            if item == "backbone":
                stage.freeze_all = True
            elif item == "all":
                stage.freeze_all, stage.until = False, None
            elif key == "until" and has_value:
                try:
                    stage.until = int(value)
                except ValueError:
                    raise _stage_error(i, text, f"has until={value!r}, not an integer") from None
            elif key == "freeze" and has_value:
                try:
                    re.compile(value)
                except re.error as e:
                    raise _stage_error(i, text, f"has an invalid regular expression ({e})") from None
                patterns.append(value)
            elif key == "lr" and has_value:
                try:
                    stage.lr_factor = float(value)
                except ValueError:
                    raise _stage_error(i, text, f"has lr={value!r}, not a number") from None
                if not stage.lr_factor > 0:
                    raise _stage_error(i, text, f"has lr={value!r}; it must be > 0")
            else:
                raise _stage_error(i, text, f"has an unknown item {item!r}")
        stage.patterns = tuple(patterns)
        if not stages and epoch != 0:
            raise _stage_error(i, text, "is the first stage and must start at epoch 0")
        if stages and epoch <= stages[-1].epoch:
            raise _stage_error(
                i, text, f"starts at epoch {epoch}, not after the previous stage's {stages[-1].epoch}"
            )
        stages.append(stage)
    return stages
