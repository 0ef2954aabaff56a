"""sft-export: a finished run's workdir -> a new SavedModel version."""

import os

import numpy as np
import pytest
import tensorflow as tf

from sft_keras.errors import ExportError
from sft_keras.run import load_run

from helpers import run_cli


def _export(*args):
    return run_cli(["python", "-m", "sft_keras.cli.export", *args])


def test_sft_export_writes_a_version_and_refuses_to_overwrite(tiny_image_run, tmp_path):
    workdir, _ = tiny_image_run
    export_dir = str(tmp_path / "models" / "m")
    first = _export(f"--workdir={workdir}", f"--export_dir={export_dir}", "--version=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"Exported SavedModel to {os.path.join(export_dir, '3')}" in first.stdout
    assert sorted(os.listdir(os.path.join(export_dir, "3", "assets.extra"))) == [
        "export_info.json", "labels.txt"]
    x = np.random.RandomState(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    served = tf.saved_model.load(os.path.join(export_dir, "3")).signatures["serve_images"]
    expected = load_run(workdir).model(x, training=False)
    np.testing.assert_allclose(served(images=tf.constant(x))["probabilities"], expected,
                               atol=1e-5)

    # What --overwrite --checkpoint=last does, in this process (a third TF start is slow).
    last = load_run(workdir, checkpoint="last")
    with pytest.raises(ExportError, match="already exists"):
        last.export(export_dir, version=3)
    assert last.export(export_dir, version=3, overwrite=True)
    assert os.listdir(export_dir) == ["3"]  # No temporary folders left behind.
    assert last.export(export_dir) == os.path.join(export_dir, "4")


def test_sft_export_existing_version_is_one_line_error(tiny_image_run, tmp_path):
    os.makedirs(tmp_path / "m" / "3")
    result = _export(f"--workdir={tiny_image_run[0]}", f"--export_dir={tmp_path / 'm'}",
                     "--version=3")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"sft-export: error: Export version '{tmp_path / 'm' / '3'}' already exists "
        f"(versions present: [3]). Pass another version, or overwrite=True to replace it.")
