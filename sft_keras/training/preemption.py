"""Preemption: SIGTERM finishes the current training step, commits, and stops the run.

Kubernetes (pod eviction, `kubectl delete`), Slurm (`scancel`, the time
limit) and spot/preemptible VMs send SIGTERM, then SIGKILL after a grace
period. While `sft-train` trains, `SigtermWatch` turns SIGTERM into a flag;
`PreemptionCheckpoint` sees it when the current batch ends, commits the
weights, optimizer state and position in the epoch
(`AtomicCheckpoint.commit_step`) and raises `sft_keras.errors.Preempted`, and
`sft-train` exits with code 75 (`EX_TEMPFAIL`: "preempted, resumable").
Rerunning the same command resumes at that step.

A signal that arrives during the last batch of an epoch waits for the epoch's
own commit (after validation). Outside training (loading data before it,
evaluating and exporting after it) SIGTERM ends the process as usual; the
rerun resumes from the last commit all the same.
"""

import signal
import threading

import keras
from absl import logging

from sft_keras.errors import Preempted

EXIT_CODE = Preempted.exit_code  # 75: EX_TEMPFAIL.


class SigtermWatch:
    """Records SIGTERM instead of ending the process, from `__enter__` to `stop()`.

    Python runs the handler between two bytecodes of the main thread, so a
    TensorFlow step in progress finishes first. Outside the main thread
    (where handlers cannot be installed) it watches nothing.

    Example:

    >>> import os
    >>> with SigtermWatch() as watch:
    ...     os.kill(os.getpid(), signal.SIGTERM)
    ...     watch.received
    'SIGTERM'
    """

    def __init__(self):
        self.received = None
        self._previous = None

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        logging.warning("%s received: stopping after the current training step.",
                        self.received)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def stop(self):
        """Restores the previous SIGTERM handler (idempotent)."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __exit__(self, *exc_info):
        self.stop()


class PreemptionCheckpoint(keras.callbacks.Callback):
    """On SIGTERM, commits after the current batch and raises `Preempted`.

    List it after `checkpoint` (the run's `AtomicCheckpoint`), whose position
    it commits. Raising from the callback leaves `fit` at once: no
    validation and no epoch-end commit of a half-trained epoch.

    Args:
        checkpoint: the run's `sft_keras.training.callbacks.AtomicCheckpoint`.
        watch: `SigtermWatch` (anything with a `received` attribute).
    """

    def __init__(self, checkpoint, watch):
        super().__init__()
        self.checkpoint = checkpoint
        self.watch = watch

    def check(self):
        """Raises `Preempted` if the signal came (between two `fit` calls)."""
        if self.watch.received:
            raise Preempted(self._message())

    def on_train_batch_end(self, batch, logs=None):
        if not self.watch.received:
            return
        checkpoint = self.checkpoint
        if checkpoint.steps_per_epoch and checkpoint.step >= checkpoint.steps_per_epoch:
            return  # The epoch's last batch: its own commit follows (on_epoch_end).
        checkpoint.commit_step(logs)
        raise Preempted(self._message())

    def on_epoch_end(self, epoch, logs=None):
        self.check()

    def _message(self):
        checkpoint = self.checkpoint
        state = checkpoint.checkpoints.read_state()
        if not state:
            where = "nothing was committed yet, so a rerun starts afresh"
        elif state.get("step"):
            total = f" of {state['steps_per_epoch']}" if state.get("steps_per_epoch") else ""
            where = (f"committed at epoch {state['last_epoch'] + 1}, step {state['step']}{total}"
                     f" in {checkpoint.directory}")
        else:
            where = f"committed after epoch {state['last_epoch']} in {checkpoint.directory}"
        return (f"Preempted: {self.watch.received} received; training stopped, {where}. Rerun "
                f"the same command (same --workdir) to resume (exit code {EXIT_CODE}: "
                "preempted, resumable).")
