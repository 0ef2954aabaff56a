"""Fine-tune a model from a config file: the sft-train command.

Usage:

    sft-train --config=configs/quickstart.py --workdir=/tmp/sft_run
    python -m sft_keras.train --config=configs/quickstart.py --workdir=/tmp/sft_run \\
        --config.train.epochs=3

The workdir receives:

    config.json        the full resolved, validated config
    labels.txt         class names in index order
    checkpoints/       last.weights.h5, best.weights.h5, state.json
                       (LoRA runs also last.lora.h5, best.lora.h5)
    logs/              TensorBoard scalars (train/ and validation/)
    training_log.csv   per-epoch losses and metrics
    metrics.json       final evaluation of the best weights on the validation split
    classification_report.txt/.json   per-class precision, recall, F1, support
    export/<N>/        a SavedModel for TF Serving; every run adds a new version
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

import keras  # noqa: E402
from absl import app, flags, logging
from ml_collections import config_flags

from sft_keras import config as config_lib
from sft_keras import data as data_lib
from sft_keras import backbones, distribute, evaluate, export, freezing, lora, models, optimizers
from sft_keras.callbacks import AtomicCheckpoint
from sft_keras.errors import SftError
from sft_keras.files import atomic_write_text
from sft_keras.tasks import get_task


def build_callbacks(config, workdir):
    """Returns the Keras callbacks for a run: checkpoints, TensorBoard, CSV log, early stop."""
    task = get_task(config.task)
    monitor, mode = config.train.monitor, task.monitor_mode(config.train.monitor)
    callbacks = [
        AtomicCheckpoint(os.path.join(workdir, "checkpoints"), monitor=monitor, mode=mode),
        keras.callbacks.TensorBoard(log_dir=os.path.join(workdir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(workdir, "training_log.csv")),
    ]
    if config.model.lora_rank:  # best.lora.h5: LoRA matrices + head, unmerged.
        callbacks.append(lora.LoraCheckpoint(os.path.join(workdir, "checkpoints"), monitor, mode))
    if config.train.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=config.train.early_stopping_patience,
                restore_best_weights=True,
                verbose=1,
            )
        )
    return callbacks


def _image_inputs(config):
    """Image data, datasets, a model builder and an exporter for one run."""
    data = data_lib.load_image_data(config.data, config.task, config.seed)
    pipeline = dict(
        image_size=config.data.image_size,
        batch_size=config.train.batch_size,
        task=config.task,
        cache=config.data.cache,
        shuffle_buffer=config.data.shuffle_buffer,
        seed=config.seed,
    )
    train_ds = data_lib.make_image_dataset(data.train, training=True, **pipeline)
    validation_ds = data_lib.make_image_dataset(data.validation, training=False, **pipeline)

    def build_model(num_classes):
        return models.build_image_model(config, num_classes)

    def export_model(model, export_base, info):
        return export.export_image_model(
            model, export_base, data.class_names, config.task, config.data.image_size, info=info
        )

    return data, train_ds, validation_ds, build_model, export_model


def _text_inputs(config):
    """Text data, tokenized datasets, a model builder and an exporter for one run."""
    name, preset = config.model.backbone, config.model.preset
    tokenizer = backbones.load_text_tokenizer(name, preset)  # Fails fast on a bad preset.
    data = data_lib.load_text_data(config.data, config.task, config.seed)
    preprocessor = backbones.make_preprocessor(tokenizer, config.data.sequence_length)
    pipeline = dict(
        preprocessor=preprocessor,
        batch_size=config.train.batch_size,
        task=config.task,
        cache=config.data.cache,
        shuffle_buffer=config.data.shuffle_buffer,
        seed=config.seed,
    )
    train_ds = data_lib.make_text_dataset(data.train, training=True, **pipeline)
    validation_ds = data_lib.make_text_dataset(data.validation, training=False, **pipeline)

    def build_model(num_classes):
        backbone = backbones.build_text_backbone(name, preset)
        backbones.make_preprocessor(tokenizer, config.data.sequence_length, backbone)  # Checks length.
        return models.build_text_model(config, backbone, num_classes)

    def export_model(model, export_base, info):
        num_texts = 2 if len(config.data.text_columns) == 2 else 1
        return export.export_text_model(
            model, preprocessor, export_base, data.class_names, config.task,
            num_texts=num_texts, info=info,
        )

    return data, train_ds, validation_ds, build_model, export_model


def train_and_evaluate(config, workdir):
    """Runs the whole spine: config -> data -> model -> fit -> evaluate -> export.

    Image backbones read images; text backbones (keras-hub encoders) read
    text and tokenize it in the pipeline. Everything else is shared.

    Args:
        config: `ConfigDict` (see `sft_keras.config.get_default_config`).
        workdir: str. Where every output of the run is written.

    Returns:
        dict: the final metrics, plus `export_path` when export is enabled.

    Example:

    >>> import tempfile
    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.train.epochs = 1
    >>> metrics = train_and_evaluate(config, tempfile.mkdtemp())  # doctest: +SKIP
    """
    config = config_lib.validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    atomic_write_text(os.path.join(workdir, "config.json"), config_lib.config_to_json(config) + "\n")
    keras.utils.set_random_seed(config.seed)
    modality = backbones.get_backbone_spec(config.model.backbone).modality

    # === Data (read and checked before any model is built) ===
    inputs = _image_inputs if modality == "image" else _text_inputs
    data, train_ds, validation_ds, build_model, export_model = inputs(config)
    atomic_write_text(os.path.join(workdir, "labels.txt"), "".join(f"{c}\n" for c in data.class_names))
    logging.info(
        "Data: %d training and %d validation examples, classes: %s",
        len(data.train), len(data.validation), data.class_names,
    )

    # === Model ===
    task = get_task(config.task)
    strategy = distribute.get_strategy(config.runtime)
    with strategy.scope():
        model = build_model(max(len(data.class_names), 1))
        model.compile(
            optimizer=optimizers.build_optimizer(config.train),
            loss=task.loss(),
            metrics=task.metrics(),
        )
    print(freezing.trainable_summary(model), flush=True)
    if config.model.lora_rank:
        print(lora.lora_summary(model), flush=True)

    # === Fit ===
    callbacks = build_callbacks(config, workdir)
    model.fit(
        train_ds,
        validation_data=validation_ds,
        epochs=config.train.epochs,
        callbacks=callbacks,
        shuffle=False,  # The dataset shuffles itself, seeded.
        verbose=2 if os.environ.get("CI") else "auto",  # No progress bars in CI logs.
    )
    best = callbacks[0].best_path
    if config.model.lora_rank:  # best.weights.h5 holds merged kernels; keep base and LoRA apart.
        lora.restore_best(model, os.path.dirname(best))
    elif os.path.exists(best):
        model.load_weights(best)

    # === Evaluate ===
    metrics = evaluate.evaluate_model(model, validation_ds, len(data.validation), "validation")
    if config.task != "regression":
        metrics.update(evaluate.write_classification_report(
            model, validation_ds, data.validation.labels, data.class_names, config.task, workdir
        ))
    evaluate.write_metrics(metrics, workdir)
    logging.info("Validation metrics: %s", metrics)

    # === Export ===
    if config.export.enabled:
        info = {"backbone": config.model.backbone, "preset": config.model.preset,
                "metrics": dict(metrics)}
        metrics["export_path"] = export_model(model, os.path.join(workdir, "export"), info)
        logging.info("Exported SavedModel to %s", metrics["export_path"])
    return metrics


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path of a config file (configs/*.py) with a get_config() function."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs, metrics and exports.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        metrics = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except SftError as e:
        sys.exit(f"sft-train: error: {e}")
    print(f"Done. Metrics: {metrics}")


def _parse_flags(argv):
    """Parses flags; a bad config file or override is one error line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"sft-train: error: {e}\nRun with --helpfull to see every flag.")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections raises these for unknown keys and badly typed overrides.
        message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        sys.exit(f"sft-train: error: bad --config value or override: {message}")


def run():
    """Entry point of the `sft-train` console script."""
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
