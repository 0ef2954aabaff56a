"""sft-tune: search spaces, samplers, pruning, budgets, the report, sharing and resuming."""

import csv
import json
import os
import signal

import keras
import pytest

from sft_keras.config import get_default_config
from sft_keras.errors import ConfigError
from sft_keras.tune import parse_grid, parse_space, run_tune

from helpers import REPO_ROOT, load_config_file, run_cli, write_image_folder

GRID = "train.learning_rate=1e-3,3e-3"


def test_parse_grid_uses_the_config_types():
    config = get_default_config()
    assert parse_grid("train.batch_size=16,32", config) == ("train.batch_size", [16, 32])
    assert parse_grid("model.freeze.until=None,-4", config) == ("model.freeze.until", [None, -4])
    assert parse_grid("model.weights=None,imagenet", config) == ("model.weights", [None, "imagenet"])
    assert parse_grid("model.head.hidden_units=(),(64,),(128, 64)", config) == (
        "model.head.hidden_units", [(), (64,), (128, 64)])
    assert parse_grid("export.enabled=true,False", config) == ("export.enabled", [True, False])
    assert parse_grid("train.optimizer=adam,'sgd'", config) == ("train.optimizer", ["adam", "sgd"])
    with pytest.raises(ConfigError, match=r"train\.batch_size must be of type int.*'a lot'"):
        parse_grid("train.batch_size=16,a lot", config)
    with pytest.raises(ConfigError, match=r"Unknown config key 'train.lr'.*Valid keys: .*"
                                          r"train\.learning_rate"):
        parse_grid("train.lr=1e-3", config)


def _rows(workdir):
    return list(csv.DictReader(open(os.path.join(workdir, "trials.csv"))))


@pytest.fixture(scope="module")
def tuned_digits(tmp_path_factory):
    """The command as a user runs it: 2 trials of small_cnn on digits, 1 epoch (88 s, loaded 2 cores)."""
    workdir = str(tmp_path_factory.mktemp("tune") / "tune")
    result = run_cli([
        "python", "-m", "sft_keras.cli.tune", f"--config={os.path.join(REPO_ROOT, 'configs', 'digits.py')}:runlocal",
        f"--workdir={workdir}", f"--grid={GRID}", "--config.export.enabled=False",
        "--metric=val_accuracy",
    ])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_two_trials_leaderboard_and_best_config(tuned_digits):
    tuned = tuned_digits
    rows = _rows(tuned)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert list(rows[0]) == ["trial", "overrides", "metric", "status", "seconds", "epochs"]
    assert {r["trial"] for r in rows} == {"trial_0_learning_rate-0.001", "trial_1_learning_rate-0.003"}
    accuracies = [float(r["metric"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # Best first.
    for r in rows:
        metrics = json.load(open(os.path.join(tuned, r["trial"], "metrics.json")))
        assert float(r["metric"]) == pytest.approx(metrics["accuracy"])
        assert float(r["seconds"]) > 0
    best = json.load(open(os.path.join(tuned, "best_config.json")))
    assert best == json.load(open(os.path.join(tuned, rows[0]["trial"], "config.json")))
    assert best["train"]["epochs"] == 1 and best["export"]["enabled"] is False


@pytest.fixture
def tiny_config(tmp_path):
    from sft_keras.config import validate_config

    images = write_image_folder(str(tmp_path / "images"), per_class=8)
    return validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.5},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 1, "batch_size": 4, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })


