"""Documentation stays current: generated parts are fresh, and what the prose names exists.

README.md and docs/*.md name config keys, modules, files, pages and commands;
the tests here fail when one of them is renamed or removed in the code, so the
docs change in the same commit as the behaviour they describe.
"""

import configparser
import glob
import importlib
import inspect
import itertools
import os
import re

import pytest

import sft_keras
from sft_keras import config_reference
from sft_keras.config import get_default_config, validate_config

from helpers import REPO_ROOT


def _doc_paths():
    """README.md and every docs/*.md page, as absolute paths."""
    pages = sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))
    return [os.path.join(REPO_ROOT, "README.md")] + pages


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _split_code(text):
    """Returns `(prose, code_blocks)`: the text outside fenced blocks, and each block as
    `(language, body)`. Prose keeps a blank line where each block was."""
    prose, blocks = [], []
    for i, part in enumerate(re.split(r"^```", text, flags=re.M)):
        if i % 2 == 0:
            prose.append(part)
        else:
            language, _, body = part.partition("\n")
            blocks.append((language.strip(), body))
    return "\n".join(prose), blocks


def _inline_code(prose):
    """The `backticked` spans of Markdown prose."""
    return re.findall(r"`([^`\n]+)`", prose)


def _doc_name(path):
    return os.path.relpath(path, REPO_ROOT)


def test_config_reference_is_current():
    path = config_reference.reference_doc_path()
    assert os.path.samefile(path, os.path.join(REPO_ROOT, "docs", "configuration.md"))
    text = _read(path)
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


# === What the docs name exists ===

# Dotted names that start like a config key but are not one.
NOT_CONFIG_KEYS = {
    "model.fit",  # keras.Model.fit.
    "model.safetensors",  # A Hugging Face checkpoint's weights file.
}


def _config_keys_and_sections():
    """The flattened config keys (`train.epochs`) and the groups above them (`model.head`)."""
    keys = set(dict(config_reference._flatten(get_default_config())))
    sections = {".".join(k.split(".")[:i]) for k in keys for i in range(1, k.count(".") + 1)}
    return keys, sections


def _expand_braces(name):
    """`model.freeze.{until,patterns}` -> `['model.freeze.until', 'model.freeze.patterns']`."""
    parts = re.split(r"\{([^{}]*)\}", name)
    options = [[p] if i % 2 == 0 else [o.strip() for o in p.split(",")] for i, p in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*options)]


def _config_key_mentions(text, top_sections):
    """Config keys a page names: `--config.KEY=`, `config.KEY` in Python blocks, and
    `section.key` inline code (a call such as `model.fit(...)` is skipped)."""
    prose, blocks = _split_code(text)
    found = re.findall(r"--config\.([a-z_][a-z0-9_.]*)", text)
    for language, body in blocks:
        if language == "python":
            found += re.findall(r"(?<![\w.])config\.([a-z_][a-z0-9_.]*)", body)
    sections = "|".join(sorted(top_sections))
    for span in _inline_code(prose):
        match = re.match(rf"((?:{sections})\.[a-z0-9_.{{}},]*[a-z0-9_}}])(\(?)", span)
        if match and not match.group(2):
            found += _expand_braces(match.group(1))
    return [k.rstrip(".") for k in found if k.rstrip(".") not in NOT_CONFIG_KEYS]


def test_docs_name_only_real_config_keys():
    keys, sections = _config_keys_and_sections()
    top_sections = {s for s in sections if "." not in s}
    problems, checked = [], 0
    for path in _doc_paths():
        for key in _config_key_mentions(_read(path), top_sections):
            checked += 1
            if key not in keys and key not in sections:
                problems.append(f"{_doc_name(path)}: {key}")
    assert checked > 100, f"Found only {checked} config keys in the docs: is the parser broken?"
    assert not problems, (
        "The docs name config keys that sft_keras.config.get_default_config() does not have "
        "(renamed or removed?):\n" + "\n".join(sorted(set(problems)))
    )


def test_config_key_mentions_are_found():
    text = (
        "Set `data.tfds_download=True` and `model.freeze.{until,patterns}`; `model.fit(x)` is "
        "Keras; `export/1/` is a folder.\n"
        "```bash\nsft-train --config.train.epochs=3 --config.KEY=value\n```\n"
        "```python\nconfig.model.head.l2 = 0.1\nsft_keras.config.get_default_config()\n```\n"
    )
    assert sorted(_config_key_mentions(text, {"data", "model", "train", "export"})) == [
        "data.tfds_download", "model.freeze.patterns", "model.freeze.until",
        "model.head.l2", "train.epochs",
    ]


