"""Training callbacks sft_keras adds to Keras's own: checkpoints that resume, NaN stop, early stop.

A run commits each finished epoch in three steps, so that a process killed at
any instant (`kill -9` mid-epoch or mid-write) leaves a consistent state:

1. the weights and the optimizer state go to `epoch-<N>.weights.h5` through a
   temporary file and an atomic rename;
2. `state.json` (atomic) records epoch N, the stage, the best value so far,
   and names that file — this is the commit point;
3. `last.weights.h5` (and `best.weights.h5` when N is the best epoch) become
   hard links to (or copies of) that file, and older epoch files are removed.

With `every_steps=N` (`train.checkpoint_every_steps`) the same three steps also
commit every N batches inside an epoch: `epoch-<N+1>-step-<S>.weights.h5`, and
`state.json` records the position (`last_epoch`: epochs finished, `step`:
batches of the next epoch trained). `best.weights.h5` only ever points at a
finished epoch.

`CheckpointDir.read_state` + `finish_commit` redo step 3 on restart. Keras's own
`BackupAndRestore` (3.15) is not used: it writes `latest.weights.h5` in place
and its metadata JSON after it without a rename, so a kill during the write
leaves a broken file or weights one epoch ahead of the recorded epoch; it
restores mid-epoch backups (`save_freq=N`) from the start of that epoch; and it
deletes its backup at the end of every `fit` call, which staged training (one
`fit` per stage) cannot use.
"""

import math
import os

import keras

from sft_keras.errors import ConfigError
from sft_keras.run import CheckpointDir


