"""Training callbacks sft_keras adds to Keras's own."""

import json
import os

import keras

from sft_keras.files import atomic_write_text


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the weights after each epoch, atomically, and keeps the best.

    Writes `<directory>/last.weights.h5` every epoch and
    `<directory>/best.weights.h5` whenever `monitor` improves, each through a
    temporary file and an atomic rename, so a crash mid-save never leaves a
    broken checkpoint. `<directory>/state.json` records the last epoch and
    the best value.

    Args:
        directory: str. Where the checkpoints go.
        monitor: str. The logged quantity that decides "best", e.g. `"val_loss"`.
        mode: str. `"min"` or `"max"`.

    Example:

    >>> import numpy as np, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> ckpt = AtomicCheckpoint(tempfile.mkdtemp(), monitor="loss")
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2, verbose=0,
    ...               callbacks=[ckpt])
    >>> sorted(os.listdir(ckpt.directory))
    ['best.weights.h5', 'last.weights.h5', 'state.json']
    """

    def __init__(self, directory, monitor="val_loss", mode="min"):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.mode = mode
        self.best = None
        self.best_epoch = None

    @property
    def best_path(self):
        return os.path.join(self.directory, "best.weights.h5")

    def _save(self, name):
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, f".tmp-{name}")  # Keeps the .weights.h5 suffix.
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, final)

    def _improved(self, value):
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._save("last.weights.h5")
        value = logs.get(self.monitor)
        if value is not None and self._improved(float(value)):
            self.best, self.best_epoch = float(value), epoch + 1
            self._save("best.weights.h5")
        state = {
            "last_epoch": epoch + 1,
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
        }
        atomic_write_text(os.path.join(self.directory, "state.json"), json.dumps(state, indent=2))
