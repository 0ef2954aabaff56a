"""Every notebook in notebooks/ executes top to bottom (small sizes: SFT_SMOKE=1)."""

import glob
import os

import pytest

from helpers import REPO_ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path} has outputs: strip them before committing (`jupyter nbconvert "
        f"--clear-output --inplace {path}`)."
    )
    # The kernel (and the commands it starts) import this checkout's sft_keras.
    python_path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", REPO_ROOT + (os.pathsep + python_path if python_path else ""))
    monkeypatch.setenv("SFT_SMOKE", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("CI", "1")
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(path)}},
    )
    client.execute()  # Raises CellExecutionError naming the failing cell.