def _link_or_copy(source, target):
    tmp = os.path.join(os.path.dirname(target), f".tmp-link-{os.path.basename(target)}")
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(source, tmp)
    except OSError:  # No hard links here (some network file systems): copy.
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def finish_commit(checkpoints, state):
    """Points `last`/`best.weights.h5` at the epoch file `state` names; removes stale files.

    Idempotent: called after every commit and again on restart, which
    completes a commit that a kill interrupted after `state.json` was written.

    Args:
        checkpoints: `sft_keras.run.CheckpointDir`.
        state: dict. The `state.json` just written (or read back).
    """
    weights = state.get("weights")
    source = os.path.join(checkpoints.path, weights) if weights else None
    if not source or not os.path.exists(source):
        return
    _link_or_copy(source, checkpoints.weights("last"))
    if state.get("best_epoch") == state.get("last_epoch") and not state.get("step"):
        _link_or_copy(source, checkpoints.weights("best"))
    for name in os.listdir(checkpoints.path):
        if CheckpointDir.is_stale(name, weights):
            os.remove(os.path.join(checkpoints.path, name))


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # Not a number: nothing to check.


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the weights and optimizer state after each epoch, atomically, and keeps the best.

    Each finished epoch (and every `every_steps` batches inside one) is
    committed as described in this module's docstring:
    `<directory>/last.weights.h5` always, `<directory>/best.weights.h5`
    whenever `monitor` improves, and `<directory>/state.json` with the last
    epoch, the stage, and the best value. An epoch whose logs hold a NaN or
    infinite loss or monitor value is not committed, so `last` and `best`
    keep the last good weights. After the first epoch a `monitor` missing
    from the logs is a `ConfigError` naming the keys that are there.

    Args:
        directory: str or `sft_keras.run.CheckpointDir`. Where the checkpoints go.
        monitor: str. The logged quantity that decides "best", e.g. `"val_loss"`.
        mode: str. `"min"` or `"max"`.
        state: dict or None. A `state.json` read back on resume: the best
            value and epoch, and the position in the epoch, carry on from it.
        every_steps: int, default 0. Also commit after every `every_steps`
            batches of an epoch (its last batch excepted: the epoch's own
            commit follows); 0: at the end of epochs only.
        steps_per_epoch: int or None. Batches in an epoch (recorded with a
            commit inside an epoch, so that a resume can check it).

    Example:

    >>> import numpy as np, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> ckpt = AtomicCheckpoint(tempfile.mkdtemp(), monitor="loss")
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2, verbose=0,
    ...               callbacks=[ckpt])
    >>> sorted(os.listdir(ckpt.directory))
    ['best.weights.h5', 'epoch-2.weights.h5', 'last.weights.h5', 'state.json']

    Committing inside the epoch, every 3 of its 4 batches:

    >>> ckpt = AtomicCheckpoint(tempfile.mkdtemp(), monitor="loss", every_steps=3,
    ...                         steps_per_epoch=4)
    >>> _ = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2, verbose=0,
    ...               callbacks=[ckpt])
    >>> ckpt.commits
    [(0, 3), (1, 0)]
    """

    def __init__(self, directory, monitor="val_loss", mode="min", state=None, every_steps=0,
                 steps_per_epoch=None):
        super().__init__()
        self.checkpoints = (directory if isinstance(directory, CheckpointDir)
                            else CheckpointDir(directory))
        self.directory = self.checkpoints.path
        self.monitor = monitor
        self.mode = mode
        state = state or {}
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        self.stage = state.get("stage", 0)
        self.last_epoch = state.get("last_epoch", 0)
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch
        # The position: batches of `epoch` (0-based) trained so far, across a resume.
        self.epoch = self.last_epoch
        self.step = state.get("step", 0)
        self.commits = []  # (epochs finished, step) of each commit this process made.

    @property
    def best_path(self):
        return self.checkpoints.weights("best")

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0
        self._offset = self.step  # Batches a resumed epoch skipped (fit counts from 0).

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of the call: with runtime.steps_per_execution > 1,
        # one call trains several batches, so the position comes from it, not a count.
        logs = logs or {}
        before = self.step
        self.step = getattr(self, "_offset", 0) + batch + 1
        if self.steps_per_epoch:
            self.step = min(self.step, self.steps_per_epoch)
        if (self.every_steps and self.step // self.every_steps > before // self.every_steps
                and (self.steps_per_epoch is None or self.step < self.steps_per_epoch)):
            self.commit_step(logs)

    def commit_step(self, logs=None):
        """Commits the weights, optimizer state and position inside the current epoch.

        Does nothing when this position is already committed, or when the
        epoch's running loss in `logs` is NaN or infinite.

        Returns:
            bool. Whether the position is committed.
        """
        logs = logs or {}
        if self.commits[-1:] == [(self.epoch, self.step)]:
            return True
        if "loss" in logs and not _finite(logs["loss"]):
            return False
        name = self.checkpoints.step_file(self.epoch + 1, self.step)
        self._save(name)
        self.last_epoch = self.epoch
        self._commit(name, step=self.step, steps_per_epoch=self.steps_per_epoch)
        return True

    def _save(self, name):
        os.makedirs(self.directory, exist_ok=True)
        tmp = os.path.join(self.directory, f".tmp-{name}")  # Keeps the .weights.h5 suffix.
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, os.path.join(self.directory, name))

    def _commit(self, name, **position):
        state = {
            "last_epoch": self.last_epoch,
            "step": 0,
            "stage": self.stage,
            "weights": name,
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "complete": False,
            **position,
        }
        self.checkpoints.write_state(state)
        finish_commit(self.checkpoints, state)
        self.commits.append((self.last_epoch, state["step"]))

    def _improved(self, value):
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ConfigError(
                f"train.monitor={self.monitor!r} is not among the values logged after "
                f"epoch {epoch + 1}: {', '.join(sorted(logs))}. Set train.monitor to one of them."
            )
        self.epoch, self.step = epoch + 1, 0  # The next epoch starts at its first batch.
        if not all(_finite(logs[key]) for key in ("loss", self.monitor) if key in logs):
            return  # Diverged: keep the last good checkpoint (StopOnNaN reports it).
        name = self.checkpoints.epoch_file(epoch + 1)
        self._save(name)
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch = value, epoch + 1
        self.last_epoch = epoch + 1
        self._commit(name)


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and says where.

    Like `keras.callbacks.TerminateOnNaN`, but keeps what happened in
    `failure` (epoch, batch, loss value) so the caller can raise a clear
    error and exit non-zero instead of finishing with broken weights.

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(1e30), "mse")
    >>> guard = StopOnNaN()
    >>> _ = model.fit(np.full((8, 1), 1e10), np.zeros((8, 1)), epochs=3, batch_size=2,
    ...               verbose=0, callbacks=[guard])
    >>> guard.failure["epoch"], guard.failure["batch"] < 4
    (1, True)
    """

    def __init__(self):
        super().__init__()
        self.failure = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not _finite(loss) and self.failure is None:
            self.failure = {"epoch": self._epoch + 1, "batch": batch + 1, "loss": float(loss)}
            self.model.stop_training = True


