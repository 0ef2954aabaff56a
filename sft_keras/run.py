"""The run folder: every path of a workdir, and the one way a finished run is rebuilt.

`sft-train` writes a workdir; `sft-eval`, `sft-export`, `sft-tune` and the
Python API read it back. All of them go through `RunDir` (the layout) and
`load_run` (the rebuild), so they cannot disagree on a file name, on how
`labels.txt` is parsed, or on how the model is compiled.

    <workdir>/
      config.json        the full resolved, validated config
      labels.txt         class names in index order, one per line
      checkpoints/       epoch-<N>.weights.h5 (or epoch-<N>-step-<S>.weights.h5 inside
                         an epoch), last/best.weights.h5, state.json
                         (LoRA runs also last/best.lora.h5)
      logs/              TensorBoard scalars (train/ and validation/)
      training_log.csv   per-epoch losses and metrics
      metrics.json       the final evaluation of the best weights (a copy of report/'s)
      classification_report.txt/.json
      report/            metrics, per-class report, plots, worst examples,
                         thresholds.json (multilabel)
      report_<name>/     sft-eval's reports on other data
      export/<N>/        SavedModels for TF Serving, one version per export
      export_litert/<N>/, export_onnx/<N>/   .tflite / .onnx files (sft-export --format)
      .lock              while sft-train runs: its pid, host and start time
"""

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import socket
import sys
import time
import uuid
from typing import Any, List

from absl import logging

from sft_keras.errors import SftError, WorkdirError
from sft_keras.files import atomic_write_text

try:
    import fcntl
except ImportError:  # Not POSIX: a stale lock is removed without the guard.
    fcntl = None

CHECKPOINTS = ("best", "last")


class CheckpointDir:
    """The `checkpoints/` folder of a run: epoch files, `last`/`best` links and `state.json`.

    `state.json` is the commit point of an epoch (see
    `sft_keras.training.callbacks.AtomicCheckpoint`); the other files are
    named here and nowhere else.

    Args:
        path: str. The folder.

    Example:

    >>> checkpoints = CheckpointDir("/tmp/run/checkpoints")
    >>> checkpoints.weights("best"), checkpoints.epoch_file(3)
    ('/tmp/run/checkpoints/best.weights.h5', 'epoch-3.weights.h5')
    >>> checkpoints.step_file(3, 40)
    'epoch-3-step-40.weights.h5'
    """

    STATE = "state.json"

    def __init__(self, path):
        self.path = path

    @property
    def state_path(self):
        return os.path.join(self.path, self.STATE)

    def weights(self, name):
        """`<path>/<name>.weights.h5` (`name`: "best", "last", or an epoch file's stem)."""
        return os.path.join(self.path, f"{name}.weights.h5")

    def lora(self, name):
        """`<path>/<name>.lora.h5`: LoRA matrices and head (`name`: "best" or "last")."""
        return os.path.join(self.path, f"{name}.lora.h5")

    @staticmethod
    def epoch_file(epoch):
        """The file name of epoch `epoch`'s weights and optimizer state (1-based)."""
        return f"epoch-{epoch}.weights.h5"

    @staticmethod
    def step_file(epoch, step):
        """The file name of a commit inside epoch `epoch` (1-based) after `step` of its batches."""
        return f"epoch-{epoch}-step-{step}.weights.h5"

    @staticmethod
    def is_stale(name, current):
        """True for files a commit leaves behind: older epoch files and killed writes."""
        old_epoch = name.startswith("epoch-") and name.endswith(".weights.h5") and name != current
        return old_epoch or name.startswith((".tmp-", f".{CheckpointDir.STATE}."))

    def read_state(self):
        """The `state.json` dict, or None when no epoch was committed."""
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path, encoding="utf-8") as f:
            return json.load(f)

    def write_state(self, state):
        """Writes `state.json` atomically (the commit point of an epoch)."""
        os.makedirs(self.path, exist_ok=True)
        atomic_write_text(self.state_path, json.dumps(state, indent=2))


