"""Hyperparameter search over config values: the sft-tune command.

Usage:

    sft-tune --config=configs/digits.py --workdir=/tmp/sft_tune --sampler=tpe \\
        --space="train.learning_rate=log(3e-4,1e-2)" --space="train.batch_size=(32,64)" \\
        --pruner=median --trials=8 --max_minutes=30

Each trial is one `train_and_evaluate` run in `<workdir>/trial_<n>_<short
description>/`, a full sft-train workdir. The search is an Optuna study
stored in SQLite, `<workdir>/study.db`: `--sampler=grid` runs every
combination of the categorical choices (`--grid`, or `--space` tuples) in
order, `random` and `tpe` draw from the `--space` distributions
(`log(a,b)`, `(a..b)`, `(v1,v2,...)`). `--pruner=median|asha` stops a trial
after an epoch whose validation metric is behind the other trials' at the
same epoch (the trial is recorded as pruned).

Several `sft-tune` processes given the same `--workdir` share the study: each
takes the next trial, none is run twice. Rerunning a killed search resumes
it: a trial that was running when its process died (SIGTERM, SIGKILL, a lost
machine) is run again in the same folder, so it resumes at its last commit
(an epoch, or a step inside one) and finished epochs are not trained again.

The search stops when `--trials` trial folders exist (default: the grid's
size, or 10) or when `--max_minutes` have passed; a running trial is never
cut short by a budget: it finishes, and no trial starts after the deadline.

After each trial `<workdir>/` holds: `trials.csv` (the leaderboard: trial,
overrides, metric, status, seconds, epochs; best first), `best_config.json`
and `best_config.py` (the best trial's full config; the .py is a config file
for `sft-train --config`), `objective.png` (the metric of every trial and the
best so far) and, with two finished trials or more, `importances.json`
(Optuna's parameter importances). The best trial's export is the search's
result (`best.json` names it). The ranking metric is the validation metric
named by `train.monitor` (`val_loss` ranks by the final validation `loss`),
or `--metric` (any key of a trial's `metrics.json`, with or without `val_`).
A trial that fails with an sft_keras error (bad data, say) is recorded as
`failed: ...` and the search goes on; any other exception stops it.
"""

import ast
import contextlib
import csv
import io
import itertools
import json
import os
import pprint
import re
import socket
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from absl import logging  # noqa: E402
from ml_collections import config_dict  # noqa: E402

from sft_keras.errors import ConfigError, Preempted, SftError  # noqa: E402
from sft_keras.files import atomic_write_text  # noqa: E402

LOWER_IS_BETTER = ("loss", "mse", "mae")
COLUMNS = ("trial", "overrides", "metric", "status", "seconds", "epochs")
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "asha")
DEFAULT_TRIALS = 10  # random and tpe without --trials.
HEARTBEAT_SECONDS = 30  # A running trial's process writes a heartbeat to study.db this often;
# a trial without one for 4 times as long is failed and rerun (a process on another machine
# died). On this machine a dead process's trial is seen at once, by its pid.
STUDY_NAME = "sft-tune"


def _key_type(config, key):
    """The type of config key `key` (str where None), and whether it may be None."""
    *parents, leaf = key.split(".")
    group = config
    for parent in parents:
        group = group[parent]
    kind = group.get_type(leaf)
    nullable = group[leaf] is None  # e.g. model.weights, model.freeze.until.
    return (str if kind is type(None) else kind), nullable


