"""The sft-tune command: a grid search over config values.

Usage:

    sft-tune --config=configs/digits.py --workdir=/tmp/sft_tune \\
        --grid="train.learning_rate=1e-3,2e-3" --grid="train.batch_size=32,64"

See `sft_keras.tune.run_tune` for what it writes and how it resumes.
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
    flags.DEFINE_string("metric", None, "Ranking metric (default: train.monitor), e.g. val_accuracy.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        from sft_keras.tune import run_tune

        records = run_tune(f.config, f.workdir, f.grid, f.metric)
    except Preempted as e:  # SIGTERM: rerunning the command goes on with the unfinished trials.
        print(f"sft-tune: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except SftError as e:
        sys.exit(f"sft-tune: error: {e}")
    done = sum(r["status"] == "done" for r in records)
    print(f"Done: {done} of {len(records)} trials finished. "
          f"Leaderboard: {os.path.join(f.workdir, 'trials.csv')}")
    if not done:
        sys.exit("sft-tune: error: every trial failed; see trials.csv.")


def run():
    """Entry point of the `sft-tune` console script."""
    _define_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.flags_parser("sft-tune"))


if __name__ == "__main__":
    run()
