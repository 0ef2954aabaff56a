"""Grid search over config values: the sft-tune command.

Usage:

    sft-tune --config=configs/digits.py --workdir=/tmp/sft_tune \\
        --grid="train.learning_rate=1e-3,2e-3" --grid="train.batch_size=32,64"

Every combination of the grids (their Cartesian product) is one trial, run by
`train_and_evaluate` in `<workdir>/trial_<n>_<short description>/`, a full
sft-train workdir. After each trial, `<workdir>/trials.csv` (the leaderboard:
trial, overrides, metric, status, seconds; best first) and
`<workdir>/best_config.json` (the full config of the best trial so far) are
rewritten atomically. The ranking metric is the validation metric named by
`train.monitor` (`val_loss` ranks by the final validation `loss`), or
`--metric` (any key of a trial's `metrics.json`, with or without `val_`).

Rerunning the same command resumes: finished trials are skipped; a trial
that was killed mid-way (or failed) is deleted and run again. A trial that
fails with an sft_keras error (bad data, say) is recorded as `failed: ...`
and the search goes on; any other exception stops it (rerun to resume).
"""

import ast
import csv
import io
import itertools
import json
import os
import re
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from absl import logging  # noqa: E402
from ml_collections import config_dict  # noqa: E402

from sft_keras.errors import ConfigError, Preempted, SftError  # noqa: E402
from sft_keras.files import atomic_write_text  # noqa: E402

LOWER_IS_BETTER = ("loss", "mse", "mae")
TRIAL_FILE = "trial.json"  # Written into a trial's folder when it has finished.
COLUMNS = ("trial", "overrides", "metric", "status", "seconds")


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


def _parse_value(key, text, kind, nullable):
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
            f"--grid value for {key} must be of type {kind.__name__}. Received: {key}={text!r}"
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
    *parents, leaf = key.split(".")
    group = config
    for parent in parents:
        group = group[parent]
    kind = group.get_type(leaf)
    nullable = group[leaf] is None  # e.g. model.weights, model.freeze.until.
    if kind is type(None):
        kind = str
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
    parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in overrides]
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


def _read_trial(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_leaderboard(workdir, records, metric_key):
    better_first = 1 if metric_key in LOWER_IS_BETTER else -1

    def rank(record):
        value = record.get("metric")
        done = record["status"] == "done" and value is not None
        return (0, better_first * value, record["index"]) if done else (1, 0, record["index"])

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in sorted(records, key=rank):
        value = record.get("metric")
        seconds = record.get("seconds")
        writer.writerow([
            record["trial"], record["overrides"], "" if value is None else repr(value),
            record["status"], "" if seconds is None else f"{seconds:.1f}",
        ])
    atomic_write_text(os.path.join(workdir, "trials.csv"), out.getvalue())
    done = [r for r in records if r["status"] == "done" and r.get("metric") is not None]
    if done:
        best = min(done, key=rank)
        from sft_keras.run import RunDir

        with open(RunDir(os.path.join(workdir, best["trial"])).config_path, encoding="utf-8") as f:
            atomic_write_text(os.path.join(workdir, "best_config.json"), f.read())
        return best
    return None


def run_tune(config, workdir, grids, metric=None):
    """Runs one trial per combination of `grids`; returns the trial records, in trial order.

    Args:
        config: the base `ConfigDict` (every trial starts from it).
        workdir: str. Trials go to `workdir/trial_<n>_<desc>/`; the
            leaderboard to `workdir/trials.csv`, the best config to
            `workdir/best_config.json`.
        grids: list of str, each `"key=v1,v2,..."` (see `parse_grid`).
        metric: str or None. The ranking metric; default `train.monitor`.

    Returns:
        list of dict with `trial`, `index`, `overrides`, `metric`, `status`
        (`done`, or `failed: <error>`), `seconds`.

    Raises:
        ConfigError: a bad grid, a trial config that does not validate
            (checked for every trial before the first one runs), or a
            `--metric` that a finished trial's metrics do not have.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> records = run_tune(get_default_config(), "/tmp/tune",  # doctest: +SKIP
    ...                    ["train.learning_rate=1e-3,2e-3"])
    """
    import keras

    from sft_keras import config as config_lib
    from sft_keras.training import train_and_evaluate

    if not grids:
        raise ConfigError("Pass at least one --grid=key=value1,value2.")
    config = config_lib.validate_config(config)
    parsed = [parse_grid(spec, config) for spec in grids]
    keys = [key for key, _ in parsed]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"A key appears in two --grid flags. Received keys: {keys}")
    combos = [list(zip(keys, values)) for values in itertools.product(*(v for _, v in parsed))]
    trial_configs = []
    for overrides in combos:
        try:
            trial_configs.append(config_lib.validate_config(_apply(config, overrides)))
        except ConfigError as e:
            raise ConfigError(f"Trial {_overrides_text(overrides)}: {e}") from None
    metric_name, metric_key = _metric_name(metric, config)

    os.makedirs(workdir, exist_ok=True)
    records = []
    for index, overrides in enumerate(combos):
        name = trial_name(index, overrides)
        previous = _read_trial(os.path.join(workdir, name, TRIAL_FILE))
        if previous and previous.get("status") == "done" and (
            previous.get("overrides") == _overrides_text(overrides)
        ):
            records.append(previous)
        else:
            records.append({"trial": name, "index": index, "overrides": _overrides_text(overrides),
                            "metric": None, "status": "pending", "seconds": None})

    for record, trial_config in zip(records, trial_configs):
        if record["status"] == "done":
            logging.info("Skipping finished %s (%s=%s)", record["trial"], metric_name,
                         record["metric"])
            continue
        trial_dir = os.path.join(workdir, record["trial"])
        if os.path.exists(trial_dir):  # Killed or failed before: start it afresh.
            shutil.rmtree(trial_dir)
        record["status"] = "running"
        _write_leaderboard(workdir, records, metric_key)
        print(f"=== {record['trial']}: {record['overrides']}", flush=True)
        keras.backend.clear_session()
        start = time.time()
        try:
            metrics = train_and_evaluate(trial_config, trial_dir)
        except Preempted:
            raise  # SIGTERM: stop the search (a rerun restarts this trial), not only the trial.
        except SftError as e:
            record["status"] = f"failed: {e}"
            metrics = None
        record["seconds"] = time.time() - start
        if metrics is not None:
            if metric_key not in metrics:
                known = sorted(k for k, v in metrics.items() if isinstance(v, float))
                raise ConfigError(
                    f"--metric {metric_name!r} is not among the trial's metrics: {known}. "
                    f"Received: --metric={metric_name!r}"
                )
            record.update(status="done", metric=metrics[metric_key], metric_name=metric_name)
            atomic_write_text(os.path.join(trial_dir, TRIAL_FILE),
                              json.dumps(record, indent=2) + "\n")
        best = _write_leaderboard(workdir, records, metric_key)
        print(f"=== {record['trial']}: {record['status']}, {metric_name}={record['metric']}; "
              f"best so far: {best and best['trial']}", flush=True)
    return records
