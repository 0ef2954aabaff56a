"""The training loop: config -> data -> model -> fit -> evaluate -> export (`sft-train`).

Rerunning on the same workdir resumes an unfinished run after its last
finished epoch (and does not retrain a finished one); `--overwrite` starts
afresh, keeping `export/`.

The workdir receives:

    config.json        the full resolved, validated config
    labels.txt         class names in index order
    checkpoints/       last.weights.h5, best.weights.h5, epoch-<N>.weights.h5, state.json
                       (LoRA runs also last.lora.h5, best.lora.h5)
    logs/              TensorBoard scalars (train/ and validation/)
    training_log.csv   per-epoch losses and metrics
    metrics.json       final evaluation of the best weights on the validation split
    classification_report.txt/.json   per-class precision, recall, F1, support
    report/            the same metrics and per-class report, confusion matrices,
                       training curves and the worst validation examples
    export/<N>/        a SavedModel for TF Serving; every run adds a new version
"""

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

import keras  # noqa: E402
from absl import logging

from sft_keras import config as config_lib
from sft_keras import data as data_lib
from sft_keras import backbones, models
from sft_keras.training import distribute
from sft_keras.evaluation import report as evaluate
from sft_keras.serving import export
from sft_keras.models import freezing
from sft_keras.models import lora
from sft_keras.training import optimizers
from sft_keras.training.callbacks import (
    AtomicCheckpoint,
    EarlyStopAfterBest,
    StopOnNaN,
    finish_commit,
    read_state,
)
from sft_keras import patches
from sft_keras.data.pipeline import epoch_shuffled_batches, pad_to_full_batches, steps_per_epoch
from sft_keras.errors import ConfigError, TrainingError
from sft_keras.files import atomic_write_text, existing_versions
from sft_keras.tasks import compile_for_task, get_task, resolve_class_weight, task_from_config