def test_parse_space_distributions_and_errors():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    config = get_default_config()
    lr = parse_space("train.learning_rate=log(1e-5,3e-4)", config)
    assert lr.distribution == FloatDistribution(1e-5, 3e-4, log=True)
    assert parse_space("model.head.dropout=(0.1..0.5)", config).distribution == (
        FloatDistribution(0.1, 0.5))
    assert parse_space("model.head.dropout=uniform(0.1,0.5)", config).distribution == (
        FloatDistribution(0.1, 0.5))
    assert parse_space("train.batch_size=log(16,128)", config).distribution == (
        IntDistribution(16, 128, log=True))
    decay = parse_space("train.layerwise_lr_decay=(0.6,0.8,1.0)", config)
    assert decay.distribution == CategoricalDistribution([0.6, 0.8, 1.0])
    units = parse_space("model.head.hidden_units=((),(64,))", config)
    assert units.distribution.choices == ("()", "(64,)")  # Stored as text; mapped back:
    assert units.decode("(64,)") == (64,)
    assert parse_space("model.freeze.batchnorm=(True,False)", config).values == [True, False]
    assert parse_space("model.freeze.adabn=(True,False)", config).values == [True, False]
    for spec, error in [
        ("train.learning_rate=1e-3", r"must look like key=log\(a,b\).*"
                                      r"Received: --space='train.learning_rate=1e-3'"),
        ("train.learning_rate=log(0,1e-3)", r"low > 0.*Received: --space='train.learning_rate="),
        ("train.learning_rate=(3e-4..1e-5)", r"low < high.*Received: --space="),
        ("train.learning_rate=log(a,b)", r"two numbers.*Received: --space="),
        ("train.optimizer=(1..2)", r"number key.*Received: --space='train.optimizer=\(1..2\)'"),
        ("train.batch_size=(16,big)", r"--space value for train.batch_size must be of type int.*"
                                       r"Received: train.batch_size='big'"),
        ("train.lr=log(1e-5,1e-3)", r"Unknown config key 'train.lr'.*train\.learning_rate"),
    ]:
        with pytest.raises(ConfigError, match=error):
            parse_space(spec, config)


def test_batchnorm_choices_are_searchable_and_reach_the_trial_config():
    from sft_keras.config import validate_config
    from sft_keras.tune import _apply, build_space

    config = validate_config(get_default_config())
    dims = build_space(config, grids=["model.freeze.adabn=True,False"],
                       spaces=["model.freeze.batchnorm=(False,True)"])
    assert [(d.key, d.distribution.choices) for d in dims] == [
        ("model.freeze.adabn", (True, False)), ("model.freeze.batchnorm", (False, True))]
    trial = _apply(config, [(d.key, d.decode(d.distribution.choices[0])) for d in dims])
    trial = validate_config(trial)
    assert (trial.model.freeze.adabn, trial.model.freeze.batchnorm) == (True, False)
    with pytest.raises(ConfigError, match=r"--space value for model.freeze.adabn must be of "
                                          r"type bool.*Received: model.freeze.adabn='yes'"):
        parse_space("model.freeze.adabn=(yes,no)", config)


def test_space_from_the_config_and_flags_that_replace_its_entries():
    from sft_keras.config import validate_config
    from sft_keras.tune import build_space

    config = get_default_config()
    config.tune.space = ("train.learning_rate=log(1e-5,3e-4)", "model.head.dropout=(0.0..0.3)")
    config = validate_config(config)
    dims = build_space(config, spaces=["model.head.dropout=(0.1,0.2)"])
    assert [(d.key, d.categorical) for d in dims] == [
        ("model.head.dropout", True), ("train.learning_rate", False)]
    config.tune.space = ("train.lr=log(1e-5,3e-4)",)
    with pytest.raises(ConfigError, match=r"Unknown config key 'train.lr' in tune.space entry"):
        build_space(config)
    bad = get_default_config()
    bad.tune.space = ("log(1e-5,3e-4)",)
    with pytest.raises(ConfigError, match=r"tune.space must be a tuple of 'key=distribution' "
                                          r"strings.*Received: tune.space=\('log"):
        validate_config(bad)