class RunDir:
    """Every path of one workdir, and the readers and writers of its small files.

    Args:
        path: str. The workdir.

    Example:

    >>> run_dir = RunDir("/tmp/run")
    >>> run_dir.config_path, run_dir.report_dir("test")
    ('/tmp/run/config.json', '/tmp/run/report_test')
    """

    # Top-level copies of the validation report's summary (`publish_summary`).
    SUMMARY_FILES = ("metrics.json", "classification_report.txt", "classification_report.json")
    # What `clear()` (`--overwrite`) deletes; `export/` versions are always kept, and so
    # is `.lock` (the run doing the clearing holds it).
    _OUTPUTS = ("checkpoints", "logs", "training_log.csv", "config.json", "labels.txt",
                "report") + SUMMARY_FILES

    def __init__(self, path):
        self.path = path
        self.checkpoints = CheckpointDir(os.path.join(path, "checkpoints"))

    def __repr__(self):
        return f"RunDir({self.path!r})"

    config_path = property(lambda self: os.path.join(self.path, "config.json"))
    labels_path = property(lambda self: os.path.join(self.path, "labels.txt"))
    logs = property(lambda self: os.path.join(self.path, "logs"))
    training_log = property(lambda self: os.path.join(self.path, "training_log.csv"))
    metrics_path = property(lambda self: os.path.join(self.path, "metrics.json"))
    export = property(lambda self: os.path.join(self.path, "export"))
    report = property(lambda self: os.path.join(self.path, "report"))
    thresholds_path = property(lambda self: os.path.join(self.report, "thresholds.json"))
    lock_path = property(lambda self: os.path.join(self.path, ".lock"))

    def export_dir(self, export_format="saved_model"):
        """`export/` (SavedModels), or `export_<format>/` (`"litert"`, `"onnx"`)."""
        return self.export if export_format == "saved_model" else os.path.join(
            self.path, f"export_{export_format}")

    def report_dir(self, name=None):
        """`report/` (the validation split), or `report_<name>/` for other data."""
        return self.report if name in (None, "validation") else os.path.join(self.path,
                                                                           f"report_{name}")

    # === Writing (sft-train) ===

    @contextlib.contextmanager
    def lock(self):
        """Holds `<workdir>/.lock` while the block runs: one training run per workdir.

        The lock file is created atomically (`O_CREAT | O_EXCL`) and holds the
        pid, host, start time and command line of the process. A lock whose
        process is no longer running on this host (killed, or the machine
        rebooted) is stale: it is taken over, with a log line. A lock of a
        running process, or of another host (whose processes cannot be
        checked from here), is a `WorkdirError` naming that process. The
        lock is removed when the block ends, also on an error.

        Raises:
            WorkdirError: another process holds the lock (also another run in
                this process).

        Example:

        >>> import tempfile
        >>> run_dir = RunDir(tempfile.mkdtemp())
        >>> with run_dir.lock():
        ...     os.path.exists(run_dir.lock_path)
        True
        >>> os.path.exists(run_dir.lock_path)
        False
        """
        os.makedirs(self.path, exist_ok=True)
        record = _lock_record()
        _acquire_lock(self.lock_path, record)
        try:
            yield
        finally:
            _release_lock(self.lock_path, record)

    def clear(self):
        """Deletes a run's checkpoints, logs, config and reports, keeping `export/`."""
        for name in self._OUTPUTS:
            path = os.path.join(self.path, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)

    def write_config(self, config):
        """Writes the validated config as `config.json`."""
        from sft_keras.config import config_to_json

        os.makedirs(self.path, exist_ok=True)
        atomic_write_text(self.config_path, config_to_json(config) + "\n")

    def write_labels(self, class_names):
        """Writes `labels.txt`: one class name per line, in class-index order."""
        os.makedirs(self.path, exist_ok=True)
        atomic_write_text(self.labels_path, "".join(f"{c}\n" for c in class_names))

    def write_thresholds(self, thresholds, source, default):
        """Writes `report/thresholds.json`: multilabel per-label thresholds and their origin."""
        os.makedirs(self.report, exist_ok=True)
        record = {"thresholds": dict(thresholds), "source": source, "default": default}
        atomic_write_text(self.thresholds_path, json.dumps(record, indent=2) + "\n")

    def publish_summary(self):
        """Copies the validation report's summary files to the top of the workdir."""
        for name in self.SUMMARY_FILES:
            source = os.path.join(self.report, name)
            if os.path.exists(source):
                shutil.copyfile(source, os.path.join(self.path, name))

    # === Reading (sft-eval, sft-export, load_run, resume) ===

    def read_config_dict(self):
        """The raw `config.json` dict; `WorkdirError` when the workdir or file is missing."""
        if not os.path.isdir(self.path):
            raise WorkdirError(f"Workdir {self.path!r} does not exist or is not a folder.")
        if not os.path.isfile(self.config_path):
            raise WorkdirError(
                f"No config.json in workdir {self.path!r}: expected {self.config_path!r}, which "
                "sft-train writes at the start of a run. Is this a workdir of sft-train?"
            )
        try:
            with open(self.config_path, encoding="utf-8") as f:
                return json.load(f)
        except ValueError as e:
            raise WorkdirError(f"Cannot parse {self.config_path!r} as JSON: {e}") from None

    def read_config(self, check_files=False):
        """The run's validated config (`check_files=False`: its data need not exist any more)."""
        from sft_keras.config import validate_config

        raw = self.read_config_dict()
        try:
            return validate_config(raw, check_files=check_files)
        except SftError as e:
            raise type(e)(f"{self.config_path}: {e}") from None

    def read_labels(self, task=None):
        """The class names of `labels.txt` (blank lines ignored), in class-index order.

        Args:
            task: str or None. Every task but `"regression"` and `"retrieval"` needs at least
                one class name (else a `WorkdirError`).
        """
        if not os.path.isfile(self.labels_path):
            raise WorkdirError(
                f"No labels.txt in workdir {self.path!r}: expected {self.labels_path!r}.")
        with open(self.labels_path, encoding="utf-8") as f:
            names = [line.rstrip("\r\n") for line in f if line.strip()]
        if task not in (None, "regression", "retrieval") and not names:
            raise WorkdirError(f"{self.labels_path} is empty, but task={task!r} needs its "
                               "class names.")
        return names

    def read_metrics(self):
        """`metrics.json` as a dict, or None when the run has not finished."""
        if not os.path.isfile(self.metrics_path):
            return None
        with open(self.metrics_path, encoding="utf-8") as f:
            return json.load(f)

    def read_thresholds(self):
        """Tuned multilabel thresholds from `report/thresholds.json` (dict), or None."""
        if not os.path.isfile(self.thresholds_path):
            return None
        with open(self.thresholds_path, encoding="utf-8") as f:
            return {str(k): float(v) for k, v in json.load(f)["thresholds"].items()}

    def checkpoint_path(self, checkpoint="best"):
        """The weights file for `checkpoint`: `"best"`, `"last"` or a `.weights.h5` path."""
        if checkpoint in CHECKPOINTS:
            path = self.checkpoints.weights(checkpoint)
            if not os.path.isfile(path):
                folder = self.checkpoints.path
                present = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
                raise WorkdirError(
                    f"No {checkpoint!r} checkpoint in workdir {self.path!r}: {path!r} does not "
                    f"exist (checkpoints/ holds: {present}). Pass checkpoint='best' or 'last' "
                    "for one that exists."
                )
            return path
        if isinstance(checkpoint, str) and checkpoint.endswith(".weights.h5"):
            if not os.path.isfile(checkpoint):
                raise WorkdirError(f"Checkpoint file {checkpoint!r} does not exist.")
            return checkpoint
        raise WorkdirError(
            "checkpoint must be 'best', 'last' or the path of a .weights.h5 file. "
            f"Received: checkpoint={checkpoint!r}"
        )


