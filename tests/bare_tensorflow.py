"""Run code in a fresh process where TensorFlow imports but keras, keras-hub, tf-text cannot.

That is the environment of a stock TF Serving build: a SavedModel that loads
and runs there needs nothing from sft_keras, keras, keras-hub or
tensorflow-text. With `op_libraries=tensorflow_text_op_libraries()` the
process also loads tensorflow-text's compiled ops (`tf.load_op_library`, no
Python package imported), as a TF Serving build with those ops linked in.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

PREAMBLE = textwrap.dedent("""
    import base64, json, sys
    sys.modules["tensorflow_text"] = None  # `import tensorflow_text` now fails.
    sys.modules["keras_hub"] = None
    sys.modules["keras"] = None  # `import tensorflow` would import keras (for tf.keras).
    import tensorflow as tf
    request = json.loads(sys.stdin.readline())
    for library in request.pop("_op_libraries", []):
        tf.load_op_library(library)

    def result(value):
        value["modules"] = sorted(m for m in ("keras", "keras_hub", "tensorflow_text", "sft_keras")
                                  if sys.modules.get(m) is not None)
        print("RESULT " + json.dumps(value), flush=True)

    def saved_model_cli_show(path):
        # `saved_model_cli show --dir <path> --all` in this process (one TF start, not two).
        from tensorflow.python.tools import saved_model_cli
        sys.argv = ["saved_model_cli", "show", "--dir", path, "--all"]
        try:
            saved_model_cli.main()
        except SystemExit as e:
            assert not e.code, e.code
""")


def tensorflow_text_op_libraries():
    """The paths of tensorflow-text's compiled op libraries (`.so`), found without importing it."""
    import importlib.util

    package = importlib.util.find_spec("tensorflow_text").submodule_search_locations[0]
    return sorted(glob.glob(os.path.join(package, "python", "ops", "*.so")))


def run_bare_tensorflow(code, request, timeout=300, op_libraries=()):
    """Runs `PREAMBLE + code` with `request` (JSON) on stdin; returns (result dict, stdout).

    `code` calls `result({...})` once; `saved_model_cli_show(path)` prints
    what `saved_model_cli show --all` prints. `op_libraries` are loaded with
    `tf.load_op_library` first.
    """
    request = {**request, "_op_libraries": list(op_libraries)}
    process = subprocess.run(
        [sys.executable, "-c", PREAMBLE + textwrap.dedent(code)],
        input=json.dumps(request) + "\n", capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(x for x in process.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), process.stdout
