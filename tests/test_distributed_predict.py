"""torchrun on the CPU (gloo, 2 processes): several scenes predicted by two ranks, each its own
share, into the same files as one process; failed scenes leave no folder made for them."""

from __future__ import annotations

import numpy as np
import rasterio
from predict_helpers import unet_file, write_scene
from test_distributed import audit, torchrun

from geopix2pix.prediction import predict


def test_two_ranks_predict_the_same_files_as_one_process(tmp_path):
    model = unet_file(tmp_path / "model.safetensors")
    scenes = [write_scene(tmp_path / "a.tif", 100, 90, seed=1),
              write_scene(tmp_path / "b.tif", 70, 130, seed=2, crs="EPSG:4326",
                          transform=rasterio.transform.from_origin(10.0, 50.0, 1e-3, 1e-3)),
              write_scene(tmp_path / "c.tif", 64, 64, seed=3)]
    bad = write_scene(tmp_path / "d.tif", 40, 40, count=2)  # the model takes 3 bands
    predict(scenes, model=model, out_dir=tmp_path / "one", device="cpu", progress=False)
    shared = tmp_path / "two"
    done = torchrun(["-m", "geopix2pix", "predict", *scenes, bad, "--out-dir", str(shared),
                     "--model", model, "--device", "cpu", "-q"], tmp_path, watch=shared)
    assert done.returncode != 0  # one scene failed ...
    assert "1 of 4 scene(s) failed" in done.stderr and "d.tif" in done.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["a.tif", "b.tif", "c.tif"]  # ... not these
    for name in ("a.tif", "b.tif", "c.tif"):
        with rasterio.open(tmp_path / "one" / name) as ref, rasterio.open(shared / name) as out:
            assert (out.crs, out.transform, out.width, out.height, out.nodata, out.dtypes) == \
                (ref.crs, ref.transform, ref.width, ref.height, ref.nodata, ref.dtypes)
            assert np.array_equal(out.read(), ref.read())
            assert np.array_equal(out.read_masks(), ref.read_masks())
    # scenes 0, 2 went to rank 0 and scenes 1, 3 to rank 1: each wrote only its own
    assert any(p.endswith("a.tif") for p in audit(tmp_path, 0))
    assert any(p.endswith("b.tif") for p in audit(tmp_path, 1))
    assert not any(p.endswith(("b.tif", "d.tif")) for p in audit(tmp_path, 0))
    assert not any(p.endswith(("a.tif", "c.tif")) for p in audit(tmp_path, 1))
    # every scene failed: the folders made for the outputs go again, as with one process
    failed = torchrun(["-m", "geopix2pix", "predict", bad, "--out-dir",
                       str(tmp_path / "new" / "deep"), "--model", model, "--device", "cpu",
                       "-q"], tmp_path)
    assert failed.returncode != 0 and "d.tif" in failed.stderr
    assert not (tmp_path / "new").exists()
