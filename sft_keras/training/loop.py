"""The training loop: config -> data -> model -> fit -> evaluate -> export (`sft-train`).

`train_and_evaluate(config, workdir)` is the whole run. Everything that
depends on the kind of input (images, text) comes from the run's modality
(`sft_keras.modalities`), every path from its `sft_keras.run.RunDir`, the
loss and metrics from `sft_keras.tasks.compile_for_task`: this module only
orders the steps.

Rerunning on the same workdir resumes an unfinished run at its last commit
(the end of an epoch, or a step inside one with `train.checkpoint_every_steps`
or after SIGTERM; `sft_keras.training.preemption`), and does not retrain a
finished one; `overwrite=True`
(`--overwrite`) starts afresh, keeping `export/`. A workdir holds one run at
a time (`RunDir.lock`). See `sft_keras.run` for what the workdir receives.
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

import keras  # noqa: E402
from absl import logging  # noqa: E402

from sft_keras import config as config_lib  # noqa: E402
from sft_keras import patches  # noqa: E402
from sft_keras.data.pipeline import (  # noqa: E402
    epoch_shuffled_batches,
    pad_to_full_batches,
    steps_per_epoch,
)
from sft_keras.errors import ConfigError, TrainingError  # noqa: E402
from sft_keras.evaluation import report  # noqa: E402
from sft_keras.modalities import get_modality  # noqa: E402
from sft_keras.models import freezing, lora  # noqa: E402
from sft_keras.run import RunDir  # noqa: E402
from sft_keras.tasks import (  # noqa: E402
    compile_for_task,
    get_task,
    resolve_class_weight,
    task_from_config,
)
from sft_keras.training import distill, distribute, optimizers, resume  # noqa: E402
from sft_keras.training import stages as stages_lib  # noqa: E402
from sft_keras.training.preemption import PreemptionCheckpoint, SigtermWatch  # noqa: E402
from sft_keras.training.callbacks import (  # noqa: E402
    AtomicCheckpoint,
    EarlyStopAfterBest,
    LoraCheckpoint,
    StopOnNaN,
    finish_commit,
)


def build_callbacks(config, run_dir, state=None, extra=(), steps_per_epoch=None,
                    sigterm=None):
    """Returns a run's callbacks, in the order Keras must call them.

    The CSV log appends (a resumed or staged run adds rows) and comes before
    the checkpoint, whose commit makes the row count; early stopping and the
    LoRA checkpoint read the checkpoint's best epoch, so all of them span
    stages and resumes. `extra` (the caller's callbacks) come next, and the
    preemption check (`sigterm`) last.

    Args:
        config: a validated config.
        run_dir: `sft_keras.run.RunDir` of the run.
        state: dict or None. `state.json` of the run being resumed.
        extra: sequence of `keras.callbacks.Callback`.
        steps_per_epoch: int or None. Training batches per epoch.
        sigterm: `sft_keras.training.preemption.SigtermWatch` or None. When
            given, SIGTERM commits and stops the run (`PreemptionCheckpoint`).

    Returns:
        list of callbacks (find one by type with `find_callback`).
    """
    task = get_task(config.task)
    monitor, mode = config.train.monitor, task.monitor_mode(config.train.monitor)
    checkpoint = AtomicCheckpoint(run_dir.checkpoints, monitor=monitor, mode=mode, state=state,
                                  every_steps=config.train.checkpoint_every_steps,
                                  steps_per_epoch=steps_per_epoch)
    callbacks = [
        StopOnNaN(),
        keras.callbacks.TensorBoard(log_dir=run_dir.logs),
        keras.callbacks.CSVLogger(run_dir.training_log, append=True),
        checkpoint,
    ]
    if config.train.early_stopping_patience:
        callbacks.append(EarlyStopAfterBest(checkpoint, config.train.early_stopping_patience))
    if config.model.lora_rank:  # best.lora.h5: LoRA matrices + head, unmerged.
        callbacks.append(LoraCheckpoint(checkpoint))
    callbacks += list(extra)
    if sigterm is not None:
        callbacks.append(PreemptionCheckpoint(checkpoint, sigterm))
    return callbacks


def find_callback(callbacks, cls):
    """The first callback of type `cls` in `callbacks`, or None."""
    return next((c for c in callbacks if isinstance(c, cls)), None)


def train_and_evaluate(config, workdir, overwrite=False, callbacks=()):
    """Runs the whole spine: config -> data -> model -> fit -> evaluate -> export.

    Image backbones read images; text backbones (keras-hub encoders) read
    text and tokenize it in the pipeline (`sft_keras.modalities`).
    Everything else is shared.

    A workdir holding an unfinished run (killed, preempted, or stopped by a
    NaN loss) resumes at its last commit (after an epoch, or at a step inside
    one), with the optimizer state and the unfreezing stage; one holding a
    finished run is not trained again (its
    metrics are returned). `overwrite=True` deletes the previous run's
    checkpoints, logs and metrics (never `export/`) and starts afresh.

    Args:
        config: `ConfigDict` (see `sft_keras.config.get_default_config`).
        workdir: str. Where every output of the run is written.
        overwrite: bool. Start afresh even if `workdir` holds a run.
        callbacks: sequence of `keras.callbacks.Callback`, called after
            sft_keras's own at every step of `fit`.

    Returns:
        dict: the final metrics, plus `export_path` when export is enabled.

    Raises:
        WorkdirError: another training run holds `workdir` (`RunDir.lock`:
            the error names that process; a killed process's lock is taken over).
        Preempted: SIGTERM arrived during training; the position is
            committed and rerunning resumes from it (`sft-train` exits 75).
        TrainingError: the loss became NaN, or (multi-worker) another
            worker died or hangs.

    Example:

    >>> import tempfile
    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.train.epochs = 1
    >>> metrics = train_and_evaluate(config, tempfile.mkdtemp())  # doctest: +SKIP
    """
    config = config_lib.validate_config(config)
    # 'auto' optimizer keys become the backbone's recipe; config.json records the values.
    config, recipe = optimizers.resolve_recipe(config)
    print(recipe, flush=True)
    # Before any other TF op: multi-worker strategies connect the cluster here.
    strategy = distribute.get_strategy(config.runtime)
    # Only the chief writes to `workdir`, and holds its lock (one run per
    # workdir); other workers write to a temporary folder removed at the end.
    with distribute.output_dir(strategy, workdir) as output_dir:
        run_dir = RunDir(output_dir)
        chief = distribute.is_chief(strategy)
        if not chief and not overwrite:  # Resume from the chief's last commit, as the chief does.
            resume.copy_commit(RunDir(workdir), run_dir)
        with run_dir.lock() if chief else contextlib.nullcontext(), SigtermWatch() as sigterm:
            return _run(config, run_dir, strategy, overwrite, callbacks, sigterm)


def _run(config, run_dir, strategy, overwrite=False, callbacks=(), sigterm=None):
    """The spine, in one process; `run_dir` is a scratch folder on non-chief workers.

    `sigterm` (a `SigtermWatch`) turns SIGTERM into a commit and `Preempted`
    while training; after training its handler is removed.
    """
    if overwrite:
        run_dir.clear()
    state = resume.committed_state(run_dir)
    if state and state.get("complete"):
        return resume.completed_metrics(run_dir, state)
    if state:
        resume.check_resumable(config, run_dir, state)
    run_dir.write_config(config)
    keras.utils.set_random_seed(config.seed)
    # Several replicas: no step may leave one of them an empty batch.
    multi_replica = strategy.num_replicas_in_sync > 1

    # === Data (read and checked before any model is built) ===
    modality = get_modality(config)
    data = modality.load_data()
    run_dir.write_labels(data.class_names)
    logging.info("Data: %d training and %d validation examples, classes: %s",
                 len(data.train), len(data.validation), data.class_names)
    train_examples = modality.make_dataset(data.train).unbatch()  # Shuffled per epoch in _fit.
    teacher = None
    if config.model.distill_from:  # The teacher's predictions, computed once, ride with y.
        teacher = distill.load_teacher(config, data.class_names)
        train_examples = distill.with_teacher(
            train_examples, distill.teacher_log_probs(teacher, data.train))
        keras.utils.set_random_seed(config.seed)  # The student starts as it would without.
    validation_ds = modality.make_dataset(data.validation)
    if multi_replica:
        validation_ds = pad_to_full_batches(validation_ds, len(data.validation),
                                            config.train.batch_size)

    # === Model ===
    num_classes = max(len(data.class_names), 1)
    with strategy.scope(), distribute.precision_policy(config.runtime.precision):
        model = modality.build_model(num_classes)
        if teacher is not None:
            distill.init_from_teacher(model, teacher.model)
            teacher = None  # Not needed any more: free its memory.
        total_steps = config.train.epochs * steps_per_epoch(
            len(data.train), config.train.batch_size, strategy.num_replicas_in_sync)
        optimizer = optimizers.build_optimizer(config.train, model, total_steps=total_steps)
        compile_for_task(model, config, data.class_names, optimizer, weighted=multi_replica,
                         distill=bool(config.model.distill_from))
    if multi_replica:
        patches.weighted_test_step(model)  # val_loss ignores the zero-weight padding.
    print(distribute.runtime_summary(model, strategy), flush=True)  # What "auto" chose.
    distribute.prepare_for_multi_worker_fit(model, strategy)
    if not config.train.stages:
        print(freezing.trainable_summary(model), flush=True)
    if config.model.lora_rank:
        print(lora.lora_summary(model), flush=True)

    # === Fit ===
    if config.model.freeze.adabn and not state:  # A checkpoint holds the statistics.
        _adapt_batchnorm(model, config, modality, data, strategy)
    class_weight = resolve_class_weight(config.train.class_weight, data.train.labels,
                                        data.class_names)
    if class_weight:
        logging.info("Class weights (train.class_weight=%r): %s", config.train.class_weight,
                     {data.class_names[i]: w for i, w in class_weight.items()})
    checkpoint = _fit(model, config, run_dir, strategy, train_examples, len(data.train),
                      validation_ds, class_weight, data.class_names, callbacks, sigterm)
    if sigterm is not None:
        sigterm.stop()  # Evaluating and exporting: SIGTERM ends the process as usual.
    model = _best_model(model, config, checkpoint, bool(state), strategy, modality,
                        data.class_names)

    # === Evaluate ===
    task, metrics = _evaluate(model, config, run_dir, validation_ds, data, strategy, modality)

    # === Export ===
    chief_exports = config.export.enabled and distribute.is_chief(strategy)
    if chief_exports and "saved_model" in config.export.formats:
        info = {"backbone": config.model.backbone, "preset": config.model.preset,
                "metrics": dict(metrics)}
        metrics["export_path"] = modality.export(model, run_dir.export, data.class_names, task,
                                                 info=info)
        logging.info("Exported SavedModel to %s", metrics["export_path"])
    if chief_exports and set(config.export.formats) - {"saved_model"}:
        from sft_keras.serving.formats import export_and_check_run  # LiteRT, ONNX.

        metrics["export_paths"] = export_and_check_run(run_dir.path, config.export.formats, data)
    resume.mark_complete(run_dir)
    return metrics


def _fit(model, config, run_dir, strategy, train_examples, num_train, validation_ds,
         class_weight, class_names, extra_callbacks=(), sigterm=None):
    """Fits `model` stage by stage, resuming at the last commit in `run_dir.checkpoints`.

    A commit inside an epoch (`train.checkpoint_every_steps`, or SIGTERM)
    resumes with one `fit` of that epoch's remaining batches (the first
    `step` batches skipped in tf.data), then the following epochs.

    Returns:
        The run's `AtomicCheckpoint` (`best_path`: the best weights by `train.monitor`).

    Raises:
        Preempted: `sigterm` received SIGTERM (after a commit).
        TrainingError: the loss became NaN, or a multi-worker collective failed.
    """
    state = run_dir.checkpoints.read_state()
    start = state["last_epoch"] if state else 0
    skip = state.get("step", 0) if state else 0
    epochs, multi_replica = config.train.epochs, strategy.num_replicas_in_sync > 1
    steps = steps_per_epoch(num_train, config.train.batch_size, strategy.num_replicas_in_sync)
    if skip and state.get("steps_per_epoch") != steps:
        raise ConfigError(
            f"{run_dir.path} holds a run stopped at epoch {start + 1}, step {skip} of "
            f"{state.get('steps_per_epoch')} steps, but this run has {steps} steps an epoch "
            f"(train.batch_size={config.train.batch_size}, {strategy.num_replicas_in_sync} "
            "replicas): resume on as many replicas, use another --workdir, or pass --overwrite."
        )
    if distribute.is_multi_worker(strategy):  # Every worker must resume at the same step.
        distribute.check_same_position(strategy, (start, skip), run_dir.path)
    stages = freezing.parse_stages(config.train.stages)
    if stages or state:
        with strategy.scope():
            if stages:
                stages_lib.unfreeze_all(model, config)
            model.optimizer.build(model.trainable_variables)
    if state:
        _restore(model, config, run_dir, state, bool(stages))
    callbacks = build_callbacks(config, run_dir, state, extra_callbacks, steps_per_epoch=steps,
                                sigterm=sigterm)
    for callback in extra_callbacks:  # E.g. sft-tune's pruning, which may evaluate mid-epoch.
        if hasattr(callback, "use_validation_data"):
            callback.use_validation_data(validation_ds, steps, epochs)
    checkpoint = find_callback(callbacks, AtomicCheckpoint)
    nan_guard = find_callback(callbacks, StopOnNaN)
    early_stop = find_callback(callbacks, EarlyStopAfterBest)
    preemption = find_callback(callbacks, PreemptionCheckpoint)
    resume.keep_log_rows(run_dir.training_log, start)

    def fit(first, end, skip=0):
        """Epochs first..end-1, the first without its first `skip` batches; True: stop."""
        if preemption:
            preemption.check()
        batches = epoch_shuffled_batches(
            train_examples, config.train.batch_size, first, end, seed=config.seed,
            shuffle_buffer=config.data.shuffle_buffer, drop_remainder=multi_replica,
            length_buckets=config.data.length_buckets,  # Text only; images ignore it.
            sort_window=config.data.length_sort_window,
        )
        with distribute.collective_errors(strategy, config.runtime, run_dir.checkpoints):
            model.fit(
                batches.skip(skip),  # The batches a mid-epoch commit had trained.
                validation_data=validation_ds,
                initial_epoch=first,
                epochs=end,
                steps_per_epoch=steps - skip,
                callbacks=callbacks,
                class_weight=class_weight,
                shuffle=False,  # epoch_shuffled_batches shuffles, seeded by epoch.
                verbose=2 if os.environ.get("CI") else "auto",  # No progress bars in CI logs.
            )
        if nan_guard.failure:
            learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            raise TrainingError(_nan_message(nan_guard.failure, checkpoint, learning_rate))
        return bool(early_stop and early_stop.stopped_epoch)

    bounds = stages_lib.stage_bounds(stages, epochs)
    for index in range(len(bounds) - 1):
        first, end = max(bounds[index], start), min(bounds[index + 1], epochs)
        if first >= end:
            continue
        if stages:
            with strategy.scope():
                stages_lib.apply_stage(model, config, stages, index)
                compile_for_task(model, config, class_names, model.optimizer,
                                 weighted=multi_replica, distill=bool(config.model.distill_from))
            print(f"Stage {index} ({stages[index].text!r}): epochs {first + 1}-{end}, learning "
                  f"rate {float(model.optimizer.learning_rate):.3g}", flush=True)
            print(freezing.trainable_summary(model), flush=True)
            checkpoint.stage = index
        if early_stop and early_stop.start_stage(bounds[index], first):
            break  # The run had stopped early before it was killed.
        if skip and first == start:  # Resumed inside this epoch: finish it alone.
            stop = fit(first, first + 1, skip)
            first, skip = first + 1, 0
            if stop:
                break
        if first < end and fit(first, end):
            break
    if preemption:
        preemption.check()  # A signal during the last validation: the epoch is committed.
    for stage in stages:
        if stage.epoch >= epochs:
            logging.warning("train.stages entry %r starts after train.epochs=%d: it never ran.",
                            stage.text, epochs)
    return checkpoint


def _adapt_batchnorm(model, config, modality, data, strategy):
    """`model.freeze.adabn`: BatchNorm statistics of the training images, before training.

    The training split is read once in order, batched by `train.batch_size`,
    without augmentation (the model's augmentation layers run in inference
    mode; see `freezing.reestimate_batchnorm`).

    Raises:
        ConfigError: the model has no BatchNormalization layer.
    """
    if not freezing.batchnorm_layers(model):
        raise ConfigError(
            f"model.freeze.adabn re-estimates BatchNorm statistics, but backbone "
            f"model.backbone={config.model.backbone!r} has no BatchNormalization layer: set it "
            f"to False. Received: model.freeze.adabn={config.model.freeze.adabn!r}"
        )
    with strategy.scope():
        count = freezing.reestimate_batchnorm(
            model, modality.make_dataset(data.train, cache=False))
    logging.info("AdaBN: re-estimated the statistics of %d BatchNorm layers on %d training "
                 "images (model.freeze.adabn).", count, len(data.train))


def _restore(model, config, run_dir, state, staged):
    """Loads the last commit's weights and optimizer state into `model` (optimizer built)."""
    finish_commit(run_dir.checkpoints, state)  # Completes a commit cut short by a kill.
    model.load_weights(os.path.join(run_dir.checkpoints.path, state["weights"]))
    if not staged:
        try:  # The file holds the old run's learning rate; the config's wins.
            model.optimizer.learning_rate = config.train.learning_rate
        except TypeError:
            pass  # A schedule: it is part of the optimizer state.
    if state.get("step"):
        where = (f"at epoch {state['last_epoch'] + 1}, step {state['step']} of "
                 f"{state['steps_per_epoch']}")
    else:
        where = f"after epoch {state['last_epoch']}"
    logging.info("Resuming %s %s (stage %d).", run_dir.path, where, state["stage"])
    print(f"Resuming {where}.", flush=True)


def _nan_message(failure, checkpoint, learning_rate):
    saved = (
        f"The last good checkpoint (epoch {checkpoint.last_epoch}) is kept in "
        f"{checkpoint.directory}; rerunning with the same --workdir resumes from it."
        if checkpoint.last_epoch else "No epoch finished, so no checkpoint was saved."
    )
    return (
        f"Training stopped: the loss became {failure['loss']} at epoch {failure['epoch']}, "
        f"batch {failure['batch']}. Likely causes: a learning rate too high (it was "
        f"{learning_rate:.3g}: lower train.learning_rate or a stage's lr=), labels out of "
        f"range for the task, or NaN/Inf in the inputs. {saved}"
    )


def _best_model(model, config, checkpoint, resumed, strategy, modality, class_names):
    """The model to evaluate and export: the best epoch's weights, on this process's devices."""
    if config.model.lora_rank and not resumed:
        # Keep the pretrained base and the LoRA matrices apart (best.weights.h5
        # holds merged kernels, which a resumed run has to use instead).
        lora.restore_best(model, checkpoint.checkpoints.lora("best"))
    elif os.path.exists(checkpoint.best_path):
        model.load_weights(checkpoint.best_path)  # The best epoch by train.monitor.
    if not distribute.is_multi_worker(strategy):
        return model
    # Evaluate and export a local copy: no collectives after training, and
    # predictions stay in validation order (the report relies on it).
    with distribute.precision_policy(config.runtime.precision):
        local = modality.build_model(max(len(class_names), 1), pretrained=False)
    local.set_weights(model.get_weights())
    compile_for_task(local, config, class_names, weighted=True)
    return patches.weighted_test_step(local)


def _evaluate(model, config, run_dir, validation_ds, data, strategy, modality):
    """Writes the validation report (`run_dir.report`); returns the task served and the metrics."""
    task = task_from_config(config, data.class_names)
    own = modality.evaluate(model, validation_ds, data.validation, run_dir.report,
                            run_dir.training_log)  # e.g. retrieval's.
    if own is not None:
        run_dir.publish_summary()
        return task, own
    threshold = config.train.multilabel_threshold
    if config.task == "multilabel":
        scope = (contextlib.nullcontext() if distribute.is_multi_worker(strategy)
                 else strategy.scope())
        task = _final_thresholds(model, config, task, validation_ds, data, run_dir, scope,
                                 weighted=strategy.num_replicas_in_sync > 1)
        threshold = task.label_thresholds(len(data.class_names))
    metrics = report.write_report(
        model, validation_ds, data.validation, data.class_names, config.task, run_dir.report,
        "validation", training_log=run_dir.training_log, threshold=threshold,
    )
    run_dir.publish_summary()  # Top-level metrics.json etc.
    logging.info("Validation metrics: %s", metrics)
    return task, metrics


def _final_thresholds(model, config, task, validation_ds, data, run_dir, scope, weighted):
    """The multilabel task with its final per-label thresholds, recorded in the run folder.

    With `train.multilabel_thresholds="tune"` each label's threshold is tuned
    for F1 on the validation split (`report.tune_thresholds`), logged, and
    the model is recompiled (inside `scope`) so its metrics use them.
    """
    names = list(data.class_names)
    spec = config.train.multilabel_thresholds.strip()
    source = "train.multilabel_thresholds" if spec else "train.multilabel_threshold"
    if spec == "tune":
        probabilities = model.predict(validation_ds, verbose=0)[: len(data.validation)]
        tuned = report.tune_thresholds(data.validation.labels, probabilities, names,
                                       default=float(config.train.multilabel_threshold))
        logging.info("Per-label thresholds tuned for F1 on the validation split: %s", tuned)
        with scope:
            task = compile_for_task(model, config, names, tuned=tuned, weighted=weighted)
        source = "tuned for F1 per label on the validation split"
    run_dir.write_thresholds(zip(names, task.label_thresholds(len(names))), source,
                             float(config.train.multilabel_threshold))
    return task
