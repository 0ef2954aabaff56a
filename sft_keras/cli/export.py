"""Export a finished run as a SavedModel for TF Serving: the sft-export command.

Usage:

    sft-export --workdir=/tmp/sft_run
    sft-export --workdir=/tmp/sft_run --export_dir=/models/my_model --version=3 \\
        --checkpoint=last --overwrite

Rebuilds the model from `<workdir>/config.json`, `labels.txt` and
`checkpoints/<checkpoint>.weights.h5` (`sft_keras.run.load_run`) and writes
`<export_dir>/<version>/` atomically, exactly as `sft-train` does at the end
of a run. An existing version is an error unless `--overwrite`.

The flags are absl's global flags (`--workdir` is also `sft-train`'s), so this
module is only the command; from Python use
`sft_keras.run.load_run(workdir).export(...)`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from absl import app, flags  # noqa: E402

from sft_keras import cli  # noqa: E402
from sft_keras.errors import SftError  # noqa: E402


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from sft_keras.serving.export import check_version
    from sft_keras.run import RunDir, load_run

    values = flags.FLAGS
    workdir, export_dir, version = values.workdir, values.export_dir, values.version
    try:
        if version is not None:  # Fail before the model is rebuilt.
            check_version(export_dir or RunDir(workdir).export, version, values.overwrite)
        run = load_run(workdir, checkpoint=values.checkpoint)
        path = run.export(export_dir, version=version, overwrite=values.overwrite)
    except SftError as e:
        sys.exit(f"sft-export: error: {e}")
    print(f"Exported SavedModel to {path}")


def _define_flags():
    # Defined when the command runs, not at import: absl flags are global and
    # `--workdir` is also sft-train's, so importing both modules (pytest's
    # doctest collection does) must not define it twice.
    flags.DEFINE_string("workdir", None, "Workdir of a finished sft-train run.")
    flags.DEFINE_string(
        "export_dir", None, "Folder holding the versions. Default: <workdir>/export.")
    flags.DEFINE_integer(
        "version", None, "Version to write. Default: one more than the highest present.",
        lower_bound=1)
    flags.DEFINE_string(
        "checkpoint", "best", "'best', 'last', or the path of a .weights.h5 file.")
    flags.DEFINE_bool("overwrite", False, "Replace the version if it exists.")
    flags.mark_flags_as_required(["workdir"])


def run():
    """Entry point of the `sft-export` console script."""
    _define_flags()
    app.run(main, flags_parser=cli.flags_parser("sft-export"))


if __name__ == "__main__":
    run()
