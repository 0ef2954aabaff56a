"""Text encoders from keras-hub (BERT family) and their tokenizers.

`model.preset` picks the weights, the same three ways keras-hub does:

- a keras-hub preset name such as `"bert_base_en_uncased"` (downloaded on first
  use: needs network; offline it fails within seconds and says what to do),
- a local keras-hub preset folder (`config.json`, `model.weights.h5`,
  `tokenizer.json`, `assets/`), e.g. written by `backbone.save_to_preset()`,
- a local Hugging Face checkpoint folder (`config.json`, `model.safetensors`,
  `vocab.txt`), which keras-hub converts on load.

Tokenization runs in the tf.data pipeline (batched, graph mode), not in the
model, so the Keras model itself holds no tensorflow-text ops and its weights
save and reload as a plain `.weights.h5` file.
"""

import json
import os
import urllib.request

import keras
import keras_hub

from sft_keras.backbones.registry import BACKBONES, BackboneSpec
from sft_keras.errors import ConfigError, WeightsError

# Where keras-hub fetches presets from, by handle scheme; probed before a
# download so that an offline machine fails in seconds instead of retrying.
_HUB_URLS = {"kaggle": "https://www.kaggle.com", "hf": "https://huggingface.co"}
_PROBE_TIMEOUT_S = 10


def _is_cached(preset):
    """True when kagglehub already holds a download of `preset`."""
    cache = os.environ.get("KAGGLEHUB_CACHE", os.path.expanduser("~/.cache/kagglehub"))
    name = preset.rstrip("/").split("/")[-1]
    for _, dirnames, _ in os.walk(os.path.join(cache, "models")):
        if name in dirnames:
            return True
    return False


def _check_can_download(preset):
    scheme = preset.split("://")[0] if "://" in preset else "kaggle"
    url = _HUB_URLS.get(scheme)
    if url is None or _is_cached(preset):
        return
    try:
        urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise WeightsError(
            f"Cannot download keras-hub preset {preset!r} (model.preset): {url} is "
            f"unreachable ({e}). This machine looks offline. Pass a local folder "
            f"instead: a keras-hub preset saved with `save_to_preset()` or a Hugging "
            f"Face checkpoint (config.json, model.safetensors, vocab.txt), e.g. "
            f"--config.model.preset=/path/to/all-MiniLM-L6-v2"
        ) from None


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
                f"Unknown keras-hub preset {preset!r} for model.preset. Known presets: "
                f"{known}; or pass a local folder."
            )
    _check_can_download(preset)
    return preset


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


def load_bert_tokenizer(preset):
    """Returns the keras-hub `BertTokenizer` of a preset or checkpoint folder."""
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    options = _hf_tokenizer_options(preset) if os.path.isdir(preset) else None
    if options is not None:
        tokenizer = keras_hub.models.BertTokenizer(vocabulary=tokenizer.get_vocabulary(), **options)
    return tokenizer


def build_text_backbone(name, preset):
    """Builds the keras-hub encoder `name` with the weights of `preset`.

    Call it inside `strategy.scope()`; load the tokenizer with
    `load_text_tokenizer()`.

    Args:
        name: str. A registered text backbone (`"bert"`).
        preset: str. A keras-hub preset name, or a local keras-hub preset or
            Hugging Face checkpoint folder.

    Returns:
        A `keras_hub.models.BertBackbone`.

    Raises:
        WeightsError: the preset cannot be loaded (naming it and why).

    Example:

    >>> import tempfile
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> preset = save_tiny_bert_preset(tempfile.mkdtemp(), vocab)
    >>> backbone = build_text_backbone("bert", preset)
    >>> backbone.num_layers, backbone.hidden_dim, backbone.max_sequence_length
    (2, 16, 64)
    """
    preset = resolve_preset(preset)
    try:
        return keras_hub.models.BertBackbone.from_preset(preset)
    except Exception as e:
        raise WeightsError(
            f"Could not load the {name!r} backbone from model.preset={preset!r}: {e}"
        ) from e


def load_text_tokenizer(name, preset):
    """Returns the tokenizer of `preset` for the text backbone `name`.

    For a Hugging Face checkpoint folder, lower-casing and accent stripping
    follow its `tokenizer_config.json`, matching the reference tokenizer.

    Args:
        name: str. A registered text backbone (`"bert"`); named in errors.
        preset: str. As in `build_text_backbone`: a keras-hub preset name, or
            a local keras-hub preset or Hugging Face checkpoint folder.

    Returns:
        A `keras_hub.models.BertTokenizer` (WordPiece).

    Raises:
        WeightsError: the preset's tokenizer cannot be loaded.

    Example:

    >>> import tempfile
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> tokenizer = load_text_tokenizer("bert", save_tiny_bert_preset(tempfile.mkdtemp(), vocab))
    >>> tokenizer.tokenize("Good bad movie").tolist()  # The tiny preset lower-cases.
    [5, 6, 1]
    """
    preset = resolve_preset(preset)
    try:
        return load_bert_tokenizer(preset)
    except Exception as e:
        raise WeightsError(
            f"Could not load the {name!r} tokenizer from model.preset={preset!r}: {e}"
        ) from e


def make_preprocessor(tokenizer, sequence_length, backbone=None):
    """Returns a `BertTextClassifierPreprocessor` padding/truncating to `sequence_length`.

    The preprocessor maps a batch of strings (or a tuple of two batches, for
    sentence pairs) to the dict the text model takes: `token_ids` (`[CLS]`
    text `[SEP]`, then padding), `segment_ids` and `padding_mask`, each
    `[batch, sequence_length]`. Longer texts are truncated.

    Args:
        tokenizer: a keras-hub `BertTokenizer` (`load_text_tokenizer`).
        sequence_length: int. Tokens per example, `[CLS]` and `[SEP]`
            included (`data.sequence_length`).
        backbone: the keras-hub backbone, or None (default). When given,
            `sequence_length` is checked against its position embeddings.

    Returns:
        A `keras_hub.models.BertTextClassifierPreprocessor`.

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
    return keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=tokenizer, sequence_length=sequence_length
    )


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


BACKBONES.register(
    "bert",
    BackboneSpec(name="bert", modality="text", constructor=build_text_backbone, preprocess_input=None),
)


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
