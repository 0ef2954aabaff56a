"""Chat with an exported retrieval chatbot: the sft-chat command.

Usage:

    sft-chat --model=/tmp/bot/export
    echo "How are you?" | sft-chat --model=/tmp/bot/export --top_k=3

Reads one message per line from stdin (a `you> ` prompt when stdin is a
terminal) and prints the best replies of the export's bank, best first, one
per line as `score<TAB>reply`, then a blank line. See
`sft_keras.serving.retrieval.ChatBot`; `sft-predict` answers a whole file.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ info lines; keep warnings.


def main(argv):
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from sft_keras.errors import SftError
    from sft_keras.serving.retrieval import ChatBot

    values = flags.FLAGS
    interactive = sys.stdin.isatty()
    try:
        bot = ChatBot(values.model)
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            if not line.strip():
                continue
            for reply, score in bot.reply(line.strip(), values.top_k):
                print(f"{score:.4f}\t{reply}")
            print(flush=True)
    except SftError as e:
        sys.exit(f"sft-chat: error: {e}")
    except KeyboardInterrupt:
        print()


def _define_flags():
    # Defined here, not at import, so that importing this module adds no global flags.
    from absl import flags

    flags.DEFINE_string("model", None, "Export folder (highest version) or a version folder.")
    flags.DEFINE_integer("top_k", None, "Replies per message. Default: all the export serves.")
    flags.mark_flags_as_required(["model"])


def run():
    """Entry point of the `sft-chat` console script."""
    from absl import app

    _define_flags()
    from sft_keras import cli

    app.run(main, flags_parser=cli.flags_parser("sft-chat"))


if __name__ == "__main__":
    run()