def _leaf_keys(config, prefix=""):
    keys = []
    for key in sorted(config.keys()):
        value = config[key]
        if isinstance(value, config_dict.ConfigDict):
            keys.extend(_leaf_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _split_values(text):
    """Splits on commas outside brackets and quotes: "(1,2),(3,)" -> ["(1,2)", "(3,)"]."""
    values, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def _parse_value(key, text, kind, nullable, flag="--grid"):
    """Parses one grid value as the config key's type; `None` where the key may be None."""
    if text == "None" and (nullable or kind is not str):
        return None
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind in (tuple, list):
            value = ast.literal_eval(text)
            if not isinstance(value, (tuple, list)):
                value = (value,)
            return tuple(value)
        if kind is str:
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                return text[1:-1]
            return text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(
            f"{flag} value for {key} must be of type {kind.__name__}. Received: {key}={text!r}"
        ) from None


def parse_grid(spec, config):
    """Parses one `--grid` flag, `"key=v1,v2,..."`, with the config's types.

    Args:
        spec: str. A dotted config key, `=`, and comma-separated values
            (commas inside brackets or quotes do not split:
            `model.head.hidden_units=(),(64,),(128,64)`).
        config: the base `ConfigDict`; gives the valid keys and their types.

    Returns:
        `(key, [values])`.

    Raises:
        ConfigError: no `=`, no values, an unknown key (the message lists the
            valid keys), or a value that does not parse as the key's type.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> parse_grid("train.learning_rate=1e-5,3e-5", get_default_config())
    ('train.learning_rate', [1e-05, 3e-05])
    >>> parse_grid("model.head.hidden_units=(),(64,)", get_default_config())
    ('model.head.hidden_units', [(), (64,)])
    """
    key, sep, values_text = spec.partition("=")
    key = key.strip()
    if not sep or not values_text.strip():
        raise ConfigError(f"--grid must look like key=value1,value2. Received: --grid={spec!r}")
    valid = _leaf_keys(config)
    if key not in valid:
        raise ConfigError(
            f"Unknown config key {key!r} in --grid={spec!r}. Valid keys: {', '.join(valid)}."
        )
    kind, nullable = _key_type(config, key)
    values = [_parse_value(key, text, kind, nullable) for text in _split_values(values_text)]
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"--grid repeats a value for {key}. Received: --grid={spec!r}")
    return key, values


def trial_name(index, overrides):
    """`trial_<index>_<leaf>-<value>_...`, made safe for a folder name, at most ~80 chars.

    Example:

    >>> trial_name(3, [("train.learning_rate", 1e-05), ("train.batch_size", 16)])
    'trial_3_learning_rate-1e-05_batch_size-16'
    """
    parts = [f"{key.rsplit('.', 1)[-1]}-{value:.3g}" if isinstance(value, float)
             else f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in overrides]
    desc = re.sub(r"[^A-Za-z0-9.=+-]+", "_", "_".join(parts)).strip("_")[:70]
    return f"trial_{index}_{desc}" if desc else f"trial_{index}"


def _overrides_text(overrides):
    return " ".join(f"{key}={value!r}" for key, value in overrides)


def _apply(config, overrides):
    config = config_dict.ConfigDict(config.to_dict())  # A copy.
    for key, value in overrides:
        *parents, leaf = key.split(".")
        group = config
        for parent in parents:
            group = group[parent]
        group[leaf] = value
    return config


def _metric_name(metric, config):
    name = metric or config.train.monitor
    return name, name[4:] if name.startswith("val_") else name


# === The search space ===

class Dimension:
    """One searched config key: its Optuna distribution and how a value maps to the config.

    Categorical choices that Optuna cannot store (tuples, lists) are stored as
    their `repr` and mapped back.
    """

    def __init__(self, key, distribution, values=None):
        self.key, self.distribution, self.values = key, distribution, values

    @property
    def categorical(self):
        return self.values is not None

    def decode(self, param):
        if self.values is None:
            return param
        return {_choice(v): v for v in self.values}[param]

    def __repr__(self):
        return f"Dimension({self.key!r}, {self.distribution!r})"