def _resolve(dotted):
    """Imports the longest module prefix of `dotted`, then looks up the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and not (module_name + ".").startswith(e.name + "."):
                raise  # The module exists, but one of its own imports is missing.
            continue  # No such module: the last part is an attribute of a shorter one.
        for attribute in parts[i:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


def test_docs_name_only_real_modules_and_functions():
    """Every `sft_keras.x.y` in inline code of the prose imports (code blocks are skipped:
    the architecture block names modules being written)."""
    problems, checked = [], 0
    for path in _doc_paths():
        prose, _ = _split_code(_read(path))
        for span in _inline_code(prose):
            for dotted in re.findall(r"(?<![\w.])sft_keras(?:\.[A-Za-z_]\w*)+", span):
                checked += 1
                try:
                    _resolve(dotted)
                except (ImportError, AttributeError) as e:
                    problems.append(f"{_doc_name(path)}: {dotted} ({type(e).__name__}: {e})")
    assert checked > 10, f"Found only {checked} dotted names in the docs: is the parser broken?"
    assert not problems, "The docs name modules or functions that do not exist:\n" + "\n".join(
        problems
    )


def _heading_anchors(text):
    """GitHub's anchors for the headings of a Markdown page."""
    prose, _ = _split_code(text)
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", prose, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_links_and_file_paths_exist():
    """Relative links (and their #anchors) and repository paths such as `configs/x.py` exist."""
    problems = []
    roots = r"(?:configs|sft_keras|docs|tests|benchmarks|notebooks|\.ci)"
    for path in _doc_paths():
        text = _read(path)
        prose, _ = _split_code(text)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(linked):
                problems.append(f"{_doc_name(path)}: link to missing {target}")
            elif anchor and linked.endswith(".md") and anchor not in _heading_anchors(_read(linked)):
                problems.append(f"{_doc_name(path)}: link to missing heading {target}")
        mentioned = set(re.findall(r"(?<![\w./-])configs/\w+\.py", text))
        for span in _inline_code(prose):
            mentioned.update(re.findall(rf"(?<![\w./-]){roots}/[\w./-]*[\w/]", span))
        for relative in sorted(mentioned):
            if not os.path.exists(os.path.join(REPO_ROOT, relative)):
                problems.append(f"{_doc_name(path)}: missing file {relative}")
    assert not problems, "The docs point at things that do not exist:\n" + "\n".join(problems)


def test_readme_links_every_docs_page_and_each_page_links_back():
    readme = _read(os.path.join(REPO_ROOT, "README.md"))
    problems = []
    for path in _doc_paths()[1:]:
        name = _doc_name(path).replace(os.sep, "/")
        if f"]({name})" not in readme:
            problems.append(f"README.md does not link {name}")
        paragraphs = _read(path).split("\n\n")
        if not paragraphs[0].startswith("# ") or "](../README.md)" not in paragraphs[1]:
            problems.append(f"{name}: no title, then a paragraph of what it covers linking ../README.md")
    assert len(_doc_paths()) > 5
    assert not problems, "\n".join(problems)


def _console_scripts():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO_ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=")[0].strip() for line in lines if line.strip()}


def test_docs_name_only_real_commands():
    scripts = _console_scripts()
    assert "sft-train" in scripts
    problems = []
    for path in _doc_paths():
        for command in set(re.findall(r"(?<![\w-])sft-[a-z]+(?![\w-])", _read(path))):
            if command not in scripts:
                problems.append(f"{_doc_name(path)}: {command}")
    assert not problems, (
        f"The docs name commands that setup.cfg does not define ({sorted(scripts)}):\n"
        + "\n".join(problems)
    )


def test_readme_test_command_is_what_ci_runs():
    _, blocks = _split_code(_read(os.path.join(REPO_ROOT, "README.md")))
    assert ("bash", "python -m pytest\n") in blocks, "README.md must give the test command alone"
    ci = _read(os.path.join(REPO_ROOT, ".ci", "run")).splitlines()
    assert "python -m pytest" in ci and "python -m pytest -m slow" in ci


def test_error_example_is_the_real_message():
    """docs/errors.md shows the unknown-backbone error exactly as the code words it."""
    config = get_default_config()
    config.model.backbone = "vgg17"
    with pytest.raises(sft_keras.ConfigError) as error:
        validate_config(config)
    line = f"sft-train: error: {error.value}"
    assert line in _read(os.path.join(REPO_ROOT, "docs", "errors.md")).splitlines(), (
        f"docs/errors.md's backbone error example differs from the code's message; paste:\n{line}"
    )
