"""Documentation that is generated from code stays current."""

import inspect
import os

import sft_keras
from sft_keras import config_reference
from sft_keras.config import get_default_config

from conftest import REPO_ROOT


def test_config_reference_is_current():
    path = config_reference.reference_doc_path()
    assert os.path.samefile(path, os.path.join(REPO_ROOT, "docs", "configuration.md"))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert config_reference.render_reference(text) == text, (
        f"{config_reference.REFERENCE_DOC}'s config reference is stale: run "
        f"`{config_reference.WRITE_COMMAND}`."
    )


def test_every_config_key_is_documented():
    descriptions = config_reference.config_key_descriptions()
    keys = set(dict(config_reference._flatten(get_default_config())))
    undocumented = sorted(k for k in keys if not descriptions.get(k))
    assert not undocumented, f"Config keys without a comment in config.py: {undocumented}"


def test_version_and_changelog():
    assert sft_keras.__version__.count(".") == 2
    with open(os.path.join(REPO_ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
        assert f"## {sft_keras.__version__}" in f.read()


def _takes_arguments(obj):
    """True when calling `obj` (a function, or a class's constructor) takes arguments."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in signature.parameters.values())


def _docstring_problems(name, obj):
    """What the docstring of the public function or class `obj` lacks, as a list of str."""
    problems = []
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    if not lines or not lines[0].strip() or (len(lines) > 1 and lines[1].strip()):
        problems.append(f"{name}: no one-line summary followed by a blank line")
    if inspect.isclass(obj) and issubclass(obj, sft_keras.SftError):
        return problems  # Error classes need only the summary.
    if _takes_arguments(obj) and "\nArgs:\n" not in f"\n{doc}":
        problems.append(f"{name}: takes arguments but has no 'Args:' section")
    if "\nExample:\n" not in f"\n{doc}" or ">>> " not in doc.split("Example:", 1)[-1]:
        problems.append(f"{name}: no 'Example:' section with a '>>>' line")
    return problems


def test_public_api_docstrings():
    """Every public function and class has a summary, `Args:` and a runnable `Example:`."""
    problems = []
    for name in sft_keras.__all__:
        obj = getattr(sft_keras, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            problems += _docstring_problems(name, obj)
    assert not problems, "Public API docstrings are incomplete:\n" + "\n".join(problems)


def test_docstring_check_finds_what_is_missing():
    def documented(x):
        """Adds one.

        Args:
            x: int.

        Example:

        >>> documented(1)
        2
        """
        return x + 1

    def bare(x):
        """Adds one; no blank line follows.
        Example: none."""
        return x + 1

    assert _docstring_problems("documented", documented) == []
    assert [p.split(": ", 1)[1] for p in _docstring_problems("bare", bare)] == [
        "no one-line summary followed by a blank line",
        "takes arguments but has no 'Args:' section",
        "no 'Example:' section with a '>>>' line",
    ]
    assert _docstring_problems("ConfigError", sft_keras.ConfigError) == []