def _choice(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _categorical(key, values):
    from optuna.distributions import CategoricalDistribution

    return Dimension(key, CategoricalDistribution([_choice(v) for v in values]), list(values))


_RANGE = re.compile(r"^(log|uniform|int)?\s*\((.*)\)$", re.S)


def parse_space(spec, config, source="--space"):
    """Parses one `--space` flag: a config key and a distribution to search.

    Args:
        spec: str. `key=log(a,b)` (log-uniform between a and b),
            `key=(a..b)` or `key=uniform(a,b)` (uniform), or
            `key=(v1,v2,...)` (categorical, values parsed with the key's
            type, e.g. `model.head.hidden_units=((),(64,))`). An int key
            draws ints (`train.batch_size=log(16,128)`).
        config: the base `ConfigDict`; gives the valid keys and their types.
        source: str. Where `spec` came from, for errors: `--space` or
            `tune.space`.

    Returns:
        A `Dimension` (`key`, `distribution`: an Optuna distribution).

    Raises:
        ConfigError: the flag does not parse, names an unknown key, or gives
            bounds that are not numbers with low < high (and low > 0 for log).

    Example:

    >>> from sft_keras.config import get_default_config
    >>> parse_space("train.learning_rate=log(1e-5,3e-4)", get_default_config())
    Dimension('train.learning_rate', FloatDistribution(high=0.0003, log=True, low=1e-05, step=None))
    >>> parse_space("train.layerwise_lr_decay=(0.6,0.8,1.0)", get_default_config()).values
    [0.6, 0.8, 1.0]
    >>> parse_space("train.batch_size=(16..64)", get_default_config()).distribution
    IntDistribution(high=64, log=False, low=16, step=1)
    """
    from optuna.distributions import FloatDistribution, IntDistribution

    flag = f"{source}={spec!r}" if source == "--space" else f"{source} entry {spec!r}"
    key, sep, text = spec.partition("=")
    key, text = key.strip(), text.strip()
    match = _RANGE.match(text)
    if not sep or not match:
        raise ConfigError(f"{source} must look like key=log(a,b), key=(a..b) or "
                          f"key=(v1,v2,...). Received: {flag}")
    valid = _leaf_keys(config)
    if key not in valid:
        raise ConfigError(f"Unknown config key {key!r} in {flag}. Valid keys: {', '.join(valid)}.")
    kind, nullable = _key_type(config, key)
    form, inner = match.group(1), match.group(2).strip()
    if form is None and ".." not in inner:  # Categorical: (v1,v2,...).
        texts = _split_values(inner)
        if texts and texts[-1] == "" and len(texts) > 1:
            texts = texts[:-1]  # "(v,)"
        if not all(texts):
            raise ConfigError(f"{source} has an empty choice for {key}. Received: {flag}")
        values = [_parse_value(key, t, kind, nullable, flag=source) for t in texts]
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{source} repeats a value for {key}. Received: {flag}")
        return _categorical(key, values)
    bounds = inner.split("..") if form is None else _split_values(inner)
    try:
        low, high = (float(b) for b in bounds)
    except ValueError:
        raise ConfigError(f"{source} bounds for {key} must be two numbers. Received: {flag}") from None
    if kind not in (int, float):
        raise ConfigError(f"{source} ranges need a number key; {key} is a {kind.__name__}: give "
                          f"choices, key=(v1,v2). Received: {flag}")
    if not low < high or (form == "log" and low <= 0):
        raise ConfigError(f"{source} needs low < high{' and low > 0 for log' * (form == 'log')} "
                          f"for {key}. Received: {flag}")
    if kind is int or form == "int":
        if low != int(low) or high != int(high):
            raise ConfigError(f"{source} bounds for int key {key} must be ints. Received: {flag}")
        return Dimension(key, IntDistribution(int(low), int(high), log=form == "log"))
    return Dimension(key, FloatDistribution(low, high, log=form == "log"))


def build_space(config, grids=(), spaces=()):
    """The `Dimension`s of `--grid` (categorical) and `--space` flags, then `tune.space`.

    An entry of the config's `tune.space` is left out where a flag names its key.
    """
    dims = [_categorical(*parse_grid(spec, config)) for spec in grids]
    dims += [parse_space(spec, config) for spec in spaces]
    flagged = {d.key for d in dims}
    from_config = [parse_space(spec, config, source="tune.space") for spec in config.tune.space]
    dims += [d for d in from_config if d.key not in flagged]
    keys = [d.key for d in dims]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"A key appears in two --grid/--space flags. Received keys: {keys}")
    if not dims:
        raise ConfigError('Pass at least one --grid="key=v1,v2" or --space="key=log(a,b)" '
                          "flag, or set tune.space in the config.")
    return dims