def test_grid_search_report_and_rerun(tiny_config, tmp_path):
    from sft_keras.config import validate_config

    tuned = str(tmp_path / "tune")
    records = run_tune(tiny_config, tuned, [GRID])  # Ranked by train.monitor = val_loss.
    assert [(r["trial"], r["status"]) for r in records] == [
        ("trial_0_learning_rate-0.001", "done"), ("trial_1_learning_rate-0.003", "done")]
    rows = _rows(tuned)
    assert list(rows[0]) == ["trial", "overrides", "metric", "status", "seconds", "epochs"]
    losses = [float(r["metric"]) for r in rows]
    assert losses == sorted(losses)  # Lower loss first.
    for r in rows:
        metrics = json.load(open(os.path.join(tuned, r["trial"], "metrics.json")))
        assert float(r["metric"]) == pytest.approx(metrics["loss"])
        assert r["epochs"] == "1"
    best = json.load(open(os.path.join(tuned, "best_config.json")))
    assert best == json.load(open(os.path.join(tuned, rows[0]["trial"], "config.json")))
    runnable = load_config_file(os.path.join(tuned, "best_config.py"))
    assert json.loads(json.dumps(validate_config(runnable).to_dict())) == best
    assert json.load(open(os.path.join(tuned, "best.json")))["trial"] == rows[0]["trial"]
    with open(os.path.join(tuned, "objective.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    importances = json.load(open(os.path.join(tuned, "importances.json")))
    assert list(importances) == ["train.learning_rate"]

    kept = os.path.join(tuned, rows[0]["trial"], "metrics.json")
    kept_mtime = os.path.getmtime(kept)
    records = run_tune(tiny_config, tuned, [GRID])  # Nothing to do.
    assert [r["status"] for r in records] == ["done", "done"]
    assert _rows(tuned) == rows and os.path.getmtime(kept) == kept_mtime

    with pytest.raises(ConfigError, match=r"other settings \(space: .*another --workdir"):
        run_tune(tiny_config, tuned, ["train.learning_rate=1e-3,1e-2"])


class _SigtermAtEpochEnd(keras.callbacks.Callback):
    """Sends this process a real SIGTERM at the `at`-th epoch end of the search (1-based)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.count = at, 0

    def on_epoch_end(self, epoch, logs=None):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


class _EpochsBegun(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_search_killed_mid_trial_resumes_without_redoing_epochs(tiny_config, tmp_path):
    from sft_keras.errors import Preempted

    tiny_config.train.epochs = 3
    tuned = str(tmp_path / "tune")
    with pytest.raises(Preempted):  # Trial 0's 3 epochs, then SIGTERM at trial 1's 2nd epoch end.
        run_tune(tiny_config, tuned, [GRID], callbacks=[_SigtermAtEpochEnd(5)])
    assert [r["status"] for r in _rows(tuned)] == ["done", "waiting"]

    begun = _EpochsBegun()
    records = run_tune(tiny_config, tuned, [GRID], callbacks=[begun])
    assert [r["status"] for r in records] == ["done", "done"]  # As many as without the kill.
    assert [r["trial"] for r in records] == [
        "trial_0_learning_rate-0.001", "trial_1_learning_rate-0.003"]
    assert begun.epochs == [2]  # Only trial 1's third epoch: no finished epoch trained again.
    log = open(os.path.join(tuned, records[1]["trial"], "training_log.csv")).read().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["0", "1", "2"]


def test_median_pruner_prunes_a_trial_behind_after_its_first_epoch(tiny_config, tmp_path):
    # Same seed, same initial weights: 1e-12 barely moves them, 1e-2 overshoots on these
    # 24 images (val_loss 1.6 after one epoch vs 1.04 and 1.11), behind both finished trials.
    tiny_config.train.epochs = 2
    tuned = str(tmp_path / "tune")
    records = run_tune(tiny_config, tuned, ["train.learning_rate=3e-3,1e-12,1e-2"],
                       pruner="median")
    assert [r["status"] for r in records] == ["done", "done", "pruned"]
    assert records[2]["epochs"] == 1 and records[2]["metric"] is None
    assert not os.path.exists(os.path.join(tuned, records[2]["trial"], "metrics.json"))
    assert _rows(tuned)[-1]["status"] == "pruned"


def test_reports_inside_an_epoch_reach_the_study_and_leave_training_logs_alone(
        tiny_config, tmp_path):
    import optuna

    from sft_keras.training import train_and_evaluate

    # 8 training images in batches of 2: 4 steps; reports after steps 2 and 3, and the epoch.
    tiny_config.train.batch_size = 2
    tiny_config.tune.reports_per_epoch = 3
    tuned = str(tmp_path / "tune")
    records = run_tune(tiny_config, tuned, ["train.learning_rate=3e-3"])
    study = optuna.load_study(study_name="sft-tune",
                              storage=f"sqlite:///{os.path.join(tuned, 'study.db')}")
    values = study.trials[0].intermediate_values
    assert sorted(values) == [0, 1, 2]
    assert values[2] == pytest.approx(records[0]["metric"])  # The epoch's val_loss.
    assert records[0]["epochs"] == 1
    # The mid-epoch evaluations do not touch the epoch's training loss and accuracy.
    tiny_config.tune.reports_per_epoch = 1
    tiny_config.train.learning_rate = 3e-3
    plain = str(tmp_path / "plain")
    train_and_evaluate(tiny_config, plain)
    logged = [_log_row(os.path.join(tuned, records[0]["trial"])), _log_row(plain)]
    for key in ("loss", "accuracy", "val_loss"):
        assert float(logged[0][key]) == pytest.approx(float(logged[1][key]), rel=1e-5), key


def test_median_pruner_prunes_inside_a_one_epoch_trial(tiny_config, tmp_path):
    tiny_config.train.batch_size = 2
    tiny_config.tune.reports_per_epoch = 2
    tuned = str(tmp_path / "tune")
    # Adam at 0.3 throws the weights far off within 3 steps: its val_loss after half an
    # epoch is far behind both trials' (Optuna compares the trial's best report so far).
    records = run_tune(tiny_config, tuned, ["train.learning_rate=3e-3,1e-3,0.3"],
                       pruner="median")
    assert [r["status"] for r in records] == ["done", "done", "pruned"]
    assert records[2]["epochs"] == 0.5
    assert _rows(tuned)[-1]["epochs"] == "0.5"


def test_the_last_epochs_report_is_recorded_but_never_prunes():
    import optuna

    from sft_keras.tune import pruning_callback

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = study.ask()  # The pruner says "prune" at every report above 0.
    callback = pruning_callback(trial, "val_loss")
    callback.use_validation_data(None, steps_per_epoch=4, epochs=2)
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1: val_loss=1"):
        callback.on_epoch_end(0, {"val_loss": 1.0})
    callback.on_epoch_end(1, {"val_loss": 0.5})  # The run's last epoch: finished, not pruned.
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {0: 1.0, 1: 0.5}


def _log_row(workdir):
    with open(os.path.join(workdir, "training_log.csv"), newline="") as f:
        return list(csv.DictReader(f))[0]


def test_random_search_budgets(tiny_config, tmp_path):
    tuned = str(tmp_path / "tune")
    records = run_tune(tiny_config, tuned, spaces=["train.learning_rate=log(1e-4,1e-2)"],
                       sampler="random", trials=2, pruner="asha")
    # ASHA promotes the first trial; the second only if its first epoch is at least as good.
    assert records[0]["status"] == "done" and records[1]["status"] in ("done", "pruned")
    values = [r["params"][0][1] for r in records]
    assert all(1e-4 <= v <= 1e-2 for v in values) and values[0] != values[1]
    # The deadline has passed before the next trial: it does not start.
    records = run_tune(tiny_config, tuned, spaces=["train.learning_rate=log(1e-4,1e-2)"],
                       sampler="random", trials=3, max_minutes=1e-9, pruner="asha")
    assert len(records) == 2
    with pytest.raises(ConfigError, match=r"--sampler=grid needs choices.*train.learning_rate"):
        run_tune(tiny_config, str(tmp_path / "g"), spaces=["train.learning_rate=log(1e-4,1e-2)"])
    with pytest.raises(ConfigError, match=r"--pruner must be one of none, median, asha. "
                                          r"Received: --pruner='hyperband'"):
        run_tune(tiny_config, str(tmp_path / "g"), [GRID], pruner="hyperband")


def test_bad_trial_value_fails_before_any_trial(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.batch_size=-1.*positive integer"):
        run_tune(tiny_config, str(tmp_path / "t"), ["train.batch_size=8,-1"])
    assert not os.path.exists(tmp_path / "t")


def test_bad_grid_key_is_one_error_line(tmp_path):
    result = run_cli(["python", "-m", "sft_keras.cli.tune", "--config=configs/digits.py",
                      f"--workdir={tmp_path / 'w'}", "--grid=train.lr=1e-3,1e-4"])
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sft-tune: error: Unknown config key 'train.lr'")
    assert "train.learning_rate" in last
    assert not os.path.exists(tmp_path / "w" / "trials.csv")


TINY_CONFIG_FILE = '''
from sft_keras.config import get_default_config


def get_config(arg=None):
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = {images!r}
    config.data.validation_split = 0.5
    config.model.backbone = "small_cnn"
    config.model.freeze.batchnorm = False
    config.train.epochs = 1
    config.train.batch_size = 4
    config.train.early_stopping_patience = 0
    config.export.enabled = False
    return config
'''


def test_two_processes_on_one_folder_share_trials_without_running_any_twice(tmp_path):
    import subprocess
    import sys

    import optuna

    images = write_image_folder(str(tmp_path / "images"), per_class=8)
    config_file = tmp_path / "tiny.py"
    config_file.write_text(TINY_CONFIG_FILE.format(images=images))
    tuned = str(tmp_path / "tune")
    command = [sys.executable, "-m", "sft_keras.cli.tune", f"--config={config_file}",
               f"--workdir={tuned}", "--sampler=random", "--trials=3",
               "--space=train.learning_rate=log(1e-4,1e-2)"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    started = [line.split(":")[0] for out in outputs for line in out.splitlines()
               if line.startswith("=== trial_") and "train.learning_rate=" in line
               and ": done" not in line]
    assert len(started) == 3 and len(set(started)) == 3  # Each trial run by one process, once.
    study = optuna.load_study(study_name="sft-tune", storage=f"sqlite:///{tuned}/study.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert sorted(r["status"] for r in _rows(tuned)) == ["done"] * 3
    for out in outputs:  # The one that ends first may see the other's last trial running.
        assert "Done: " in out and "Best: trial_" in out


@pytest.mark.slow
def test_search_killed_by_sigkill_resumes_the_trial_at_its_last_epoch(tmp_path):
    import subprocess
    import sys
    import time

    images = write_image_folder(str(tmp_path / "images"), per_class=40)
    config_file = tmp_path / "tiny.py"
    config_file.write_text(TINY_CONFIG_FILE.format(images=images))
    tuned = str(tmp_path / "tune")
    command = [sys.executable, "-m", "sft_keras.cli.tune", f"--config={config_file}",
               f"--workdir={tuned}", f"--grid={GRID}", "--config.train.epochs=3"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state_path = os.path.join(tuned, "trial_1_learning_rate-0.003", "checkpoints", "state.json")
    while process.poll() is None and not (
            os.path.exists(state_path) and json.load(open(state_path))["last_epoch"] >= 1):
        time.sleep(0.02)
    assert process.poll() is None, "the search finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)  # No handler runs: the trial stays "running" in study.db.
    process.wait()
    committed = json.load(open(state_path))["last_epoch"]
    assert committed < 3

    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(resuming trial 1)" in result.stdout
    assert "=== trial_0_learning_rate-0.001: train" not in result.stdout  # Done: not rerun.
    for epoch in range(1, committed + 1):  # Committed epochs are not trained again.
        assert f"Epoch {epoch}/3" not in result.stdout
    assert [r["status"] for r in _rows(tuned)] == ["done", "done"]
