"""Export a finished run as a SavedModel for TF Serving: the sft-export command.

Usage:

    sft-export --workdir=/tmp/sft_run
    sft-export --workdir=/tmp/sft_run --export_dir=/models/my_model --version=3 \\
        --checkpoint=last --overwrite

    sft-export --workdir=/tmp/sft_run --format=litert,onnx

Rebuilds the model from `<workdir>/config.json`, `labels.txt` and
`checkpoints/<checkpoint>.weights.h5` (`sft_keras.run.load_run`) and writes
`<export_dir>/<version>/` atomically, exactly as `sft-train` does at the end
of a run. An existing version is an error unless `--overwrite`.

`--format=litert` / `onnx` write `<workdir>/export_litert/<N>/` /
`export_onnx/<N>/` (`sft_keras.serving.formats`: graphs on token ids or
pixels, one file per variant), then run every file with its runtime on the
validation split and print the table of `<workdir>/report/exports.md`
(`sft_keras.evaluation.exports`); a variant whose accuracy drops more than
`export.max_accuracy_drop` below Keras is flagged.

The flags are absl's global flags (`--workdir` is also `sft-train`'s), so this
module is only the command; from Python use
`sft_keras.run.load_run(workdir).export(...)`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

from absl import app, flags  # noqa: E402

from sft_keras import cli  # noqa: E402
from sft_keras.errors import ExportError, SftError  # noqa: E402


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from sft_keras.serving.export import check_version
    from sft_keras.serving.formats import parse_formats, parse_variants
    from sft_keras.run import RunDir, load_run

    values = flags.FLAGS
    workdir, export_dir, version = values.workdir, values.export_dir, values.version
    try:
        formats = parse_formats(values.format)
        if export_dir and len(formats) > 1:
            raise ExportError(f"--export_dir holds the versions of one format; export one "
                              f"format at a time with it. Received: --format={values.format!r}")
        variants = None
        if values.variants:
            graph = [f for f in formats if f != "saved_model"]
            if len(graph) != 1:
                raise ExportError("--variants needs exactly one of --format=litert or onnx. "
                                  f"Received: --format={values.format!r}")
            variants = parse_variants(graph[0], values.variants)
        if version is not None:  # Fail before the model is rebuilt.
            for export_format in formats:
                check_version(export_dir or RunDir(workdir).export_dir(export_format), version,
                              values.overwrite)
        run = load_run(workdir, checkpoint=values.checkpoint)
        graph_folders, data = [], None
        for export_format in formats:
            calibrate = export_format == "litert" and "int8" in (
                variants or run.config.export.litert_variants)
            if export_format != "saved_model" and data is None and (values.check or calibrate):
                from sft_keras.serving.formats import load_run_data

                data = load_run_data(run, f"--format={export_format} (int8 calibration and "
                                          "the check on the validation split)")
            path = run.export(export_dir, version=version, overwrite=values.overwrite,
                              format=export_format, variants=variants, data=data)
            print(f"Exported {FORMAT_NAMES[export_format]} to {path}", flush=True)
            if export_format != "saved_model":
                graph_folders.append(path)
        if graph_folders and values.check:
            from sft_keras.evaluation.exports import (check_run_exports, display_rows,
                                                      format_table)

            rows, report = check_run_exports(run, graph_folders, data=data)
            print(format_table(display_rows(rows, workdir), run.config.export.max_accuracy_drop))
            print(f"Checked on {rows[0]['num_examples']} validation examples; table in {report}")
            flagged = [f"{r['format']} {r['variant']} ({r['accuracy']:.4f})" for r in rows
                       if r["flagged"]]
            if flagged:
                print(f"WARNING: accuracy more than export.max_accuracy_drop="
                      f"{run.config.export.max_accuracy_drop:g} below Keras "
                      f"({rows[0]['accuracy']:.4f}): " + ", ".join(flagged))
    except SftError as e:
        sys.exit(f"sft-export: error: {e}")


FORMAT_NAMES = {"saved_model": "SavedModel", "litert": "LiteRT", "onnx": "ONNX"}


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
    flags.DEFINE_string(
        "format", "saved_model", "saved_model, litert or onnx (or several, comma-separated).")
    flags.DEFINE_bool(
        "check", True, "LiteRT/ONNX: run each file on the validation split against Keras "
        "(report/exports.md). --nocheck needs no data unless the int8 LiteRT file is written.")
    flags.DEFINE_string(
        "variants", None, "LiteRT/ONNX variants, comma-separated. Default: the run's "
        "export.litert_variants / export.onnx_variants.")
    flags.mark_flags_as_required(["workdir"])


def run():
    """Entry point of the `sft-export` console script."""
    _define_flags()
    app.run(main, flags_parser=cli.flags_parser("sft-export"))


if __name__ == "__main__":
    run()