def _sampler(name, dims, seed, budget=DEFAULT_TRIALS):
    import optuna

    if name not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}. "
                          f"Received: --sampler={name!r}")
    if name == "grid":
        ranges = [d.key for d in dims if not d.categorical]
        if ranges:
            raise ConfigError(f"--sampler=grid needs choices, not ranges, for {', '.join(ranges)}: "
                              "use --sampler=random or tpe, or give key=(v1,v2). "
                              f"Received: --sampler={name!r}")
        return optuna.samplers.GridSampler(
            {d.key: d.distribution.choices for d in dims}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's default is 10 random trials before TPE models anything: most of a
    # 12-trial budget. A third of the budget (at least 3, at most 10) explores first.
    return optuna.samplers.TPESampler(n_startup_trials=max(3, min(10, budget // 3)), seed=seed)


def _pruner(name):
    import optuna

    if name not in PRUNERS:
        raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}. "
                          f"Received: --pruner={name!r}")
    if name == "median":
        # Prune from the 3rd trial on, once an epoch is behind the median of the others'.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


# === Pruning ===

def pruning_callback(trial, monitor, required=True, reports_per_epoch=1):
    """A Keras callback that reports `monitor` to an Optuna trial after each epoch.

    When the study's pruner says the trial is behind, it raises
    `optuna.TrialPruned`, which ends `fit` after the epoch's commit (sft_keras's
    checkpoint callbacks run first) and is recorded as a pruned trial.

    With `reports_per_epoch=k > 1` it also evaluates the model on the
    validation split k-1 times inside each epoch (after 1/k, 2/k, ... of its
    batches), so that a search of one-epoch trials can prune. The training
    metrics of the epoch are saved and restored around each evaluation. Report
    `j` (0-based) of epoch `e` is Optuna step `e * k + j`; the epoch's end is
    step `e * k + k - 1`.

    Args:
        trial: `optuna.trial.Trial`.
        monitor: str. The epoch log key, e.g. `val_accuracy` or `val_loss`.
        required: bool. Whether a missing `monitor` is an error (pruning
            needs it); if False such epochs are not reported.
        reports_per_epoch: int >= 1. Reports (and chances to prune) per epoch.

    Returns:
        A `keras.callbacks.Callback`. The training loop hands it the
        validation data and the epoch's length (`use_validation_data`).

    Example:

    >>> import optuna
    >>> study = optuna.create_study(direction="maximize")
    >>> callback = pruning_callback(study.ask(), "val_accuracy")
    >>> callback.on_epoch_end(0, {"val_accuracy": 0.5})
    """
    import keras
    import optuna

    k = int(reports_per_epoch)

    class PruneAfterEpoch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.trial, self.monitor = trial, monitor
            self.validation_data, self.steps_per_epoch, self._offset = None, None, 0
            self._epoch, self._next, self.epochs = 0, 1, None

        def use_validation_data(self, validation_data, steps_per_epoch, epochs=None):
            """Called by the training loop before `fit`: what mid-epoch reports evaluate,
            the batches in an epoch and the epochs in the run (all stages)."""
            self.validation_data, self.steps_per_epoch = validation_data, steps_per_epoch
            self.epochs = epochs

        def on_epoch_begin(self, epoch, logs=None):
            # A resumed epoch starts at a later batch; fit counts its batches from 0.
            steps = (self.params or {}).get("steps")
            self._offset = (self.steps_per_epoch - steps) if self.steps_per_epoch and steps else 0
            self._epoch, self._next = epoch, 1
            if self.steps_per_epoch:  # Reports the skipped part of the epoch already made.
                while self._next < k and self._at(self._next) <= self._offset:
                    self._next += 1

        def _at(self, j):
            return -(-j * self.steps_per_epoch // k)  # ceil(j * steps / k)

        def on_train_batch_end(self, batch, logs=None):
            if k <= 1 or self.validation_data is None or not self.steps_per_epoch:
                return
            step = self._offset + batch + 1
            if self._next >= k or step < self._at(self._next) or step >= self.steps_per_epoch:
                return
            while self._next < k and step >= self._at(self._next):
                self._next += 1
            value = self._evaluate()
            self._report(value, self._epoch * k + self._next - 2,
                         f"{step} of {self.steps_per_epoch} steps into epoch {self._epoch + 1}")

        def _evaluate(self):
            # evaluate() resets the compiled metrics, which hold the epoch's running
            # training loss and accuracy: keep their state and put it back.
            saved = [(v, keras.ops.convert_to_numpy(v)) for m in self.model.metrics
                     for v in m.variables]
            try:
                logs = self.model.evaluate(self.validation_data, verbose=0, return_dict=True)
            finally:
                for variable, value in saved:
                    variable.assign(value)
            key = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
            if key not in logs:
                raise ConfigError(
                    f"Pruning needs the metric at every report, and {self.monitor!r} is not "
                    f"among the validation metrics {sorted('val_' + n for n in logs)}: pass "
                    f"--metric=<one of them> or --pruner=none. Received: --metric={self.monitor!r}")
            return float(logs[key])

        def _report(self, value, step, where, prune=True):
            # The last epoch's report is recorded but never prunes: the training is done,
            # and the finished trial's metric is worth more than a "pruned" row.
            self.trial.report(value, step)
            if prune and self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned {where}: {self.monitor}={value:.4g}")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if self.monitor not in logs and not required:
                return
            if self.monitor not in logs:
                raise ConfigError(
                    f"Pruning needs the metric in every epoch's logs, and {self.monitor!r} is "
                    f"not among {sorted(logs)}: pass --metric=<one of them> or --pruner=none. "
                    f"Received: --metric={self.monitor!r}")
            last = self.epochs is not None and epoch + 1 >= self.epochs
            self._report(float(logs[self.monitor]), epoch * k + k - 1, f"after epoch {epoch + 1}",
                         prune=not last)

    return PruneAfterEpoch()


# === The study ===

def _storage(workdir):
    import optuna

    return optuna.storages.RDBStorage(
        f"sqlite:///{os.path.abspath(os.path.join(workdir, 'study.db'))}",
        engine_kwargs={"connect_args": {"timeout": 120}},  # Other processes' writes wait.
        heartbeat_interval=HEARTBEAT_SECONDS, grace_period=4 * HEARTBEAT_SECONDS,
        heartbeat_stale_trial_callback=_retry,
    )


def _retry(study, trial):
    """Queues a killed trial again, in its folder (it resumes there) with its epochs' values."""
    import optuna

    optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, trial)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_dead_trials(study):
    """Fails and requeues running trials whose process on this machine has died."""
    import optuna

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == host and attrs.get("pid") and not _pid_alive(attrs["pid"]):
            try:
                study._storage.set_trial_state_values(
                    trial._trial_id, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # Another process got there first.
            _retry(study, study._storage.get_trial(trial._trial_id))


def _check_same_search(study, settings):
    previous = study.user_attrs.get("settings")
    if previous is None:
        study.set_user_attr("settings", settings)
    elif previous != settings:
        changed = sorted(k for k in settings if previous.get(k) != settings.get(k))
        raise ConfigError(
            f"The tune folder holds a search with other settings ({', '.join(changed)}: "
            f"{ {k: previous.get(k) for k in changed} }); use another --workdir to search "
            f"anew. Received: { {k: settings[k] for k in changed} }")


def _records(study, dims, reports_per_epoch=1):
    """One record per trial folder (its latest trial), in trial-number order."""
    import optuna

    states = optuna.trial.TrialState
    by_dir = {}
    for trial in study.get_trials(deepcopy=False):
        params = trial.params if trial.state != states.WAITING else {
            **trial.system_attrs.get("fixed_params", {}), **trial.params}
        overrides = [(d.key, d.decode(params[d.key])) for d in dims if d.key in params]
        name = trial.user_attrs.get("trial_dir") or trial_name(trial.number, overrides)
        status = {states.COMPLETE: "done", states.PRUNED: "pruned", states.RUNNING: "running",
                  states.WAITING: "waiting"}.get(trial.state)
        if trial.state == states.FAIL:
            status = f"failed: {trial.user_attrs['error']}" if "error" in trial.user_attrs \
                else "failed"
        # Optuna step e * k + j is report j of epoch e (k reports an epoch): epochs trained.
        epochs = (round((max(trial.intermediate_values) + 1) / reports_per_epoch, 2)
                  if trial.intermediate_values else None)
        if epochs is not None and epochs == int(epochs):
            epochs = int(epochs)
        record = {"trial": name, "index": trial.number, "number": trial.number,
                  "overrides": _overrides_text(overrides), "params": overrides,
                  "metric": trial.value if trial.state == states.COMPLETE else None,
                  "status": status, "seconds": trial.user_attrs.get("seconds"),
                  "epochs": epochs, "export_path": trial.user_attrs.get("export_path"),
                  "intermediate": dict(trial.intermediate_values)}
        first = by_dir.get(name)
        if first is not None:  # A retry: keep the first number as the trial's index.
            record["index"] = first["index"]
        by_dir[name] = record
    return sorted(by_dir.values(), key=lambda r: r["index"])


def _best(records, lower):
    done = [r for r in records if r["status"] == "done" and r["metric"] is not None]
    if not done:
        return None
    return min(done, key=lambda r: ((r["metric"] if lower else -r["metric"]), r["index"]))


def _write_leaderboard(workdir, records, lower):
    def rank(record):
        value = record.get("metric")
        if record["status"] == "done" and value is not None:
            return (0, value if lower else -value, record["index"])
        return (1, 0, record["index"])

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in sorted(records, key=rank):
        value, seconds = record.get("metric"), record.get("seconds")
        writer.writerow([
            record["trial"], record["overrides"], "" if value is None else repr(value),
            record["status"], "" if seconds is None else f"{seconds:.1f}",
            "" if record["epochs"] is None else record["epochs"],
        ])
    atomic_write_text(os.path.join(workdir, "trials.csv"), out.getvalue())


def _write_best_config(workdir, best, metric_name, config):
    from sft_keras.config import validate_config
    from sft_keras.run import RunDir

    from sft_keras.training.optimizers import resolve_recipe

    # The values the trial trained with ('auto' keys resolved), as its config.json holds.
    config_dict_ = resolve_recipe(validate_config(_apply(config, best["params"])))[0].to_dict()
    with open(RunDir(os.path.join(workdir, best["trial"])).config_path, encoding="utf-8") as f:
        atomic_write_text(os.path.join(workdir, "best_config.json"), f.read())
    source = (
        f'"""The best config of the sft-tune search in {workdir}.\n\n'
        f"{best['trial']}: {best['overrides']}; {metric_name}={best['metric']!r}.\n\n"
        f"Run:\n\n    sft-train --config={os.path.join(workdir, 'best_config.py')} "
        "--workdir=/tmp/sft_best\n"
        '"""\n\nfrom ml_collections import config_dict\n\n\n'
        "def get_config(arg=None):\n"
        f"    return config_dict.ConfigDict({pprint.pformat(config_dict_, indent=4, width=92, sort_dicts=True)})\n"
    )
    atomic_write_text(os.path.join(workdir, "best_config.py"), source)


def _write_plot(workdir, records, metric_name, lower):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    done = [r for r in records if r["status"] == "done" and r["metric"] is not None]
    pruned = [r for r in records if r["status"] == "pruned" and r["intermediate"]]
    if done:
        ax.scatter([r["index"] for r in done], [r["metric"] for r in done], label="finished")
        best, xs, ys = None, [], []
        for r in sorted(done, key=lambda r: r["index"]):
            if best is None or (r["metric"] < best if lower else r["metric"] > best):
                best = r["metric"]
            xs.append(r["index"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="C2", label="best so far")
    if pruned:
        ax.scatter([r["index"] for r in pruned],
                   [r["intermediate"][max(r["intermediate"])] for r in pruned], marker="x",
                   color="C3", label="pruned (last reported value)")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric_name)
    ax.set_title(f"sft-tune: {metric_name} over trials")
    if done or pruned:
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    path = os.path.join(workdir, "objective.png")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)


def _write_importances(workdir, study):
    import optuna

    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 2:
        return None
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as e:  # E.g. every finished trial had the same params.
        logging.info("No parameter importances: %s", e)
        return None
    atomic_write_text(os.path.join(workdir, "importances.json"),
                      json.dumps(importances, indent=2) + "\n")
    return importances


def _write_report(workdir, study, dims, metric_name, lower, config):
    """Rewrites the search's leaderboard, best config, plot and importances; returns records."""
    records = _records(study, dims, config.tune.reports_per_epoch)
    _write_leaderboard(workdir, records, lower)
    best = _best(records, lower)
    if best is not None:
        _write_best_config(workdir, best, metric_name, config)
        atomic_write_text(os.path.join(workdir, "best.json"), json.dumps(
            {k: best[k] for k in ("trial", "overrides", "metric", "export_path")}
            | {"metric_name": metric_name}, indent=2) + "\n")
    _write_plot(workdir, records, metric_name, lower)
    _write_importances(workdir, study)
    return records


def run_tune(config, workdir, grids=(), metric=None, *, spaces=(), sampler="grid",
             pruner="none", trials=None, max_minutes=None, callbacks=()):
    """Runs a hyperparameter search (an Optuna study in `workdir/study.db`); returns its records.

    Args:
        config: the base `ConfigDict` (every trial starts from it).
        workdir: str. The tune folder: trials go to `workdir/trial_<n>_<desc>/`;
            `study.db`, `trials.csv`, `best_config.json`/`.py`, `best.json`,
            `objective.png`, `importances.json` beside them. Processes given
            the same folder share the search.
        grids: list of str, each `"key=v1,v2,..."` (see `parse_grid`):
            categorical choices.
        metric: str or None. The ranking metric; default `train.monitor`.
        spaces: list of str, each `"key=log(a,b)"`, `"key=(a..b)"` or
            `"key=(v1,v2)"` (see `parse_space`).
        sampler: str. `grid` (every combination, in order), `random` or `tpe`.
        pruner: str. `none`, `median` (Optuna's MedianPruner) or `asha`
            (SuccessiveHalvingPruner), applied after each epoch.
        trials: int or None. Stop when this many trial folders exist
            (default: the grid's size for `grid`, 10 otherwise).
        max_minutes: float or None. Start no trial after this many minutes
            (a running trial finishes).
        callbacks: sequence of `keras.callbacks.Callback` given to every
            trial's `train_and_evaluate`.

    Returns:
        list of dict, one per trial folder in trial order, with `trial`,
        `index`, `overrides`, `metric`, `status` (`done`, `pruned`,
        `failed: <error>`, `running`, `waiting`), `seconds`, `epochs`,
        `export_path`.

    Raises:
        ConfigError: a bad flag, a grid trial config that does not validate
            (checked for every grid trial before the first runs), a tune
            folder holding a search with other settings, or a `--metric` that
            a finished trial's metrics do not have.
        Preempted: SIGTERM during a trial (it is committed and queued again:
            a rerun resumes it).

    Example:

    >>> from sft_keras.config import get_default_config
    >>> records = run_tune(get_default_config(), "/tmp/tune",  # doctest: +SKIP
    ...                    spaces=["train.learning_rate=log(1e-4,1e-2)"], sampler="tpe",
    ...                    pruner="median", trials=8)
    """
    import keras
    import optuna

    from sft_keras import config as config_lib
    from sft_keras.training import train_and_evaluate

    config = config_lib.validate_config(config)
    dims = build_space(config, grids, spaces)
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"--trials must be a positive integer. Received: --trials={trials!r}")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"--max_minutes must be positive. Received: --max_minutes={max_minutes!r}")
    pruner_ = _pruner(pruner)
    combos = None
    if sampler == "grid":
        _sampler(sampler, dims, config.seed)  # Checks that every dimension is categorical.
        combos = [list(zip([d.key for d in dims], values))
                  for values in itertools.product(*(d.values for d in dims))]
        for overrides in combos:  # Every grid trial's config is valid before the first runs.
            try:
                config_lib.validate_config(_apply(config, overrides))
            except ConfigError as e:
                raise ConfigError(f"Trial {_overrides_text(overrides)}: {e}") from None
    else:
        _sampler(sampler, dims, 0)
    budget = trials or (len(combos) if combos is not None else DEFAULT_TRIALS)
    metric_name, metric_key = _metric_name(metric, config)
    reports = config.tune.reports_per_epoch
    lower = metric_key in LOWER_IS_BETTER
    deadline = None if max_minutes is None else time.time() + 60 * max_minutes

    os.makedirs(workdir, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and retries are marked experimental; they have been in Optuna since 2.9.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with contextlib.closing(_FolderLock(workdir)):
        # Under the lock: a new study.db gets its schema (and alembic stamp) when the
        # storage is opened, and two processes starting together would both write it.
        storage = _storage(workdir)
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=storage, load_if_exists=True,
            direction="minimize" if lower else "maximize")
        _check_same_search(study, {
            "space": [f"{d.key}: {d.distribution!r}" for d in dims], "sampler": sampler,
            "metric": metric_name, "pruner": pruner,
            "config": json.dumps(config.to_dict(), sort_keys=True, default=repr)})
        if combos is not None and not study.get_trials(deepcopy=False):
            for overrides in combos:  # Queued in order: each is taken by one process only.
                study.enqueue_trial({d.key: _choice(v) for d, (_, v) in zip(dims, overrides)})
        worker = study.user_attrs.get("workers", 0)  # Each process its own sampler seed.
        study.set_user_attr("workers", worker + 1)
    study.sampler = _sampler(sampler, dims, config.seed + worker, budget)
    study.pruner = pruner_
    host, pid = socket.gethostname(), os.getpid()
    states = optuna.trial.TrialState

    lock, current = {"held": None}, {"trial": None}

    def objective(trial):
        current["trial"] = trial.number
        params = [(d.key, d.decode(_suggest(trial, d))) for d in dims]
        name = trial.user_attrs.get("trial_dir") or trial_name(trial.number, params)
        trial.set_user_attr("trial_dir", name)
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
        lock["held"].close()  # Other processes may now count this trial and start theirs.
        trial_config = _apply(config, params)
        trial_dir = os.path.join(workdir, name)
        resumed = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(
            study.get_trials(deepcopy=False)[trial.number])
        print(f"=== {name}: {_overrides_text(params)}"
              + (f" (resuming trial {resumed})" if resumed is not None else ""), flush=True)
        keras.backend.clear_session()
        # Every epoch's metric goes to the study (the pruner, the plot, the epochs column).
        extra = [*callbacks, pruning_callback(trial, metric_name, required=pruner != "none",
                                              reports_per_epoch=reports)]
        start = time.time()
        seconds = trial.user_attrs.get("seconds") or 0.0
        try:
            trial_config = config_lib.validate_config(trial_config)
            metrics = train_and_evaluate(trial_config, trial_dir, callbacks=extra)
        except Preempted:
            trial.set_user_attr("seconds", seconds + time.time() - start)
            raise
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", seconds + time.time() - start)
            raise
        except SftError as e:
            trial.set_user_attr("seconds", seconds + time.time() - start)
            trial.set_user_attr("error", str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise _TrialFailed(str(e)) from e
        trial.set_user_attr("seconds", seconds + time.time() - start)
        if metric_key not in metrics:
            known = sorted(k for k, v in metrics.items() if isinstance(v, float))
            raise ConfigError(
                f"--metric {metric_name!r} is not among the trial's metrics: {known}. "
                f"Received: --metric={metric_name!r}")
        trial.set_user_attr("export_path", metrics.get("export_path"))
        return float(metrics[metric_key])

    def after_trial(study_, frozen):
        records = _write_report(workdir, study_, dims, metric_name, lower, config)
        best = _best(records, lower)
        record = next((r for r in records if r["number"] == frozen.number), None)
        status = record["status"] if record else frozen.state.name.lower()
        print(f"=== {frozen.user_attrs.get('trial_dir')}: {status}, {metric_name}="
              f"{frozen.value}; best so far: {best and best['trial']}", flush=True)

    while True:
        handle = _FolderLock(workdir)
        lock["held"] = handle
        try:
            _fail_dead_trials(study)
            optuna.storages.fail_stale_trials(study)
            all_trials = study.get_trials(deepcopy=False)
            waiting = [t for t in all_trials if t.state == states.WAITING]
            retries = [t for t in waiting if "trial_dir" in t.user_attrs]
            folders = {t.user_attrs["trial_dir"] for t in all_trials if "trial_dir" in t.user_attrs}
            if not retries:
                if len(folders) >= budget:
                    break
                if combos is not None and not waiting:
                    break  # The grid is done.
                if deadline is not None and time.time() >= deadline:
                    print(f"=== --max_minutes={max_minutes} reached: no new trial starts.",
                          flush=True)
                    break
            elif deadline is not None and time.time() >= deadline:
                print(f"=== --max_minutes={max_minutes} reached: no new trial starts "
                      f"({len(retries)} interrupted trial(s) left to resume).", flush=True)
                break
            try:
                study.optimize(objective, n_trials=1, catch=(_TrialFailed,),
                               callbacks=[after_trial])
            except Preempted:  # Committed; queued again, in its folder, for a rerun to resume.
                _retry(study, study.trials[current["trial"]])
                _write_report(workdir, study, dims, metric_name, lower, config)
                raise
        finally:
            handle.close()
    return _write_report(workdir, study, dims, metric_name, lower, config)


def _suggest(trial, dim):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    d = dim.distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(dim.key, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(dim.key, d.low, d.high, log=d.log)
    return trial.suggest_float(dim.key, d.low, d.high, log=d.log)


class _TrialFailed(Exception):
    """A trial's sft_keras error: Optuna records the trial as failed and the search goes on."""


class _FolderLock:
    """Holds `<workdir>/study.lock` (fcntl.flock) from creation until `close()`."""

    def __init__(self, workdir):
        import fcntl

        self._file = open(os.path.join(workdir, "study.lock"), "a")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def close(self):
        if not self._file.closed:
            self._file.close()  # Closing releases the flock.