class EarlyStopAfterBest(keras.callbacks.Callback):
    """Stops when `checkpoint.best_epoch` is `patience` epochs old.

    Reads the best epoch from the `AtomicCheckpoint`, so the count carries on
    across `fit` calls (stages) and across a resume. A new stage restarts
    the count: set `stage_start` (1-based epoch before the stage's first) so
    every stage gets `patience` epochs to improve. Keras's `EarlyStopping`
    resets itself at the start of every `fit` and is not saved on disk.

    Args:
        checkpoint: `AtomicCheckpoint` of the same run.
        patience: int. Epochs without improvement before stopping.
    """

    def __init__(self, checkpoint, patience):
        super().__init__()
        self.checkpoint = checkpoint
        self.patience = patience
        self.stage_start = 0
        self.stopped_epoch = None

    def start_stage(self, stage_start, first_epoch):
        """Begins a stage whose epochs follow `stage_start` (1-based, 0 for the first).

        Returns:
            bool. True when the run had already stopped early before
            `first_epoch` (0-based; a resume after early stopping): do not fit.
        """
        self.stage_start = stage_start
        since = max(self.checkpoint.best_epoch or 0, stage_start)
        return first_epoch - since >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        since = max(self.checkpoint.best_epoch or 0, self.stage_start)
        if epoch + 1 - since >= self.patience:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            print(
                f"Early stopping after epoch {epoch + 1}: {self.checkpoint.monitor} has not "
                f"improved for {self.patience} epochs (best {self.checkpoint.best} at epoch "
                f"{self.checkpoint.best_epoch}).",
                flush=True,
            )


class LoraCheckpoint(keras.callbacks.Callback):
    """Writes `last.lora.h5` every committed epoch and `best.lora.h5` when it is the best.

    "Best" is the run's `AtomicCheckpoint`'s decision (it runs first), so it
    carries across stages and resumes: a resumed run's first epoch does not
    replace `best.lora.h5` unless it beats the best epoch before the kill.
    Each file is `sft_keras.models.lora.save_lora_weights`' (LoRA matrices,
    settings, head), written atomically; with the pretrained preset it is the
    whole fine-tuned model.

    Args:
        checkpoint: `AtomicCheckpoint` of the same run (listed before this callback).
    """

    def __init__(self, checkpoint):
        super().__init__()
        self.checkpoint = checkpoint

    @property
    def best_path(self):
        return self.checkpoint.checkpoints.lora("best")

    def on_epoch_end(self, epoch, logs=None):
        from sft_keras.models.lora import save_lora_weights

        if self.checkpoint.last_epoch != epoch + 1:
            return  # Not committed (a NaN loss): keep the last good files.
        save_lora_weights(self.model, self.checkpoint.checkpoints.lora("last"))
        if self.checkpoint.best_epoch == epoch + 1:
            save_lora_weights(self.model, self.best_path)
