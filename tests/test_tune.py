"""sft-tune: grids, trials, the leaderboard, and resuming."""

import csv
import json
import os

import pytest

from sft_keras.config import get_default_config
from sft_keras.errors import ConfigError
from sft_keras.tune import parse_grid, run_tune

from helpers import REPO_ROOT, run_cli, write_image_folder

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
    assert list(rows[0]) == ["trial", "overrides", "metric", "status", "seconds"]
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

    images = write_image_folder(str(tmp_path / "images"), per_class=4)
    return validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.5},
        "model": {"backbone": "small_cnn", "freeze": {"batchnorm": False}},
        "train": {"epochs": 1, "batch_size": 8, "early_stopping_patience": 0},
        "export": {"enabled": False},
    })


def test_rerun_skips_finished_trials_and_reruns_a_killed_one(tiny_config, tmp_path):
    from sft_keras.tune import TRIAL_FILE

    tuned = str(tmp_path / "tune")
    records = run_tune(tiny_config, tuned, [GRID])  # Ranked by train.monitor = val_loss.
    assert [(r["trial"], r["status"]) for r in records] == [
        ("trial_0_learning_rate-0.001", "done"), ("trial_1_learning_rate-0.003", "done")]
    rows = _rows(tuned)
    losses = [float(r["metric"]) for r in rows]
    assert losses == sorted(losses)  # Lower loss first.
    for r in rows:
        metrics = json.load(open(os.path.join(tuned, r["trial"], "metrics.json")))
        assert float(r["metric"]) == pytest.approx(metrics["loss"])
    best = json.load(open(os.path.join(tuned, "best_config.json")))
    assert best == json.load(open(os.path.join(tuned, rows[0]["trial"], "config.json")))

    before = _rows(tuned)
    run_tune(tiny_config, tuned, [GRID])  # Nothing to do.
    assert _rows(tuned) == before

    killed = os.path.join(tuned, "trial_1_learning_rate-0.003")
    os.remove(os.path.join(killed, TRIAL_FILE))  # As if killed before it finished.
    stamp = os.path.join(killed, "stale.txt")
    open(stamp, "w").close()
    kept = os.path.join(tuned, "trial_0_learning_rate-0.001", "metrics.json")
    kept_mtime = os.path.getmtime(kept)
    records = run_tune(tiny_config, tuned, [GRID])
    assert [r["status"] for r in records] == ["done", "done"]
    assert not os.path.exists(stamp)  # The killed trial started afresh...
    assert os.path.exists(os.path.join(killed, TRIAL_FILE))
    assert os.path.getmtime(kept) == kept_mtime  # ...and the finished one was not rerun.


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
