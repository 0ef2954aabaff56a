"""The sft-train command: fine-tune a model from a config file.

Usage:

    sft-train --config=configs/quickstart.py --workdir=/tmp/sft_run
    python -m sft_keras.cli.train --config=configs/quickstart.py --workdir=/tmp/sft_run \\
        --config.train.epochs=3

Rerunning on the same workdir resumes an unfinished run at its last commit
(and does not retrain a finished one); `--overwrite` starts afresh, keeping
`export/`.

Exit codes: 0 done; 1 an error (one `sft-train: error: ...` line); 75
preempted, resumable: SIGTERM during training committed the position, and
rerunning the same command resumes from it. The run itself is
`sft_keras.training.train_and_evaluate`; the workdir layout is
`sft_keras.run.RunDir`'s.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sft_keras import cli  # noqa: E402
from sft_keras.errors import Preempted, SftError  # noqa: E402

def _define_flags():
    # Defined when the command starts, not at import: other commands (sft-tune)
    # import this module and define flags of the same names.
    config_flags.DEFINE_config_file(
        "config", None, "Path of a config file (configs/*.py) with a get_config() function."
    )
    flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs, metrics and exports.")
    flags.DEFINE_bool(
        "overwrite", False,
        "Start afresh: delete the workdir's checkpoints, logs and metrics (never export/). "
        "Without it, a rerun resumes an unfinished run and does not retrain a finished one.",
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        f = flags.FLAGS
        from sft_keras.training import train_and_evaluate

        metrics = train_and_evaluate(f.config, f.workdir, overwrite=f.overwrite)
    except Preempted as e:
        print(f"sft-train: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except SftError as e:
        sys.exit(f"sft-train: error: {e}")
    print(f"Done. Metrics: {metrics}")


def run():
    """Entry point of the `sft-train` console script."""
    _define_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.flags_parser("sft-train"))


if __name__ == "__main__":
    run()