# --- The workdir lock (RunDir.lock) --------------------------------------------------


def _process_start(pid):
    """The start time of process `pid` in clock ticks after boot (Linux), or None.

    With the pid, it tells a running holder from a later process that got
    the same pid.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # After "(command name)".
    except (OSError, IndexError):
        return None
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def _lock_record():
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:500],
        "process_start": _process_start(pid),
        "token": uuid.uuid4().hex,
    }


def _read_lock(path, wait=1.0):
    """The lock's record; `{}` when it stays unreadable for `wait` s; None when it is gone.

    A lock is written right after it is created, so an empty or partial one
    is read again for a moment before it counts as unreadable (its writer was
    killed in between).
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            if isinstance(record, dict):
                return record
        except ValueError:
            pass
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.05)


def _lock_holder_alive(record):
    """False when the lock's process has ended on this host; True when it runs or cannot be told."""
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False  # Unreadable or not written by sft_keras.
    if record.get("host") != socket.gethostname():
        return True  # Another machine's process: it cannot be checked from here.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # Another user's process: it exists.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False  # Exited; only its exit status is left.
    except (OSError, IndexError):
        pass
    start = record.get("process_start")
    return start is None or _process_start(pid) in (None, start)  # Else: pid reused.


def _describe_holder(record):
    return (f"process {record.get('pid')} on host {record.get('host')!r}, started "
            f"{record.get('started')} ({record.get('command') or 'unknown command'})")


