"""The experiment config: schema, defaults and validation.

A config is an `ml_collections.ConfigDict` in four parts, read top to bottom the
way data flows: `data` -> `model` -> `train` -> `runtime`/`export`. Config files
in `configs/` start from `get_default_config()` and change only what differs, so
every default is visible here, in one place.

The returned config is locked: assigning a key that does not exist (a typo such
as `config.train.epoch = 3`) raises at once, and so does
`--config.train.epoch=3` on the command line.
"""

import json
import os

from ml_collections import config_dict

from sft_keras.errors import ConfigError

TASKS = ("classification", "binary", "regression")
IMAGE_SOURCES = ("image_folder", "csv", "digits")
TEXT_SOURCES = ("text_file", "text_folder", "tfds", "chatterbot")
POOLINGS = ("avg", "max", "flatten", "cls")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


def get_default_config():
    """Returns the default config; every key sft_keras reads is here.

    Example:

    >>> config = get_default_config()
    >>> config.model.backbone
    'mobilenet_v2'
    >>> config.train.epochs = 3
    >>> config.train.epoch = 3
    Traceback (most recent call last):
    ...
    AttributeError: ...
    """
    c = config_dict.ConfigDict()
    c.seed = 42  # Python, NumPy and TF seeds, and the train/validation split.
    # What is learned: 'classification' (softmax over classes), 'binary'
    # (one sigmoid unit), 'regression' (one linear unit, MSE loss).
    c.task = "classification"

    # === Data ===
    c.data = config_dict.ConfigDict()
    # Images: 'image_folder' (one subfolder per class), 'csv' (a manifest with a
    # path and a label column), 'digits' (scikit-learn's 8x8 digits, offline demo).
    # Text: 'text_file' (CSV/TSV/JSONL, by extension), 'text_folder' (one
    # subfolder of .txt files per class), 'tfds' (a TFDS dataset by name),
    # 'chatterbot' (chatterbot-corpus topic classification, offline demo).
    c.data.source = "digits"
    c.data.path = ""  # The image folder, CSV manifest, text file or text folder.
    # Optional separate validation folder/CSV; when empty, `validation_split` of
    # the training examples is held out (stratified, deterministic by `seed`).
    c.data.validation_path = ""
    c.data.validation_split = 0.2
    c.data.image_size = (32, 32)  # (height, width) the images are resized to.
    c.data.path_column = "path"  # CSV only: column with image paths.
    c.data.label_column = "label"  # CSV only: column with labels.
    # Files without an image extension inside an image folder are an error,
    # unless this is True (then they are skipped, with a warning).
    c.data.skip_unknown_files = False
    # Decode every image once before training, so a corrupt file is reported by
    # name before the first step instead of failing mid-epoch.
    c.data.validate_images = True
    # Text: the text column(s) — one, or two for sentence pairs (NLI, MRPC) —
    # and, when the validation file names them differently, its own columns.
    c.data.text_columns = ("text",)
    c.data.validation_text_columns = ()
    c.data.sequence_length = 128  # Tokens per example, [CLS] and [SEP] included.
    # Train on a seeded, stratified subset of N training examples (0: all).
    c.data.max_train_examples = 0
    # TFDS ('tfds' source): dataset name, the data_dir holding prepared data,
    # splits, and the feature keys. Never downloads unless tfds_download=True.
    c.data.tfds_name = ""
    c.data.tfds_data_dir = ""
    c.data.tfds_train_split = "train"
    c.data.tfds_validation_split = ""  # Empty: hold out validation_split of train.
    c.data.tfds_download = False
    # 'chatterbot' source: the topics (YAML file names) to classify.
    c.data.topics = ("ai", "coding", "emotion", "literature", "psychology", "trivia")
    c.data.cache = True  # Cache decoded images in memory after the first epoch.
    c.data.shuffle_buffer = 2048
    c.data.augment = config_dict.ConfigDict()
    c.data.augment.flip = "none"  # One of FLIP_MODES.
    c.data.augment.rotation = 0.0  # Max rotation, as a fraction of a full turn.
    c.data.augment.zoom = 0.0  # Max zoom in/out, as a fraction of the size.

    # === Model ===
    c.model = config_dict.ConfigDict()
    c.model.backbone = "mobilenet_v2"  # A name from sft_keras.backbones.
    # Images: None (random init), 'imagenet' (downloads; needs network), or the
    # path of a local weights file (.weights.h5 saved by Keras, or a
    # keras.applications .h5).
    c.model.weights = config_dict.placeholder(str)
    # Text ('bert' backbone): a keras-hub preset name (downloads; needs network),
    # a local keras-hub preset folder, or a local Hugging Face checkpoint folder
    # (config.json + model.safetensors + vocab.txt).
    c.model.preset = ""
    c.model.freeze = config_dict.ConfigDict()
    # Freeze backbone.layers[:until]; negative values count from the end
    # (until=-4 leaves the last 4 layers trainable). None freezes nothing by index.
    c.model.freeze.until = config_dict.placeholder(int)
    # Freeze layers whose name matches any of these regular expressions.
    c.model.freeze.patterns = ()
    c.model.freeze.backbone = False  # Freeze the whole backbone (train the head only).
    # Keep every BatchNorm layer in inference mode with frozen statistics, as is
    # right when fine-tuning pretrained weights. Set False to train from scratch.
    c.model.freeze.batchnorm = True
    c.model.head = config_dict.ConfigDict()
    # 'avg' (mean over positions, or over non-padding tokens for text), 'max',
    # 'flatten' (images), 'cls' (text: the encoder's pooled [CLS] output).
    c.model.head.pooling = "avg"
    c.model.head.hidden_units = ()  # e.g. (1024,) for Flatten -> Dense(1024) -> out.
    c.model.head.activation = "relu"
    c.model.head.dropout = 0.0  # Dropout before each hidden and the output Dense.

    # === Training ===
    c.train = config_dict.ConfigDict()
    c.train.epochs = 5
    c.train.batch_size = 32  # Global batch size, split across replicas.
    c.train.optimizer = "adam"  # 'adam', 'adamw' or 'sgd'.
    c.train.learning_rate = 1e-3
    c.train.weight_decay = 0.0  # Used by 'adamw' (decoupled) and 'sgd'.
    c.train.momentum = 0.9  # Used by 'sgd'.
    # Stop when `monitor` has not improved for this many epochs and restore the
    # best weights; 0 disables early stopping.
    c.train.early_stopping_patience = 3
    c.train.monitor = "val_loss"

    # === Runtime ===
    c.runtime = config_dict.ConfigDict()
    c.runtime.strategy = "default"  # 'default', 'one_device' or 'mirrored'.

    # === Export ===
    c.export = config_dict.ConfigDict()
    c.export.enabled = True  # Write a SavedModel to <workdir>/export/<version>/.

    c.lock()
    return c


