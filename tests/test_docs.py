"""Documentation that is generated from code stays current."""

import os

import sft_keras
from sft_keras import config_reference
from sft_keras.config import get_default_config

from conftest import REPO_ROOT


def test_readme_config_reference_is_current():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert config_reference.render_readme(readme) == readme, (
        "README.md's config reference is stale: run `python -m sft_keras.config_reference --write`."
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
