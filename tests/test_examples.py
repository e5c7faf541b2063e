"""The notebooks in examples/ run as committed, so an example cannot rot behind the API."""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


def test_examples_hold_notebooks_committed_without_outputs():
    """Outputs are the reader's run, not the repository's: committed, they would go stale."""
    import nbformat

    assert NOTEBOOKS, "examples/ holds no notebook"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, path.name
        assert all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.mark.slow
def test_quickstart_runs_in_the_venvs_kernel_and_draws_its_figure(tmp_path, monkeypatch):
    """Every cell runs without error in a kernel of this interpreter (the venv's), in a fresh
    folder; it shows its figure as a PNG and its error cell prints the StudyError's line."""
    import nbformat
    from nbclient import NotebookClient

    # a kernel spec naming this interpreter, found first: never a python3 of another install
    spec = tmp_path / "jupyter" / "kernels" / "ilstudy-venv"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "ilstudy venv", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # the notebook's tempfile.mkdtemp and Ray's session land in a short folder: Ray's socket
    # paths must stay under the 107 bytes of AF_UNIX, which pytest's tmp_path can exceed
    short = Path(tempfile.mkdtemp(prefix="ilnb-"))
    monkeypatch.setenv("TMPDIR", str(short))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's packages
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="ilstudy-venv",
                            resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    try:
        client.execute()
        assert list(short.glob("ilstudy-quickstart-*/smoke/results/trials.parquet"))
    finally:
        shutil.rmtree(short, ignore_errors=True)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG"), [
        o.output_type for o in outputs
    ]
    text = "".join(o.get("text", "") for o in outputs)
    assert "StudyInputError" in text and "no_such_space" in text  # the error cell's line
