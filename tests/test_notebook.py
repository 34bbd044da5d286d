"""The walkthrough notebook runs end to end (with a handful of training steps)."""

import json
import pathlib
import sys

import nbclient
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("I2I_WALKTHROUGH_STEPS", "4")
  monkeypatch.setenv("I2I_WALKTHROUGH_IMAGES", "8")
  monkeypatch.setenv("I2I_WALKTHROUGH_ANALYSIS_STEPS", "3")
  monkeypatch.setenv("I2I_WALKTHROUGH_DIR", str(tmp_path))
  # The kernel is a fresh process: one CPU device, as a user's notebook has.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  # A kernel of this very interpreter (whatever kernelspecs the machine has).
  kernel_dir = tmp_path / "jupyter" / "kernels" / "i2i_jax_test"
  kernel_dir.mkdir(parents=True)
  (kernel_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "i2i_jax test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=900, kernel_name="i2i_jax_test",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  report = (tmp_path / "eval" / "report.md").read_text()
  assert "FD_inception_random_init" in report and "flip" in report.lower()
  assert len(list((tmp_path / "translated" / "images").glob("*.png"))) == 8
  # Every code cell ran and the figures were produced.
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4


def test_notebook_is_committed_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
  assert "train.train_and_evaluate" in "".join(cell.source for cell in notebook.cells)
