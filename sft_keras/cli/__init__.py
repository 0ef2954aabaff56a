"""The command-line entry points (`sft-train`, `sft-eval`, `sft-export`, `sft-predict`,
`sft-tune`, `sft-chat`): thin absl mains, one module each, over the library. What they share is here:
flag parsing whose errors are one line."""

import functools
import sys

from absl import flags


def flags_parser(program):
    """Returns an absl `flags_parser` for `app.run` that turns bad flags into one error line.

    A bad flag, a bad `--config` file or a bad `--config.key=value` override
    (ml_collections raises AttributeError/KeyError/TypeError/ValueError for
    those) exits with `<program>: error: ...` instead of a traceback.

    Args:
        program: str. The command's name, e.g. `"sft-train"`.

    Example:

    >>> parse = flags_parser("sft-demo")
    >>> parse(["sft-demo", "--no_such_flag"])
    Traceback (most recent call last):
    ...
    SystemExit: sft-demo: error: Unknown command line flag 'no_such_flag'
    Run with --helpfull to see every flag.
    """
    return functools.partial(_parse, program)


def _parse(program, argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"{program}: error: {e}\nRun with --helpfull to see every flag.")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        sys.exit(f"{program}: error: bad --config value or override: {message}")
