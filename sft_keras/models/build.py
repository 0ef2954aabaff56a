"""Build the fine-tuning model: inputs -> preprocessing -> backbone -> head."""

import keras

from sft_keras.backbones import hub_images
from sft_keras.models import freezing
from sft_keras.backbones import (
    FirstTokenPooling,
    ImagePreprocessing,
    MaskedAveragePooling,
    MaskedMaxPooling,
    build_image_backbone,
)
from sft_keras.errors import ConfigError
from sft_keras.models.heads import add_head
from sft_keras.tasks import get_task


def apply_freeze_config(backbone, freeze_config):
    """Applies the `model.freeze` config to `backbone` (see `freezing.set_trainable`)."""
    return freezing.set_trainable(
        backbone,
        until=freeze_config.until,
        patterns=freeze_config.patterns,
        freeze_all=freeze_config.backbone,
        freeze_batchnorm=freeze_config.batchnorm,
    )


def find_backbone(model):
    """Returns the backbone of a model built by `build_image_model` or `build_text_model`.

    The backbone is found by type, not by position or name: it is the one
    top-level layer of `model` that is itself a `keras.Model` (a
    `keras.applications` model, `small_cnn`, or a keras-hub `Backbone`,
    which is a `keras.Model` too). Preprocessing, pooling and head layers
    are plain layers.

    Args:
        model: a `keras.Model`.

    Returns:
        The nested backbone `keras.Model`.

    Raises:
        ConfigError: `model` holds no nested model, or more than one; the
            message names `model` and what it holds.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.model.backbone = "small_cnn"
    >>> find_backbone(build_image_model(config, num_classes=3)).name
    'small_cnn'
    """
    nested = [layer for layer in getattr(model, "layers", []) if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        found = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in nested)
        raise ConfigError(
            f"Expected exactly one nested backbone model (a keras.Model layer) in model "
            f"{getattr(model, 'name', model)!r}, as build_image_model/build_text_model make; "
            f"found {len(nested)}{': ' + found if found else ''}."
        )
    return nested[0]


def freeze_unused_pooler(backbone, pooling):
    """Freezes a text encoder's [CLS] pooler when `pooling` does not use it.

    keras-hub's BERT computes `pooled_output` with a Dense layer named
    `pooled_dense`; with `pooling` `"avg"` or `"max"` the head reads
    `sequence_output` instead, so that layer is not on the path to the
    output and gets no gradient: it is set non-trainable, as there is
    nothing to train. Call it after every change of the backbone's
    trainable layers (freezing, LoRA, a training stage), which may have
    made it trainable again.

    Args:
        backbone: a keras-hub encoder (a backbone without `pooled_dense` is
            left as is).
        pooling: str. `model.head.pooling`: `"cls"`, `"avg"` or `"max"`.

    Returns:
        bool: whether a pooler was frozen.
    """
    if pooling == "cls" or "pooled_dense" not in [layer.name for layer in backbone.layers]:
        return False
    backbone.get_layer("pooled_dense").trainable = False
    return True


def build_augmentation(augment_config):
    """Returns the augmentation layers the config asks for (active in training only)."""
    layers = []
    if augment_config.flip != "none":
        layers.append(keras.layers.RandomFlip(augment_config.flip, name="random_flip"))
    if augment_config.rotation:
        layers.append(keras.layers.RandomRotation(augment_config.rotation, name="random_rotation"))
    if augment_config.zoom:
        layers.append(keras.layers.RandomZoom(augment_config.zoom, name="random_zoom"))
    return layers


def _image_backbone_and_preprocessing(config, pretrained):
    """The backbone and the layer that turns [0, 255] pixels into its input."""
    height, width = config.data.image_size
    if config.model.backbone == hub_images.NAME:
        backbone = hub_images.build_hub_image_backbone(
            config.model.preset, pretrained and config.model.preset_weights)
        scale, offset = hub_images.preset_scaling(config.model.preset)
        return backbone, hub_images.ScaleOffset(scale, offset, name="preprocessing")
    backbone = build_image_backbone(
        config.model.backbone, weights=config.model.weights, input_shape=(height, width, 3)
    )
    return backbone, ImagePreprocessing(config.model.backbone, name="preprocessing")


