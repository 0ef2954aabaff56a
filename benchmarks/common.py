"""Shared by the benchmark scripts: the smoke-mode switch and a tiny BERT preset.

Every script in benchmarks/ has a smoke mode (`--smoke`, or the environment
variable `SFT_SMOKE=1`, as the notebooks use): a tiny model for a step or
two, no download, the same code path and the same printed table.
`tests/test_benchmarks.py` runs each one that way, so none can rot.
"""

import atexit
import importlib.util
import os
import shutil
import string
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_requested(flag=False):
    """True when `flag` (a script's `--smoke`) is set or the environment has `SFT_SMOKE=1`."""
    return bool(flag) or os.environ.get("SFT_SMOKE") == "1"


def tiny_vocabulary():
    """A WordPiece vocabulary that spells any lowercase ASCII text, one character a piece."""
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + pieces + ["##" + p for p in pieces]


def tiny_bert_preset(max_sequence_length=64, **sizes):
    """Writes a random-init 2-layer BERT (hidden 16) preset to a temporary folder; returns it.

    The folder is removed when the process exits. `sizes` go to
    `sft_keras.backbones.save_tiny_bert_preset` (`num_layers`, `hidden_dim`, ...).
    """
    from sft_keras.backbones import save_tiny_bert_preset

    path = tempfile.mkdtemp(prefix="sft_benchmark_tiny_bert_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return save_tiny_bert_preset(path, tiny_vocabulary(),
                                 max_sequence_length=max_sequence_length, **sizes)


def quickstart_config(arg=None):
    """`configs/quickstart.py`'s `get_config(arg)`, loaded by path (configs/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        "quickstart", os.path.join(REPO_ROOT, "configs", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
