"""The example notebooks execute (nbclient, small settings), so they cannot rot; and they are
committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path


def test_quickstart_runs(tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    # a non-inline MPLBACKEND (e.g. Agg) in the environment would keep figures out of the outputs
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("GEOPIX2PIX_QUICKSTART_SMALL", "1")
    monkeypatch.setenv("GEOPIX2PIX_QUICKSTART_OUT", str(tmp_path / "out"))
    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    out = tmp_path / "out"
    for name in ("prediction.tif", "baseline.tif", "quicklook.png", "run/model.safetensors",
                 "chips/dataset.json", "cyclegan_run/model.safetensors",
                 "cyclegan_run/model-ba.safetensors", "cyclegan_prediction.tif"):
        assert (out / name).exists(), name
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # scenes, chips, footprints, curves, results, quicklooks
    train = json.loads((out / "run" / "train.json").read_text())
    assert train["options"]["max_steps"] == 20  # the small settings took effect