def build_callbacks(config, workdir, state=None):
    """Returns the Keras callbacks for a run: TensorBoard, CSV log, checkpoints, NaN and early stop.

    The CSV log appends (a resumed or staged run adds rows), the checkpoint
    runs after it (its commit makes the CSV row count), and early stopping
    reads the checkpoint's best epoch, so all of them span stages and resumes.

    Args:
        config: a validated config.
        workdir: str. The run's workdir.
        state: dict or None. `checkpoints/state.json` of the run being resumed.

    Returns:
        List of callbacks; `callbacks[0]` is the `AtomicCheckpoint`.
    """
    task = get_task(config.task)
    monitor, mode = config.train.monitor, task.monitor_mode(config.train.monitor)
    checkpoint = AtomicCheckpoint(
        os.path.join(workdir, "checkpoints"), monitor=monitor, mode=mode, state=state
    )
    callbacks = [
        checkpoint,
        StopOnNaN(),
        keras.callbacks.TensorBoard(log_dir=os.path.join(workdir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(workdir, "training_log.csv"), append=True),
    ]
    if config.train.early_stopping_patience:
        callbacks.append(EarlyStopAfterBest(checkpoint, config.train.early_stopping_patience))
    if config.model.lora_rank:  # best.lora.h5: LoRA matrices + head, unmerged.
        callbacks.append(lora.LoraCheckpoint(os.path.join(workdir, "checkpoints"), monitor, mode))
    return callbacks


def _ordered(callbacks):
    # Keras calls callbacks in list order: the CSV row first, then the commit.
    return callbacks[1:4] + callbacks[:1] + callbacks[4:]


# Changing these between a run and its resume would make the checkpoint
# meaningless (other data, another model) or change the data order.
_RESUME_FIXED = ("seed", "task", "data.", "model.", "train.batch_size", "train.stages")
# What `--overwrite` deletes; `export/` versions are always kept.
_RUN_OUTPUTS = ("checkpoints", "logs", "training_log.csv", "metrics.json", "config.json",
                "labels.txt", "classification_report.txt", "classification_report.json", "report")


def _flat(tree, prefix=""):
    items = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            items.update(_flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def _check_resumable(config, workdir, state):
    """Raises a ConfigError when `config` differs from the stored run in a key that matters."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        old = _flat(json.load(f))
    new = _flat(json.loads(config_lib.config_to_json(config)))
    changed = sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k) and k.startswith(_RESUME_FIXED)
    )
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"{workdir} holds a run stopped after epoch {state['last_epoch']} with a different "
            f"config ({diffs}). Resuming needs the same data, model, batch size and stages: "
            "rerun with the old values, use another --workdir, or pass --overwrite to start afresh."
        )


def clear_run(workdir):
    """Deletes a run's checkpoints, logs and metrics in `workdir`, keeping `export/`.

    Args:
        workdir: str. A workdir written by `train_and_evaluate`.
    """
    for name in _RUN_OUTPUTS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def _complete_run(workdir, state):
    """The metrics of a finished run in `workdir` (no training, no new export)."""
    with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    versions = existing_versions(os.path.join(workdir, "export"))
    if versions:
        metrics["export_path"] = os.path.join(workdir, "export", str(versions[-1]))
    print(
        f"The run in {workdir} is complete ({state['last_epoch']} epochs, best "
        f"{state['monitor']}={state['best']} at epoch {state['best_epoch']}); not training "
        "again. Pass --overwrite (Python: overwrite=True) to start afresh.",
        flush=True,
    )
    return metrics


def _set_learning_rate(optimizer, value, stage):
    try:
        optimizer.learning_rate = value
    except TypeError:
        raise ConfigError(
            f"train.stages[{stage}] sets a learning rate factor, but the optimizer's learning "
            "rate is a schedule, which cannot be scaled per stage. Drop 'lr=' from the stages."
        ) from None


def _backbone_of(model):
    """The nested backbone model inside `model` (the one layer that is itself a model)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ConfigError(
            f"train.stages needs a model with one nested backbone model; {model.name!r} has "
            f"{len(nested)}: {[layer.name for layer in nested]}. Set train.stages=()."
        )
    return nested[0]


def _apply_stage(model, config, stages, index):
    """Sets the trainable layers and learning rate of stage `index`; returns the backbone."""
    stage = stages[index]
    backbone = _backbone_of(model)
    try:
        freezing.set_trainable(
            backbone, until=stage.until, patterns=stage.patterns, freeze_all=stage.freeze_all,
            freeze_batchnorm=config.model.freeze.batchnorm,
        )
    except ConfigError as e:
        raise ConfigError(f"train.stages[{index}]={stage.text!r}: {e}") from None
    names = [layer.name for layer in backbone.layers]
    if config.model.head.pooling != "cls" and "pooled_dense" in names:
        backbone.get_layer("pooled_dense").trainable = False  # Not on the output's path.
    _set_learning_rate(model.optimizer, config.train.learning_rate * stage.lr_factor, index)
    return backbone


def _fit(model, config, workdir, strategy, train_examples, num_train, validation_ds,
         class_weight=None, class_names=None):
    """Fits `model` stage by stage, resuming from `workdir/checkpoints` when a run stopped there.

    Returns:
        The run's `AtomicCheckpoint` (`best_path`: the best weights by `train.monitor`).
    """
    directory = os.path.join(workdir, "checkpoints")
    state = read_state(directory)
    start = state["last_epoch"] if state else 0
    stages = freezing.parse_stages(config.train.stages)
    if state:
        finish_commit(directory, state)  # Completes a commit cut short by a kill.
        with strategy.scope():
            if stages:
                freezing.set_trainable(_backbone_of(model), freeze_batchnorm=config.model.freeze.batchnorm)
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(directory, state["weights"]))
        if not stages:
            try:  # The file holds the old run's learning rate; the config's wins.
                model.optimizer.learning_rate = config.train.learning_rate
            except TypeError:
                pass  # A schedule: it is part of the optimizer state.
        logging.info("Resuming %s after epoch %d (stage %d).", workdir, start, state["stage"])
        print(f"Resuming after epoch {start}.", flush=True)
    elif stages:
        # One optimizer for all stages: built on every variable it will ever
        # train, its state (Adam moments, step count) carries over as layers
        # unfreeze; a Keras optimizer cannot add variables after it is built.
        with strategy.scope():
            freezing.set_trainable(_backbone_of(model), freeze_batchnorm=config.model.freeze.batchnorm)
            model.optimizer.build(model.trainable_variables)
    callbacks = build_callbacks(config, workdir, state)
    checkpoint, nan_guard = callbacks[0], callbacks[1]
    early_stop = next((c for c in callbacks if isinstance(c, EarlyStopAfterBest)), None)
    _keep_log_rows(os.path.join(workdir, "training_log.csv"), start)

    epochs = config.train.epochs
    replicas = strategy.num_replicas_in_sync
    steps = steps_per_epoch(num_train, config.train.batch_size, replicas)
    bounds = [s.epoch for s in stages] + [epochs] if stages else [0, epochs]
    for index in range(len(bounds) - 1):
        first, end = max(bounds[index], start), min(bounds[index + 1], epochs)
        if first >= end:
            continue
        if stages:
            with strategy.scope():
                _apply_stage(model, config, stages, index)
                compile_for_task(model, config, class_names, model.optimizer,
                                 weighted=strategy.num_replicas_in_sync > 1)
            print(f"Stage {index} ({stages[index].text!r}): epochs {first + 1}-{end}, learning "
                  f"rate {float(model.optimizer.learning_rate):.3g}", flush=True)
            print(freezing.trainable_summary(model), flush=True)
            checkpoint.stage = index
        if early_stop:
            early_stop.stage_start = bounds[index]
            since = max(checkpoint.best_epoch or 0, bounds[index])
            if first - since >= early_stop.patience:
                break  # The run stopped early before it was killed.
        train_ds = epoch_shuffled_batches(
            train_examples, config.train.batch_size, first, end, seed=config.seed,
            shuffle_buffer=config.data.shuffle_buffer, drop_remainder=replicas > 1,
        )
        model.fit(
            train_ds,
            validation_data=validation_ds,
            initial_epoch=first,
            epochs=end,
            steps_per_epoch=steps,
            callbacks=_ordered(callbacks),
            class_weight=class_weight,
            shuffle=False,  # epoch_shuffled_batches shuffles, seeded by epoch.
            verbose=2 if os.environ.get("CI") else "auto",  # No progress bars in CI logs.
        )
        if nan_guard.failure:
            learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            raise TrainingError(_nan_message(nan_guard.failure, checkpoint, learning_rate, directory))
        if early_stop and early_stop.stopped_epoch:
            break
    for stage in stages:
        if stage.epoch >= epochs:
            logging.warning("train.stages entry %r starts after train.epochs=%d: it never ran.",
                            stage.text, epochs)
    return checkpoint


def _nan_message(failure, checkpoint, learning_rate, directory):
    saved = (
        f"The last good checkpoint (epoch {checkpoint.last_epoch}) is kept in {directory}; "
        "rerunning with the same --workdir resumes from it."
        if checkpoint.last_epoch else "No epoch finished, so no checkpoint was saved."
    )
    return (
        f"Training stopped: the loss became {failure['loss']} at epoch {failure['epoch']}, "
        f"batch {failure['batch']}. Likely causes: a learning rate too high (it was "
        f"{learning_rate:.3g}: lower train.learning_rate or a stage's lr=), labels out of "
        f"range for the task, or NaN/Inf in the inputs. {saved}"
    )


def _keep_log_rows(path, epochs_done):
    """Drops rows of epochs not committed (a killed run logged them, a resume redoes them)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    if not epochs_done:
        os.remove(path)
        return
    kept = lines[:1] + [
        line for line in lines[1:] if line.split(",", 1)[0].isdigit()
        and int(line.split(",", 1)[0]) < epochs_done
    ]
    atomic_write_text(path, "".join(kept))


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
    train_ds = data_lib.make_image_dataset(data.train, training=False, **pipeline)  # Shuffled in _fit.
    validation_ds = data_lib.make_image_dataset(data.validation, training=False, **pipeline)

    def build_model(num_classes):
        return models.build_model(config, num_classes)

    def export_model(model, export_base, info, task=None):
        return export.export_model(config, model, export_base, data.class_names, info=info,
                                   task=task)

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
    train_ds = data_lib.make_text_dataset(data.train, training=False, **pipeline)  # Shuffled in _fit.
    validation_ds = data_lib.make_text_dataset(data.validation, training=False, **pipeline)

    def build_model(num_classes):
        return models.build_model(config, num_classes, tokenizer)

    def export_model(model, export_base, info, task=None):
        return export.export_model(config, model, export_base, data.class_names, preprocessor,
                                   info=info, task=task)

    return data, train_ds, validation_ds, build_model, export_model


def _total_steps(config, num_train_examples, num_replicas=1):
    """Optimizer steps in the whole run, for learning-rate schedules."""
    return steps_per_epoch(num_train_examples, config.train.batch_size,
                           num_replicas) * config.train.epochs


def train_and_evaluate(config, workdir, overwrite=False):
    """Runs the whole spine: config -> data -> model -> fit -> evaluate -> export.

    Image backbones read images; text backbones (keras-hub encoders) read
    text and tokenize it in the pipeline. Everything else is shared.

    A workdir holding an unfinished run (killed, or stopped by a NaN loss)
    resumes after its last finished epoch, with the optimizer state and the
    unfreezing stage; one holding a finished run is not trained again (its
    metrics are returned). `overwrite=True` deletes the previous run's
    checkpoints, logs and metrics (never `export/`) and starts afresh.

    Args:
        config: `ConfigDict` (see `sft_keras.config.get_default_config`).
        workdir: str. Where every output of the run is written.
        overwrite: bool. Start afresh even if `workdir` holds a run.

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
    # Before any other TF op: multi-worker strategies connect the cluster here.
    strategy = distribute.get_strategy(config.runtime)
    # Only the chief writes to `workdir`; other workers write to a temporary
    # folder that is removed at the end.
    with distribute.output_dir(strategy, workdir) as output_dir:
        return _run(config, output_dir, strategy, overwrite)


def _run(config, workdir, strategy, overwrite=False):
    """The spine, in one process; `workdir` is a scratch folder on non-chief workers."""
    if overwrite:
        clear_run(workdir)
    state = read_state(os.path.join(workdir, "checkpoints"))
    if state and "weights" not in state:
        raise ConfigError(
            f"{workdir} holds a run written by an older sft_keras, which cannot be resumed: "
            "pass --overwrite (Python: overwrite=True) to start afresh, or use another --workdir."
        )
    if state and state.get("complete"):
        return _complete_run(workdir, state)
    if state:
        _check_resumable(config, workdir, state)
    os.makedirs(workdir, exist_ok=True)
    atomic_write_text(os.path.join(workdir, "config.json"), config_lib.config_to_json(config) + "\n")
    keras.utils.set_random_seed(config.seed)
    modality = backbones.get_backbone_spec(config.model.backbone).modality

    # === Data (read and checked before any model is built) ===
    inputs = _image_inputs if modality == "image" else _text_inputs
    data, train_ds, validation_ds, build_model, export_model = inputs(config)
    padded = strategy.num_replicas_in_sync > 1
    if padded:
        # Full batches with zero-weight padding: no replica gets an empty batch.
        validation_ds = pad_to_full_batches(validation_ds, len(data.validation),
                                            config.train.batch_size)
    atomic_write_text(os.path.join(workdir, "labels.txt"), "".join(f"{c}\n" for c in data.class_names))
    logging.info(
        "Data: %d training and %d validation examples, classes: %s",
        len(data.train), len(data.validation), data.class_names,
    )

    # === Model ===
    task = task_from_config(config, data.class_names)
    with strategy.scope(), distribute.precision_policy(config.runtime.precision):
        model = build_model(max(len(data.class_names), 1))
        optimizer = optimizers.build_optimizer(
            config.train, model,
            total_steps=_total_steps(config, len(data.train), strategy.num_replicas_in_sync),
        )
        compile_for_task(model, config, data.class_names, optimizer, weighted=padded)
    if padded:
        patches.weighted_test_step(model)  # val_loss ignores the zero-weight padding.
    distribute.prepare_for_multi_worker_fit(model, strategy)
    if not config.train.stages:
        print(freezing.trainable_summary(model), flush=True)
    if config.model.lora_rank:
        print(lora.lora_summary(model), flush=True)

    # === Fit ===
    class_weight = resolve_class_weight(config.train.class_weight, data.train.labels, data.class_names)
    if class_weight:
        logging.info("Class weights (train.class_weight=%r): %s", config.train.class_weight,
                     {data.class_names[i]: w for i, w in class_weight.items()})
    checkpoint = _fit(model, config, workdir, strategy, train_ds.unbatch(), len(data.train),
                      validation_ds, class_weight=class_weight, class_names=data.class_names)
    best = checkpoint.best_path
    if config.model.lora_rank and not state:
        # Keep the pretrained base and the LoRA matrices apart (best.weights.h5
        # holds merged kernels, which a resumed run has to use instead).
        lora.restore_best(model, os.path.dirname(best))
    elif os.path.exists(best):
        model.load_weights(best)  # Evaluate and export the best epoch by train.monitor.
    if distribute.is_multi_worker(strategy):
        # Evaluate and export a local copy: no collectives after training, and
        # predictions stay in validation order (the report relies on it).
        trained = model
        with distribute.precision_policy(config.runtime.precision):
            model = build_model(max(len(data.class_names), 1))
        model.set_weights(trained.get_weights())
        compile_for_task(model, config, data.class_names, weighted=padded)
        patches.weighted_test_step(model)

    # === Evaluate ===
    threshold = config.train.multilabel_threshold
    if config.task == "multilabel":
        scope = strategy.scope() if not distribute.is_multi_worker(strategy) else None
        task = _final_thresholds(model, config, task, validation_ds, data, workdir, scope, padded)
        threshold = task.label_thresholds(len(data.class_names))
    metrics = evaluate.write_report(
        model, validation_ds, data.validation, data.class_names, config.task,
        os.path.join(workdir, "report"), "validation",
        training_log=os.path.join(workdir, "training_log.csv"),
        threshold=threshold,
    )
    evaluate.copy_summary(os.path.join(workdir, "report"), workdir)  # Top-level metrics.json etc.
    logging.info("Validation metrics: %s", metrics)

    # === Export ===
    if config.export.enabled and distribute.is_chief(strategy):
        info = {"backbone": config.model.backbone, "preset": config.model.preset,
                "metrics": dict(metrics)}
        metrics["export_path"] = export_model(model, os.path.join(workdir, "export"), info,
                                              task=task)
        logging.info("Exported SavedModel to %s", metrics["export_path"])
    _mark_complete(os.path.join(workdir, "checkpoints"))
    return metrics


def _final_thresholds(model, config, task, validation_ds, data, workdir, scope=None,
                      padded=False):
    """The multilabel task with its final per-label thresholds, recorded in report/thresholds.json.

    With `train.multilabel_thresholds="tune"` each label's threshold is tuned
    for F1 on the validation split (`evaluate.tune_thresholds`), logged, and
    the model is recompiled so its metrics use them. `scope`: the strategy
    scope to recompile in (None: none).
    """
    import contextlib

    names = list(data.class_names)
    spec = config.train.multilabel_thresholds.strip()
    source = "train.multilabel_thresholds" if spec else "train.multilabel_threshold"
    if spec == "tune":
        probabilities = model.predict(validation_ds, verbose=0)[: len(data.validation)]
        tuned = evaluate.tune_thresholds(data.validation.labels, probabilities, names,
                                         default=float(config.train.multilabel_threshold))
        logging.info("Per-label thresholds tuned for F1 on the validation split: %s", tuned)
        with scope or contextlib.nullcontext():
            task = compile_for_task(model, config, names, tuned=tuned, weighted=padded)
        source = "tuned for F1 per label on the validation split"
    report = {"thresholds": dict(zip(names, task.label_thresholds(len(names)))), "source": source,
              "default": float(config.train.multilabel_threshold)}
    os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
    atomic_write_text(os.path.join(workdir, "report", "thresholds.json"),
                      json.dumps(report, indent=2) + "\n")
    return task


def _mark_complete(directory):
    state = read_state(directory)
    if state:
        state["complete"] = True
        atomic_write_text(os.path.join(directory, "state.json"), json.dumps(state, indent=2))
