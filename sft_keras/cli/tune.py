"""The sft-tune command: a hyperparameter search over config values (Optuna).

Usage:

    sft-tune --config=configs/digits.py --workdir=/tmp/sft_tune \\
        --grid="train.learning_rate=1e-3,2e-3" --grid="train.batch_size=32,64"
    sft-tune --config=configs/digits.py --workdir=/tmp/sft_tpe --sampler=tpe \\
        --space="train.learning_rate=log(3e-4,1e-2)" --pruner=median --trials=8

Several processes given the same --workdir share the search. See
`sft_keras.tune.run_tune` for what it writes and how it resumes.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from absl import app, flags  # noqa: E402

from sft_keras import cli  # noqa: E402
from sft_keras.errors import Preempted, SftError  # noqa: E402

def _define_flags():
    # Defined when the command runs, not at import: absl flags are global.
    from ml_collections import config_flags

    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Path of a config file (configs/*.py).")
    if "workdir" not in flags.FLAGS:
        flags.DEFINE_string("workdir", None, "Folder for the trials and the leaderboard.")
    flags.DEFINE_multi_string("grid", [], 'A config key and its values: "train.learning_rate=1e-4,1e-3".')
    flags.DEFINE_multi_string("space", [], 'A config key and a distribution: "key=log(1e-5,3e-4)", '
                              '"key=(0.1..0.5)" (uniform) or "key=(0.6,0.8,1.0)" (choices).')
    flags.DEFINE_string("sampler", "grid", "grid (every combination, in order), random or tpe.")
    flags.DEFINE_string("pruner", "none", "none, median or asha: stop trials behind after an epoch.")
    flags.DEFINE_integer("trials", None, "Stop at this many trials (default: the grid's size, or 10).")
    flags.DEFINE_float("max_minutes", None, "Start no trial after this many minutes (a running one "
                       "finishes).")
    flags.DEFINE_string("metric", None, "Ranking metric (default: train.monitor), e.g. val_accuracy.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        from sft_keras.tune import run_tune

        records = run_tune(f.config, f.workdir, f.grid, f.metric, spaces=f.space,
                           sampler=f.sampler, pruner=f.pruner, trials=f.trials,
                           max_minutes=f.max_minutes)
    except Preempted as e:  # SIGTERM: rerunning the command goes on with the unfinished trials.
        print(f"sft-tune: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except SftError as e:
        sys.exit(f"sft-tune: error: {e}")
    done = [r for r in records if r["status"] == "done"]
    pruned = sum(r["status"] == "pruned" for r in records)
    print(f"Done: {len(done)} of {len(records)} trials finished, {pruned} pruned. "
          f"Leaderboard: {os.path.join(f.workdir, 'trials.csv')}")
    best = os.path.join(f.workdir, "best.json")
    if done and os.path.exists(best):
        import json

        with open(best, encoding="utf-8") as fh:
            best = json.load(fh)
        print(f"Best: {best['trial']} ({best['overrides']}), {best['metric_name']}="
              f"{best['metric']:.4g}. Config: {os.path.join(f.workdir, 'best_config.py')}. "
              f"Export: {best['export_path'] or 'none (export.enabled=False)'}")
    if not done:
        sys.exit("sft-tune: error: every trial failed; see trials.csv.")


def run():
    """Entry point of the `sft-tune` console script."""
    _define_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.flags_parser("sft-tune"))


if __name__ == "__main__":
    run()
