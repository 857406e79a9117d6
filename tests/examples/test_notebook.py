"""``examples/notebooks/quickstart.ipynb`` executed top to bottom in a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.examples.conftest import REPO, example_env

pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in example_env().items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.setenv("QUICKSTART_BUDGET", "16")
    monkeypatch.setenv("QUICKSTART_OUT", str(tmp_path))
    notebook = nbformat.read(REPO / "examples" / "notebooks" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "funnel:" in outputs and "'generated': 16" in outputs
    images = [
        out for cell in notebook.cells for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]  # fmt: skip
    assert images, "the plot cell drew nothing"
    assert (tmp_path / "summary.json").exists() and (tmp_path / "best_uptake.png").exists()
    assert os.listdir(tmp_path / "structures")