def config_to_json(config):
    """Returns the config as an indented JSON string (tuples become lists)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def validate_config(config, check_files=True):
    """Checks every key and value of `config`; raises `ConfigError` on the first problem.

    The error names the key, the value received and what would be accepted.

    Args:
        config: `ConfigDict` or dict. A full config, e.g. from a file in `configs/`.
        check_files: bool, default True. Check that `data.path`,
            `data.validation_path` and `model.weights` exist. False when
            rebuilding a finished run, whose data may have moved
            (`sft_keras.workdir.load_run`).

    Returns:
        A locked `ConfigDict` with every key of `get_default_config()`.

    Example:

    >>> config = get_default_config()
    >>> config.train.batch_size = 0
    >>> validate_config(config)
    Traceback (most recent call last):
    ...
    sft_keras.errors.ConfigError: train.batch_size must be a positive integer. Received: train.batch_size=0
    """
    if isinstance(config, dict):
        config = config_dict.ConfigDict(config)
    default = get_default_config()
    _check_known_keys(config, default, prefix="")
    # Fill in keys the config leaves out.
    merged = get_default_config()
    _merge_values(merged, config.to_dict(), prefix="")
    _check_values(merged, check_files)
    return merged


def _merge_values(target, values, prefix):
    # Like `target.update(values)`, but a value of the wrong type is a ConfigError
    # naming the full key (ml_collections raises a TypeError naming the leaf only).
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(target[key], config_dict.ConfigDict):
            _merge_values(target[key], value, prefix=f"{path}.")
            continue
        try:
            target[key] = value
        except TypeError:
            _fail(path, value, f"must be of type {target.get_type(key).__name__}")


def _check_known_keys(config, default, prefix):
    for key in config.keys():
        path = f"{prefix}{key}"
        if key not in default:
            known = ", ".join(sorted(f"{prefix}{k}" for k in default.keys()))
            raise ConfigError(f"Unknown config key {path!r}. Known keys here: {known}.")
        value, expected = config[key], default[key]
        if isinstance(expected, config_dict.ConfigDict):
            if not isinstance(value, (config_dict.ConfigDict, dict)):
                raise ConfigError(
                    f"Config key {path!r} must be a group of keys. Received: {path}={value!r}"
                )
            _check_known_keys(config_dict.ConfigDict(value), expected, prefix=f"{path}.")


def _fail(key, value, requirement):
    raise ConfigError(f"{key} {requirement}. Received: {key}={value!r}")


def _one_of(key, value, choices):
    if value not in choices:
        _fail(key, value, "must be one of " + ", ".join(repr(c) for c in choices))


def _positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        _fail(key, value, "must be a positive integer")


def _check_values(c, check_files=True):
    from sft_keras import backbones, distribute, optimizers  # Registries.

    _one_of("task", c.task, TASKS)
    if isinstance(c.seed, bool) or not isinstance(c.seed, int):
        _fail("seed", c.seed, "must be an integer")

    m = c.model
    spec = backbones.get_backbone_spec(m.backbone)  # Raises, listing the known names.
    d = c.data
    sources = IMAGE_SOURCES if spec.modality == "image" else TEXT_SOURCES
    if d.source not in sources:
        _fail(
            "data.source",
            d.source,
            f"must be one of {', '.join(repr(s) for s in sources)} for the {spec.modality} "
            f"backbone model.backbone={m.backbone!r}",
        )
    if d.source in ("image_folder", "csv", "text_file", "text_folder"):
        if not d.path:
            _fail("data.path", d.path, f"must be set when data.source={d.source!r}")
        if check_files and not os.path.exists(d.path):
            _fail("data.path", d.path, "does not exist")
        if (check_files and d.source in ("image_folder", "text_folder")
                and not os.path.isdir(d.path)):
            _fail("data.path", d.path, "must be a folder with one subfolder per class")
        if check_files and d.source == "csv" and not os.path.isfile(d.path):
            _fail("data.path", d.path, "must be a CSV file")
        if check_files and d.source == "text_file" and not os.path.isfile(d.path):
            _fail("data.path", d.path, "must be a CSV, TSV or JSONL file")
    if check_files and d.validation_path and not os.path.exists(d.validation_path):
        _fail("data.validation_path", d.validation_path, "does not exist")
    if not d.validation_path and not (d.source == "tfds" and d.tfds_validation_split):
        if not 0.0 < d.validation_split < 1.0:
            _fail("data.validation_split", d.validation_split, "must be in (0, 1)")
    _positive_int("data.shuffle_buffer", d.shuffle_buffer)
    if c.task == "regression" and d.source in ("image_folder", "text_folder", "chatterbot"):
        _fail("data.source", d.source, "cannot hold numeric labels for task='regression'")

    if spec.modality == "image":
        size = tuple(d.image_size) if isinstance(d.image_size, (tuple, list)) else None
        if (
            size is None
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 32 for s in size)
        ):
            _fail("data.image_size", d.image_size, "must be (height, width), each an integer >= 32")
        _one_of("data.augment.flip", d.augment.flip, FLIP_MODES)
        for key in ("rotation", "zoom"):
            value = d.augment[key]
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                _fail(f"data.augment.{key}", value, "must be a number in [0, 1)")
        if m.weights not in (None, "imagenet"):
            if not isinstance(m.weights, str) or (check_files and not os.path.isfile(m.weights)):
                _fail(
                    "model.weights",
                    m.weights,
                    "must be None, 'imagenet', or the path of an existing weights file",
                )
            if not m.weights.endswith(".h5"):
                _fail("model.weights", m.weights, "must be a Keras weights file ending in .h5")
        _one_of("model.head.pooling", m.head.pooling, ("avg", "max", "flatten"))
    else:
        columns = d.text_columns
        if isinstance(columns, str) or len(columns) not in (1, 2) or not all(
            isinstance(col, str) and col for col in columns
        ):
            _fail("data.text_columns", columns, "must be a tuple of one or two column names")
        if d.validation_text_columns and len(d.validation_text_columns) != len(columns):
            _fail(
                "data.validation_text_columns",
                d.validation_text_columns,
                f"must name as many columns as data.text_columns={tuple(columns)}",
            )
        if isinstance(d.sequence_length, bool) or not isinstance(d.sequence_length, int) or (
            d.sequence_length < 4
        ):
            _fail("data.sequence_length", d.sequence_length, "must be an integer >= 4")
        if isinstance(d.max_train_examples, bool) or not isinstance(d.max_train_examples, int) or (
            d.max_train_examples < 0
        ):
            _fail("data.max_train_examples", d.max_train_examples, "must be an integer >= 0")
        if d.source == "tfds" and not d.tfds_name:
            _fail("data.tfds_name", d.tfds_name, "must name a TFDS dataset when data.source='tfds'")
        if not m.preset:
            _fail("model.preset", m.preset, "must name a keras-hub preset or a local folder")
        if m.weights is not None:
            _fail("model.weights", m.weights, "is for image backbones; use model.preset for text")
        _one_of("model.head.pooling", m.head.pooling, ("avg", "max", "cls"))

    if m.freeze.until is not None and (
        isinstance(m.freeze.until, bool) or not isinstance(m.freeze.until, int)
    ):
        _fail("model.freeze.until", m.freeze.until, "must be an integer or None")
    if isinstance(m.freeze.patterns, str) or not all(
        isinstance(p, str) for p in m.freeze.patterns
    ):
        _fail("model.freeze.patterns", m.freeze.patterns, "must be a tuple of regular expressions")
    for units in m.head.hidden_units:
        _positive_int("model.head.hidden_units[i]", units)
    if not isinstance(m.head.dropout, (int, float)) or not 0.0 <= m.head.dropout < 1.0:
        _fail("model.head.dropout", m.head.dropout, "must be a number in [0, 1)")

    t = c.train
    _positive_int("train.epochs", t.epochs)
    _positive_int("train.batch_size", t.batch_size)
    optimizers.OPTIMIZERS.get(t.optimizer)
    if not isinstance(t.learning_rate, (int, float)) or t.learning_rate <= 0:
        _fail("train.learning_rate", t.learning_rate, "must be a positive number")
    if not isinstance(t.weight_decay, (int, float)) or t.weight_decay < 0:
        _fail("train.weight_decay", t.weight_decay, "must be a number >= 0")
    if isinstance(t.early_stopping_patience, bool) or not isinstance(
        t.early_stopping_patience, int
    ) or t.early_stopping_patience < 0:
        _fail("train.early_stopping_patience", t.early_stopping_patience, "must be an integer >= 0")
    from sft_keras.tasks import get_task

    _one_of("train.monitor", t.monitor, get_task(c.task).monitors)

    distribute.STRATEGIES.get(c.runtime.strategy)
