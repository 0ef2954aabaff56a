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
    # (one sigmoid unit), 'regression' (one linear unit, MSE loss), 'multilabel'
    # (one sigmoid unit per label; an example has any number of labels),
    # 'retrieval' (a text dual encoder of (context, response) pairs: a chatbot
    # answering with the best replies of a bank; docs/chatbot.md).
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
    # Train on a seeded subset of N training examples, drawn after the
    # train/validation split (stratified for classification; validation keeps
    # all its examples). Images and text alike; 0: all.
    c.data.max_train_examples = 0
    c.data.image_size = (32, 32)  # (height, width) the images are resized to.
    c.data.path_column = "path"  # CSV only: column with image paths.
    c.data.label_column = "label"  # CSV only: column with labels.
    # task='multilabel': separates the labels in one label cell ("news|sports").
    # In JSON lines the cell may also be a JSON list (["news", "sports"]).
    c.data.label_separator = "|"
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
    # TFDS ('tfds' source): dataset name, the data_dir holding prepared data,
    # splits, and the feature keys. Never downloads unless tfds_download=True.
    c.data.tfds_name = ""
    c.data.tfds_data_dir = ""
    c.data.tfds_train_split = "train"
    c.data.tfds_validation_split = ""  # Empty: hold out validation_split of train.
    c.data.tfds_download = False
    # 'chatterbot' source: the topics (YAML file names) to classify; with
    # task='retrieval', the topics whose conversations give (question, answer)
    # pairs (empty: every topic).
    c.data.topics = ("ai", "coding", "emotion", "literature", "psychology", "trivia")
    # task='retrieval', 'text_file' source: the context and response columns of a
    # CSV/TSV/JSONL table. A JSONL file whose records hold "messages" is read as
    # chat turns instead: each assistant turn is a response, its context the
    # `context_turns` turns before it, joined by a newline.
    c.data.context_column = "context"
    c.data.response_column = "response"
    c.data.context_turns = 1
    c.data.cache = True  # Cache decoded images in memory after the first epoch.
    c.data.shuffle_buffer = 2048  # Examples in the shuffle buffer of the training data.
    # Text training batches are cut to the smallest of these lengths (capped at
    # sequence_length, always one of them) that holds their longest example:
    # short texts stop paying for padding, and the model sees a handful of shapes
    # (what XLA compiles). The padding mask keeps the results the same; validation,
    # evaluation and export keep sequence_length. () pads every batch to
    # sequence_length (off).
    c.data.length_buckets = (16, 32, 64, 128, 256, 512)
    # With length_buckets: each epoch's shuffled examples are sorted by length
    # within windows of this many batches (then the batches are shuffled again),
    # so a batch holds texts of similar length. 1: no sorting.
    c.data.length_sort_window = 32
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
    # Text (backbones 'bert', 'distil_bert', 'electra', 'roberta', 'xlm_roberta',
    # 'deberta_v3'): a keras-hub preset name of that family (downloads; needs
    # network), a local keras-hub preset folder, or a local Hugging Face
    # checkpoint folder (config.json + model.safetensors + tokenizer files).
    # Images ('hub_image' backbone): a keras-hub image preset name or local
    # preset folder.
    c.model.preset = ""
    # 'hub_image' backbones: False builds the preset's architecture with random
    # weights (a from-scratch baseline) instead of loading its pretrained weights.
    c.model.preset_weights = True
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
    # AdaBN: before the first training step, re-estimate every BatchNorm layer's
    # moving mean and variance on the training images (one pass over the
    # training split, no augmentation; a plain average over batches, not an
    # exponential one); training then goes on as freeze.batchnorm says (True:
    # these statistics stay frozen, the usual AdaBN). Not on resuming (the
    # checkpoint holds the statistics). Which setting when, measured: README,
    # "BatchNorm when fine-tuning".
    c.model.freeze.adabn = False
    c.model.head = config_dict.ConfigDict()
    # 'avg' (mean over positions, or over non-padding tokens for text), 'max',
    # 'flatten' (images), 'cls' (text: the encoder's pooled [CLS] output, or the
    # first token's vector for encoders without a pooler, such as RoBERTa).
    c.model.head.pooling = "avg"
    c.model.head.hidden_units = ()  # e.g. (1024,) for Flatten -> Dense(1024) -> out.
    c.model.head.activation = "relu"  # Activation of the hidden Dense layers.
    c.model.head.dropout = 0.0  # Dropout before each hidden and the output Dense.
    c.model.head.l2 = 0.0  # L2 penalty on the head's Dense kernels, added to the loss.
    # LoRA (text backbones): freeze every encoder weight and train rank-`lora_rank`
    # updates (alpha / rank) * A @ B of the layers named by `lora_targets`, plus
    # the head. 0 turns LoRA off. Cannot be combined with model.freeze.{until,
    # patterns,backbone} (LoRA already freezes the whole encoder).
    c.model.lora_rank = 0
    c.model.lora_alpha = config_dict.placeholder(float)  # None: alpha = rank (scale 1).
    # Regular expressions matched in full against layer names; BERT (and every
    # other text family) has query, key, value, attention_output,
    # feedforward_{intermediate,output}_dense; BERT and ELECTRA also pooled_dense.
    # The default is the LoRA paper's: attention query and value.
    c.model.lora_targets = ("query", "value")
    # Text encoders: keep only this many transformer layers (0: all of the
    # preset's). The kept layers are evenly spaced and end at the top one (3 of
    # 6: layers 1, 3, 5), initialised from the preset's weights, or from the
    # teacher's fine-tuned encoder with distill_from.
    c.model.num_layers = 0
    # Knowledge distillation: the workdir of a finished run (the teacher, same
    # labels, task 'classification'). This model (the student) trains on the
    # teacher's softened probabilities as well as the labels; see
    # train.distill_temperature and train.distill_alpha. '' : off.
    c.model.distill_from = ""

    # === Training ===
    c.train = config_dict.ConfigDict()
    c.train.epochs = 5  # Epochs in the whole run, all stages included.
    c.train.batch_size = 32  # Global batch size, split across replicas.
    # The optimizer recipe. 'auto' / None: the backbone's own default, chosen when the
    # run starts, printed ("Recipe: ...") and written to config.json
    # (sft_keras.training.optimizers.resolve_recipe; docs/training.md). Text encoders:
    # AdamW, weight decay 0.01, linear decay after a 10% warmup, at 1e-4 up to hidden
    # size 512 (MiniLM), 5e-5 up to 768 (base), 2e-5 above (1e-3 with
    # freeze.backbone, 5e-4 with LoRA). Image backbones: Adam, constant, no warmup,
    # 1e-4 when fine-tuning pretrained weights, 1e-3 from scratch or with
    # freeze.backbone. Any key set here wins over the recipe.
    c.train.optimizer = "auto"  # 'auto', 'adam', 'adamw' or 'sgd'.
    # Peak learning rate (after warmup, before decay); None: the recipe's.
    c.train.learning_rate = config_dict.placeholder(float)
    # Used by 'adamw' (decoupled) and 'sgd'; None: the recipe's (0.01 for adamw, else 0).
    c.train.weight_decay = config_dict.placeholder(float)
    c.train.momentum = 0.9  # Used by 'sgd'.
    # Learning-rate schedule over the whole run: 'constant', 'cosine' or 'linear'
    # (decays to min_lr_ratio * learning_rate at the last step), after a linear
    # warmup of warmup_steps steps, or warmup_fraction of all steps when
    # warmup_steps is 0. 'auto' and None: the recipe's.
    c.train.schedule = "auto"
    c.train.warmup_steps = 0
    c.train.warmup_fraction = config_dict.placeholder(float)
    c.train.min_lr_ratio = 0.0
    # Gradient clipping (0: off): each gradient to this norm, or all of them
    # together to this global norm. At most one of the two.
    c.train.clipnorm = 0.0
    c.train.global_clipnorm = 0.0
    # Update the weights every N batches with the mean gradient (1: every batch):
    # an effective batch of N * batch_size in the memory of one batch.
    c.train.gradient_accumulation_steps = 1
    # Layer-wise learning-rate decay (1.0 or 0: off). A backbone block i of n
    # (0 = the bottom: embeddings, stem) trains at learning_rate * decay**(n - i);
    # the head at learning_rate. Typical: 0.65-0.9 for BERT.
    c.train.layerwise_lr_decay = 1.0
    # Softens the targets of 'classification' and 'binary' losses: the true class
    # gets 1 - s (+ s / classes), the others share s. 0: off.
    c.train.label_smoothing = 0.0
    # Weighs each training example's loss by its class: '' (all 1), 'balanced'
    # (n / (classes * count), from the training labels; logged), weights in
    # class-index order '1,4', or by name 'neg:1,pos:4' (unnamed classes: 1).
    c.train.class_weight = ""
    # task='multilabel': a label is predicted when its probability is >= this
    # (metrics, the report and the export's `predicted` and `labels` outputs).
    c.train.multilabel_threshold = 0.5
    # task='multilabel': per-label thresholds overriding multilabel_threshold,
    # 'label:0.3,other:0.7' (names from the class names; unnamed labels keep
    # multilabel_threshold), or 'tune': after training, each label gets the
    # threshold (0.05-0.95 grid) maximizing its F1 on the validation split,
    # written to report/thresholds.json and used by the report and the export.
    c.train.multilabel_thresholds = ""
    # task='retrieval': the in-batch negatives loss is a softmax over
    # retrieval_scale * cosine(context, response) of every response in the batch;
    # retrieval_symmetric also ranks the batch's contexts for each response.
    c.train.retrieval_scale = 20.0
    c.train.retrieval_symmetric = False
    # task='retrieval': hard negatives per training pair, mined once before training
    # with the encoder as built (before fine-tuning): the best-scoring replies of the
    # training bank that are not a correct reply of the pair's context. They join the
    # batch's responses as candidates of the loss. 0: off (in-batch negatives only).
    c.train.retrieval_hard_negatives = 0
    # With model.distill_from: the softmax temperature T of the teacher's and the
    # student's probabilities in the distillation loss (T^2-scaled KL divergence).
    c.train.distill_temperature = 2.0
    # With model.distill_from: the loss is alpha * (the task's loss on the labels)
    # + (1 - alpha) * (the distillation loss). 0: the teacher alone.
    c.train.distill_alpha = 0.5
    # Stop when `monitor` has not improved for this many epochs and restore the
    # best weights; 0 disables early stopping.
    c.train.early_stopping_patience = 3
    # Logged metric that picks best.weights.h5 (what is evaluated and exported)
    # and drives early stopping: val_loss, val_accuracy, val_auc, val_mae, ...
    c.train.monitor = "val_loss"
    # Stages and resume.
    # Staged unfreezing: ('EPOCH:ITEMS', ...), each from a 0-based epoch on, e.g.
    # ('0:backbone', '2:until=-4,lr=0.1', '4:all,lr=0.01'): head only, then the
    # last 4 backbone layers at 0.1 x learning_rate, then everything at 0.01 x.
    # Items: backbone | all | until=N | freeze=REGEX | lr=FACTOR (see
    # sft_keras.models.freezing.parse_stages). Empty: model.freeze for every epoch.
    # When set, it replaces model.freeze.until/patterns/backbone (batchnorm stays).
    # Rerunning sft-train on the same workdir resumes at the last commit
    # (weights, optimizer state, stage); --overwrite starts afresh.
    c.train.stages = ()
    # Also commit (weights, optimizer state, position in the epoch) every N
    # training steps inside an epoch, so a rerun after a kill resumes at that
    # step; 0: only at the end of each epoch.
    c.train.checkpoint_every_steps = 0

    # === Runtime ===
    c.runtime = config_dict.ConfigDict()
    # 'default' (no distribution), 'one_device', 'mirrored' (all local GPUs),
    # 'multi_worker_mirrored' (workers from TF_CONFIG), 'tpu', or 'auto'
    # (mirrored with >1 GPU, one_device with 1, default otherwise). See
    # sft_keras/training/distribute.py; train.batch_size is the global batch.
    c.runtime.strategy = "default"
    c.runtime.tpu = ""  # strategy='tpu': TPU name or grpc:// address; "" auto-detects.
    # 'auto' (float32 on CPU; mixed_bfloat16 on TPUs and GPUs of compute
    # capability 8.0+ (Ampere, Hopper); mixed_float16 on 7.x (Volta, Turing);
    # float32 below), 'float32', 'mixed_bfloat16' or 'mixed_float16' (Keras adds
    # dynamic loss scaling). The output layer stays float32. The run prints what
    # it chose ("Runtime: ...").
    c.runtime.precision = "auto"
    # XLA for the train/eval steps: 'auto' (on with a GPU, also under
    # tf.distribute, where Keras's own 'auto' turns it off; off on CPU; Keras
    # falls back for a model with a layer XLA cannot compile), 'true' or 'false'.
    c.runtime.jit_compile = "auto"
    # multi_worker_mirrored: a collective (gradient all-reduce) waiting longer
    # than this many seconds for a peer stops the run with a TrainingError
    # saying a worker died or hangs, instead of waiting forever; 0: no limit.
    c.runtime.collective_timeout_s = 600.0
    # Training steps per tf.function call (callbacks see every Nth batch). 0:
    # auto: 8 for a model under 30M parameters on a GPU or TPU (short steps,
    # where launch overhead shows), else 1.
    c.runtime.steps_per_execution = 0

    # === Export ===
    c.export = config_dict.ConfigDict()
    c.export.enabled = True  # Export at the end of training (export.formats; False: none).
    # Image exports: the most pixels (width x height, read from the file's header
    # before decoding) a served image may have; a bigger one (a decompression bomb)
    # is a valid=false row, never decoded. The default is about 7071 x 7071.
    c.export.max_image_pixels = 50_000_000
    # What sft-train writes at the end: 'saved_model' (<workdir>/export/<N>/, raw
    # inputs), 'litert' (<workdir>/export_litert/<N>/*.tflite) and/or 'onnx'
    # (<workdir>/export_onnx/<N>/*.onnx). LiteRT and ONNX graphs take token ids or
    # pixels and are checked against Keras in report/exports.md (docs/serving.md).
    c.export.formats = ("saved_model",)
    # LiteRT files written: 'float32', 'float16', 'dynamic_int8' (int8 weights) and
    # 'int8' (int8 weights and activations, calibrated on training examples).
    c.export.litert_variants = ("float32", "float16", "dynamic_int8", "int8")
    # ONNX files written: 'float32', 'int8' (onnxruntime's dynamic quantization).
    c.export.onnx_variants = ("float32", "int8")
    # Training examples (the first ones, unshuffled) that calibrate the 'int8' LiteRT file.
    c.export.calibration_examples = 200
    # A LiteRT/ONNX file whose validation accuracy is more than this below the Keras
    # float32 model's is flagged in report/exports.md and in the command's output.
    c.export.max_accuracy_drop = 0.01
    # task='retrieval': replies the export returns per message (its bank of known
    # replies is every distinct response of the data; a smaller bank serves all).
    c.export.top_k = 5
    # task='retrieval': also write the bank as a FAISS index (exact inner product,
    # `faiss-cpu`) and its replies in assets.extra/ (bank.faiss, replies.json), for
    # banks too large for the in-graph brute-force search (docs/chatbot.md).
    c.export.faiss_index = False

    # === Tune (sft-tune only; sft-train ignores it) ===
    c.tune = config_dict.ConfigDict()
    # The search space when sft-tune gets no --space flag for a key: strings as the
    # flag takes, 'train.learning_rate=log(1e-5,3e-4)' (log-uniform), 'key=(a..b)'
    # (uniform) or 'key=(v1,v2,...)' (choices); a --space or --grid flag for the same
    # key replaces the entry (docs/tuning.md).
    c.tune.space = ()
    # Validation reports per epoch to the pruner (--pruner): k > 1 also evaluates the
    # validation split after 1/k, 2/k, ... of each epoch's batches, so a search of
    # one-epoch trials can stop the bad ones early (each report costs one evaluation).
    c.tune.reports_per_epoch = 1

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
            (`sft_keras.run.load_run`).

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


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _int_at_least(key, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(key, value, f"must be an integer >= {minimum}")


def _fraction(key, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        _fail(key, value, "must be a number in [0, 1)")


def _non_negative(key, value, note=""):
    if not isinstance(value, (int, float)) or value < 0:
        _fail(key, value, f"must be a number >= 0{note}")


def _check_values(c, check_files=True):
    # One checker per config section, in the order the sections are read; the
    # first problem raises.
    from sft_keras import backbones  # Registries.
    from sft_keras.modalities import MODALITIES

    _check_top_level(c)
    spec = backbones.get_backbone_spec(c.model.backbone)  # Raises, listing the known names.
    # Its class: checks of its own config keys. task='retrieval' has its own.
    modality = MODALITIES.get("retrieval" if c.task == "retrieval" else spec.modality)
    _check_data(c, modality, check_files)
    _check_model(c.model, modality, check_files)
    _check_train(c)
    _check_distillation(c, modality)
    _check_runtime(c.runtime)
    # export.enabled is a bool; `_merge_values` already checked its type.
    _positive_int("export.max_image_pixels", c.export.max_image_pixels)
    _check_export_formats(c.export, c.task)
    _positive_int("export.top_k", c.export.top_k)
    if not all(isinstance(entry, str) and "=" in entry for entry in c.tune.space):
        _fail("tune.space", c.tune.space, "must be a tuple of 'key=distribution' strings, e.g. "
              "('train.learning_rate=log(1e-5,3e-4)',)")
    _positive_int("tune.reports_per_epoch", c.tune.reports_per_epoch)


def _check_export_formats(e, task):
    from sft_keras.errors import ExportError
    from sft_keras.serving.formats import TASKS, parse_formats, parse_variants

    try:
        formats = parse_formats(e.formats, "export.formats")
        for name in ("litert", "onnx"):
            parse_variants(name, e[f"{name}_variants"], f"export.{name}_variants")
    except ExportError as error:
        raise ConfigError(str(error)) from None
    if set(formats) - {"saved_model"} and task not in TASKS:
        _fail("export.formats", tuple(formats), f"may name 'litert' and 'onnx' only for task "
              f"{' or '.join(map(repr, TASKS))} (graphs returning class probabilities); "
              f"task={task!r}")
    _positive_int("export.calibration_examples", e.calibration_examples)
    _fraction("export.max_accuracy_drop", e.max_accuracy_drop)


def _check_top_level(c):
    from sft_keras.tasks import TASKS  # The registry of task types.

    _one_of("task", c.task, tuple(TASKS))
    if isinstance(c.seed, bool) or not isinstance(c.seed, int):
        _fail("seed", c.seed, "must be an integer")


def _check_data(c, modality, check_files):
    d = c.data
    _check_data_source(d, modality, c.model.backbone)
    _check_data_files(d, check_files)
    if not d.validation_path and not (d.source == "tfds" and d.tfds_validation_split):
        if not 0.0 < d.validation_split < 1.0:
            _fail("data.validation_split", d.validation_split, "must be in (0, 1)")
    _positive_int("data.shuffle_buffer", d.shuffle_buffer)
    if c.task == "multilabel" and d.source not in ("text_file", "csv"):
        _fail("data.source", d.source,
              "cannot hold several labels per example for task='multilabel'; use 'text_file' "
              "(text) or 'csv' (images)")
    if not isinstance(d.label_separator, str) or not d.label_separator:
        _fail("data.label_separator", d.label_separator, "must be a non-empty string")
    if c.task == "regression" and d.source in ("image_folder", "text_folder", "chatterbot"):
        _fail("data.source", d.source, "cannot hold numeric labels for task='regression'")
    modality.check_data_config(d)
    _int_at_least("data.max_train_examples", d.max_train_examples, 0)
    if d.source == "tfds" and not d.tfds_name:
        _fail("data.tfds_name", d.tfds_name, "must name a TFDS dataset when data.source='tfds'")


def _check_data_source(d, modality, backbone):
    sources = modality.sources()
    if d.source not in sources:
        _fail(
            "data.source",
            d.source,
            f"must be one of {', '.join(repr(s) for s in sources)} for the {modality.name} "
            f"backbone model.backbone={backbone!r}",
        )


def _check_data_files(d, check_files):
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


def _check_model(m, modality, check_files):
    modality.check_model_config(m, check_files)
    if m.freeze.until is not None and (
        isinstance(m.freeze.until, bool) or not isinstance(m.freeze.until, int)
    ):
        _fail("model.freeze.until", m.freeze.until, "must be an integer or None")
    if isinstance(m.freeze.patterns, str) or not all(
        isinstance(p, str) for p in m.freeze.patterns
    ):
        _fail("model.freeze.patterns", m.freeze.patterns, "must be a tuple of regular expressions")
    if m.freeze.adabn and modality.name != "image":
        _fail("model.freeze.adabn", m.freeze.adabn,
              f"re-estimates BatchNorm statistics, which only image backbones have; "
              f"model.backbone={m.backbone!r} ({modality.name} model) has no "
              "BatchNormalization layer (text encoders use LayerNorm): set it to False")
    _check_lora(m, modality)
    for units in m.head.hidden_units:
        _positive_int("model.head.hidden_units[i]", units)
    _fraction("model.head.dropout", m.head.dropout)
    _non_negative("model.head.l2", m.head.l2, " (0: off)")


def _check_train(c):
    from sft_keras.models.freezing import parse_stages
    from sft_keras.tasks import get_task

    t = c.train
    _check_train_optimizer(t)
    _check_train_targets(c)
    _int_at_least("train.early_stopping_patience", t.early_stopping_patience, 0)
    _one_of("train.monitor", t.monitor, get_task(c.task).monitors)
    parse_stages(t.stages)  # Raises a ConfigError naming the stage and the format.
    _int_at_least("train.checkpoint_every_steps", t.checkpoint_every_steps, 0)
    _int_at_least("train.retrieval_hard_negatives", t.retrieval_hard_negatives, 0)


def _check_train_optimizer(t):
    from sft_keras.training import optimizers

    _positive_int("train.epochs", t.epochs)
    _positive_int("train.batch_size", t.batch_size)
    if t.optimizer != "auto":
        optimizers.OPTIMIZERS.get(t.optimizer)
    if t.learning_rate is not None and (
            not isinstance(t.learning_rate, (int, float)) or t.learning_rate <= 0):
        _fail("train.learning_rate", t.learning_rate,
              "must be a positive number (or None: the backbone's default)")
    if t.weight_decay is not None:
        _non_negative("train.weight_decay", t.weight_decay)
    if t.schedule != "auto":
        optimizers.SCHEDULES.get(t.schedule)
    _int_at_least("train.warmup_steps", t.warmup_steps, 0)
    for key in ("warmup_fraction", "min_lr_ratio"):
        if t[key] is not None:
            _fraction(f"train.{key}", t[key])
    for key in ("clipnorm", "global_clipnorm"):
        _non_negative(f"train.{key}", t[key], " (0: no clipping)")
    if t.clipnorm and t.global_clipnorm:
        _fail("train.global_clipnorm", t.global_clipnorm,
              f"cannot be set together with train.clipnorm={t.clipnorm!r}; set one to 0")
    _positive_int("train.gradient_accumulation_steps", t.gradient_accumulation_steps)
    if not isinstance(t.layerwise_lr_decay, (int, float)) or not 0.0 <= t.layerwise_lr_decay <= 1.0:
        _fail("train.layerwise_lr_decay", t.layerwise_lr_decay, "must be a number in [0, 1] (1 or 0: off)")


def _check_train_targets(c):
    # The keys that shape the loss's targets and the predicted labels, per task.
    from sft_keras.tasks import parse_thresholds

    t = c.train
    _fraction("train.label_smoothing", t.label_smoothing)
    if t.label_smoothing and c.task == "regression":
        _fail("train.label_smoothing", t.label_smoothing,
              "is for classification, binary and multilabel tasks, not task='regression'; "
              "set it to 0")
    if t.class_weight and c.task not in ("classification", "binary"):
        _fail("train.class_weight", t.class_weight,
              f"is for task='classification' or 'binary', not task={c.task!r}; set it to ''")
    if t.class_weight and t.class_weight != "balanced" and not all(
        _is_number(item.rsplit(":", 1)[-1]) for item in t.class_weight.split(",")
    ):
        _fail("train.class_weight", t.class_weight,
              "must be '', 'balanced', weights in class order like '1,4', or 'name:weight,...'")
    if not isinstance(t.multilabel_threshold, (int, float)) or not (
        0.0 < t.multilabel_threshold < 1.0
    ):
        _fail("train.multilabel_threshold", t.multilabel_threshold, "must be a number in (0, 1)")
    parse_thresholds(t.multilabel_thresholds)  # Syntax and range; label names need the data.
    if t.multilabel_thresholds.strip() and c.task != "multilabel":
        _fail("train.multilabel_thresholds", t.multilabel_thresholds,
              f"is for task='multilabel', not task={c.task!r}; set it to ''")


def _check_runtime(r):
    from sft_keras.training import distribute

    distribute.STRATEGIES.get(r.strategy)
    if not isinstance(r.tpu, str):
        _fail("runtime.tpu", r.tpu, "must be a TPU name or address (a string)")
    _one_of("runtime.precision", r.precision, distribute.PRECISIONS)
    _non_negative("runtime.collective_timeout_s", r.collective_timeout_s, " (0: no limit)")
    distribute.resolve_runtime(r.jit_compile, r.precision, r.steps_per_execution)  # Checks.


def _check_distillation(c, modality):
    # The teacher's folder is read (and checked) when training starts.
    m, t = c.model, c.train
    if isinstance(m.num_layers, bool) or not isinstance(m.num_layers, int) or m.num_layers < 0:
        _fail("model.num_layers", m.num_layers, "must be an integer >= 0 (0: the preset's)")
    if m.num_layers and modality.name != "text":
        _fail("model.num_layers", m.num_layers,
              f"is for text (keras-hub) encoders; model.backbone={m.backbone!r} is an "
              f"{modality.name} backbone (choose a smaller model.backbone instead)")
    if not isinstance(t.distill_temperature, (int, float)) or t.distill_temperature <= 0:
        _fail("train.distill_temperature", t.distill_temperature, "must be a number > 0")
    if not isinstance(t.distill_alpha, (int, float)) or not 0.0 <= t.distill_alpha <= 1.0:
        _fail("train.distill_alpha", t.distill_alpha, "must be a number in [0, 1]")
    if m.distill_from and c.task != "classification":
        _fail("model.distill_from", m.distill_from,
              f"is for task='classification' (soft targets over classes); task={c.task!r}")
    if m.distill_from and t.class_weight:
        _fail("train.class_weight", t.class_weight,
              "cannot be combined with model.distill_from (not supported); leave it ''")


def _check_lora(m, modality):
    if isinstance(m.lora_rank, bool) or not isinstance(m.lora_rank, int) or m.lora_rank < 0:
        _fail("model.lora_rank", m.lora_rank, "must be an integer >= 0 (0 turns LoRA off)")
    if m.lora_alpha is not None and (isinstance(m.lora_alpha, bool) or m.lora_alpha <= 0):
        _fail("model.lora_alpha", m.lora_alpha, "must be a positive number, or None for alpha = rank")
    if isinstance(m.lora_targets, str) or not m.lora_targets or not all(
        isinstance(p, str) and p for p in m.lora_targets
    ):
        _fail("model.lora_targets", m.lora_targets,
              "must be a non-empty tuple of layer-name patterns, e.g. ('query', 'value')")
    if not m.lora_rank:
        return
    if not modality.supports_lora:
        _fail("model.lora_rank", m.lora_rank,
              f"is for text (keras-hub) backbones; model.backbone={m.backbone!r} is an "
              f"{modality.name} backbone")
    for key, value in (("until", m.freeze.until), ("patterns", m.freeze.patterns),
                       ("backbone", m.freeze.backbone)):
        if value is not None and value is not False and (key == "until" or len(value)):
            _fail(f"model.freeze.{key}", value,
                  f"cannot be combined with LoRA (model.lora_rank={m.lora_rank}), which already "
                  "freezes the whole encoder; leave it unset, or set model.lora_rank=0")
