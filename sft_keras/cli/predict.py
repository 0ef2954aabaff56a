"""The sft-predict command: predict with an exported SavedModel.

Usage:

    sft-predict --model=/tmp/sft_run/export --input=photos/ --output=predictions.jsonl
    sft-predict --model=/tmp/sft_run/export/2 --input=reviews.csv --text_column=review

See `sft_keras.serving.predict.predict_file` for the inputs it reads and
what it writes.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.

import json  # noqa: E402

from sft_keras.serving.predict import predict_file  # noqa: E402

def main(argv):
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from sft_keras.errors import SftError

    values = flags.FLAGS
    output = None
    try:
        records = predict_file(values.model, values.input, values.batch_size,
                               values.text_column, progress=True)
        output = open(values.output, "w", encoding="utf-8") if values.output else sys.stdout
        count = 0
        for record in records:
            output.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    except SftError as e:
        sys.exit(f"sft-predict: error: {e}")
    finally:
        if output is not None and output is not sys.stdout:
            output.close()
    if values.output:
        print(f"Wrote {count} predictions to {values.output}", file=sys.stderr)


def _define_flags():
    # Defined here, not at import, so that importing this module (tests, the
    # library functions above) adds no global absl flags.
    from absl import flags

    flags.DEFINE_string("model", None, "Export folder (highest version) or a version folder.")
    flags.DEFINE_string("input", None, "Image file or folder; .txt, CSV, TSV or JSONL file.")
    flags.DEFINE_string("output", None, "JSON lines file to write. Default: stdout.")
    flags.DEFINE_integer("batch_size", 32, "Inputs per model call.", lower_bound=1)
    flags.DEFINE_string("text_column", None,
                        "Text column(s) of a table ('a,b' for pairs). Default: the training ones.")
    flags.mark_flags_as_required(["model", "input"])


def run():
    """Entry point of the `sft-predict` console script."""
    from absl import app

    _define_flags()
    from sft_keras import cli

    app.run(main, flags_parser=cli.flags_parser("sft-predict"))


if __name__ == "__main__":
    run()