def _take_over_lock(path):
    """Removes the stale lock file at `path`, unless another process already replaced it.

    Under `flock` on the stale file: of several processes taking it over at
    once, one removes it and the others find a new file (or none) at `path`.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # NFS: an exclusive lock needs write access.
                fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return  # Already replaced (a lock file is never rewritten in place).
        except FileNotFoundError:
            return
        os.remove(path)
    finally:
        os.close(fd)


def _acquire_lock(path, record):
    workdir = os.path.dirname(path)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:
                continue  # Released meanwhile.
            if _lock_holder_alive(holder):
                here = holder.get("host") == socket.gethostname()
                what_to_do = (
                    f"Wait for it to finish, or stop it (kill {holder.get('pid')}) and rerun to "
                    f"resume"
                    if here else
                    "Wait for it to finish or stop it; if it is no longer running (its machine "
                    f"went down), delete {path!r} and rerun to resume"
                )
                raise WorkdirError(
                    f"Workdir {workdir!r} is in use by another training run: "
                    f"{_describe_holder(holder)}; its lock is {path!r}. Two runs on one workdir "
                    f"would overwrite each other's checkpoints. {what_to_do}, or pass another "
                    f"--workdir."
                )
            logging.warning(
                "Workdir %s: taking over the lock of %s, which is no longer running.",
                workdir, _describe_holder(holder) if holder else "an unreadable lock file",
            )
            _take_over_lock(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return
    raise WorkdirError(f"Cannot lock workdir {workdir!r}: {path!r} keeps being replaced by "
                       "other processes.")


def _release_lock(path, record):
    holder = _read_lock(path, wait=0)
    if holder and holder.get("token") == record["token"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        logging.warning("Workdir lock %s was not this process's any more (%s); left in place.",
                        path, _describe_holder(holder) if holder else "removed or unreadable")


@dataclasses.dataclass
class Run:
    """A trained run rebuilt from its workdir (see `load_run`).

    Attributes:
        run_dir: `RunDir`. The run's folder.
        config: the validated `ConfigDict` of the run.
        class_names: list of str in class-index order (empty for regression).
        model: the `keras.Model` with the checkpoint's weights, compiled for
            the run's task (loss with label smoothing, the run's thresholds).
        checkpoint: str. The weights file that was loaded.
        modality: the run's `sft_keras.modalities.Modality` (reads data,
            makes datasets, exports).
        task: the `sft_keras.tasks.Task` the model was compiled for.
    """

    run_dir: RunDir
    config: Any
    class_names: List[str]
    model: Any
    checkpoint: str
    modality: Any
    task: Any

    @property
    def workdir(self):
        return self.run_dir.path

    def export(self, export_dir=None, version=None, overwrite=False, format="saved_model",
               variants=None, data=None):
        """Writes the model as a SavedModel for TF Serving (as training does), LiteRT or ONNX.

        Args:
            export_dir: str or None. The folder holding the versions; None
                means `<workdir>/export` (`<workdir>/export_<format>` for
                LiteRT and ONNX).
            version: int or None. None: one more than the highest present.
            overwrite: bool. Replace an existing `version` (else `ExportError`).
            format: str. `"saved_model"`, `"litert"` or `"onnx"`
                (`sft_keras.serving.formats`).
            variants: tuple or None. LiteRT/ONNX variants; None: the run's
                `export.<format>_variants`.
            data: the modality's `load_data()` result, or None to read it
                when needed (int8 calibration).

        Returns:
            str. The path of the written version folder.
        """
        if format != "saved_model":
            from sft_keras.serving.formats import export_run, parse_formats

            parse_formats(format, "format")
            return export_run(self, format, export_dir, version=version, overwrite=overwrite,
                              variants=variants, data=data)
        info = {"backbone": self.config.model.backbone, "preset": self.config.model.preset,
                "workdir": os.path.abspath(self.workdir),
                "checkpoint": os.path.basename(self.checkpoint)}
        metrics = self.run_dir.read_metrics()
        if metrics is not None:
            info["metrics"] = metrics
        return self.modality.export(
            self.model, export_dir or self.run_dir.export, self.class_names, self.task,
            info=info, version=version, overwrite=overwrite,
        )


def load_run(workdir, checkpoint="best"):
    """Rebuilds the trained model of a workdir written by `train_and_evaluate`.

    The one rebuild of a finished run: `sft-eval`, `sft-export` and the Python
    API all use it. The model is built by the run's modality exactly as in
    training (image backbones without pretrained weights, text encoders from
    `model.preset`, which must still be readable: it holds the vocabulary),
    the checkpoint sets every weight, and the model is compiled with
    `compile_for_task` and the run's tuned thresholds, so its loss is the
    training loss. The training data is not read, and need not exist any more.

    Args:
        workdir: str. The run's folder.
        checkpoint: str, default `"best"`. `"best"` or `"last"`
            (`checkpoints/<name>.weights.h5`), or the path of a
            `.weights.h5` file.

    Returns:
        A `Run` (config, class_names, model, checkpoint, modality, task, and
        `export()`).

    Raises:
        WorkdirError: the workdir, its `config.json`, `labels.txt` or the
            checkpoint is missing or does not fit the rebuilt model.
        ConfigError: `config.json` holds a value that is not accepted.

    Example:

    >>> run = load_run("/tmp/sft_digits")  # doctest: +SKIP
    >>> run.model.predict(images)  # doctest: +SKIP
    >>> run.export()  # doctest: +SKIP
    '/tmp/sft_digits/export/2'
    """
    from sft_keras.modalities import get_modality
    from sft_keras.tasks import compile_for_task

    run_dir = RunDir(workdir)
    config = run_dir.read_config()
    weights = run_dir.checkpoint_path(checkpoint)
    class_names = run_dir.read_labels(config.task)
    modality = get_modality(config)
    model = modality.build_model(max(len(class_names), 1), pretrained=False)
    try:
        model.load_weights(weights)
    except Exception as e:  # Keras: a layer or shape mismatch; it appends whole arrays.
        raise WorkdirError(
            f"Checkpoint {weights!r} does not fit the model rebuilt from {run_dir.config_path!r} "
            f"and labels.txt ({len(class_names)} classes): "
            + " ".join(str(e).splitlines()[:3])[:400]
        ) from None
    task = compile_for_task(model, config, class_names, tuned=run_dir.read_thresholds())
    return Run(run_dir=run_dir, config=config, class_names=class_names, model=model,
               checkpoint=weights, modality=modality, task=task)