def build_image_model(config, num_classes, pretrained=True):
    """Builds the image model the config describes, with freezing applied.

    The model takes float pixels in [0, 255], shape `[batch, height, width, 3]`
    (what `tf.io.decode_image` gives, resized), so the backbone's own
    preprocessing is part of the model and of every export.

    Args:
        config: a validated config (see `sft_keras.config`).
        num_classes: int. Number of classes (1 for regression).
        pretrained: bool. For `model.backbone="hub_image"`: load the preset's
            weights (False: same architecture, random weights, for a
            checkpoint to fill). `keras.applications` backbones follow
            `model.weights`.

    Returns:
        An uncompiled functional `keras.Model`; its backbone is the nested
        model named like the backbone (`model.get_layer(config.model.backbone)`).

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.model.backbone = "small_cnn"
    >>> model = build_image_model(config, num_classes=10)
    >>> model.output.shape
    (None, 10)
    """
    height, width = config.data.image_size
    backbone, preprocessing = _image_backbone_and_preprocessing(config, pretrained)
    apply_freeze_config(backbone, config.model.freeze)

    inputs = keras.Input((height, width, 3), name="image")
    x = inputs
    for layer in build_augmentation(config.data.augment):
        x = layer(x)
    x = preprocessing(x)
    x = backbone(x)
    head = config.model.head
    outputs = add_head(
        x,
        get_task(config.task),
        num_classes,
        pooling=head.pooling,
        hidden_units=head.hidden_units,
        activation=head.activation,
        dropout=head.dropout,
        l2=head.l2,
    )
    return keras.Model(inputs, outputs, name=f"{config.model.backbone}_{config.task}")


def build_text_model(config, backbone, num_classes):
    """Builds a text model around a keras-hub encoder, with freezing applied.

    The model takes the backbone's own inputs, as the pipeline produces
    them (int32 `[batch, sequence_length]`: `token_ids`, `padding_mask`, and
    `segment_ids` for BERT and ELECTRA), pools the encoder output
    (`model.head.pooling`: `"avg"` is the mean over non-padding tokens,
    `"max"` their maximum, `"cls"` the encoder's pooled [CLS] output, or the
    first token's vector for encoders without a pooler: RoBERTa, XLM-R,
    DeBERTaV3, DistilBERT) and adds the Dense head.

    Args:
        config: a validated config.
        backbone: a keras-hub encoder such as `keras_hub.models.BertBackbone`
            or `RobertaBackbone`. Its `layers` are indexed for freezing as
            Keras lists them: inputs, embeddings, `transformer_layer_0..N-1`
            (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT) or
            `disentangled_attention_encoder_layer_0..N-1` (DeBERTaV3), then
            BERT's and ELECTRA's `pooled_dense`.
        num_classes: int. Number of classes (1 for regression).

    With `model.lora_rank > 0` the encoder is frozen whole and LoRA updates
    are added to the layers named by `model.lora_targets` (see
    `sft_keras.models.lora.enable_lora`); `model.freeze` is not used then.

    Returns:
        An uncompiled functional `keras.Model`.

    Example:

    >>> import tempfile
    >>> from sft_keras.backbones import build_text_backbone, save_tiny_bert_preset
    >>> from sft_keras.config import get_default_config
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> config = get_default_config()
    >>> config.model.backbone = "bert"
    >>> config.model.preset = save_tiny_bert_preset(tempfile.mkdtemp(), vocab)
    >>> config.data.sequence_length = 8
    >>> backbone = build_text_backbone("bert", config.model.preset)
    >>> model = build_text_model(config, backbone, num_classes=3)
    >>> sorted(model.input), model.output.shape
    (['padding_mask', 'segment_ids', 'token_ids'], (None, 3))
    """
    if config.model.lora_rank:
        from sft_keras.models import lora

        lora.enable_lora(backbone, config.model.lora_rank, config.model.lora_alpha,
                         tuple(config.model.lora_targets))
    else:
        apply_freeze_config(backbone, config.model.freeze)
    head = config.model.head
    freeze_unused_pooler(backbone, head.pooling)
    # Any length up to data.sequence_length: training batches are cut to their
    # length bucket (sft_keras.data.pipeline.length_sorted_batches).
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in backbone.input}
    encoded = backbone(inputs)
    # BERT and ELECTRA return {sequence_output, pooled_output}; the others the sequence alone.
    sequence = encoded["sequence_output"] if isinstance(encoded, dict) else encoded
    if head.pooling == "cls":
        x = (encoded["pooled_output"] if isinstance(encoded, dict)
             else FirstTokenPooling(name="cls_pool")(sequence))
    elif head.pooling == "max":
        x = MaskedMaxPooling(name="max_pool")(sequence, inputs["padding_mask"])
    else:
        x = MaskedAveragePooling(name="avg_pool")(sequence, inputs["padding_mask"])
    outputs = add_head(
        x,
        get_task(config.task),
        num_classes,
        hidden_units=head.hidden_units,
        activation=head.activation,
        dropout=head.dropout,
        l2=head.l2,
    )
    return keras.Model(inputs, outputs, name=f"{config.model.backbone}_{config.task}")

