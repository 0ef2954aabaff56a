"""The sft-eval command: evaluate a trained run again, on its validation split or new data.

Usage:

    sft-eval --workdir=/tmp/sft_digits
    sft-eval --workdir=/tmp/sft_run --data=test.csv --checkpoint=last

See `sft_keras.evaluation.eval_run.evaluate_workdir`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from absl import app, flags, logging  # noqa: E402

from sft_keras import cli  # noqa: E402
from sft_keras.errors import SftError  # noqa: E402
from sft_keras.evaluation.eval_run import CHECKPOINTS, SPLITS, evaluate_workdir  # noqa: E402

def _define_flags():
    # Defined when the command runs, not at import: absl flags are global, and
    # sft_keras.training.loop defines --workdir too.
    flags.DEFINE_string("workdir", None, "A folder written by sft-train.")
    flags.DEFINE_enum("split", "validation", SPLITS, "The run's split to score (without --data).")
    flags.DEFINE_string(
        "data", None, "A file or folder of the same kind as the training data to score instead."
    )
    flags.DEFINE_enum("checkpoint", "best", CHECKPOINTS, "Which weights to load.")
    flags.DEFINE_integer("num_misclassified", 20, "Lines of misclassified.jsonl.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        f = flags.FLAGS
        metrics = evaluate_workdir(f.workdir, f.split, f.data, f.checkpoint, f.num_misclassified)
    except SftError as e:
        sys.exit(f"sft-eval: error: {e}")
    logging.info("Report written to %s", metrics["report_dir"])
    print(f"Done. Metrics: {metrics}")


def run():
    """Entry point of the `sft-eval` console script."""
    _define_flags()
    flags.mark_flags_as_required(["workdir"])
    app.run(main, flags_parser=cli.flags_parser("sft-eval"))


if __name__ == "__main__":
    run()
