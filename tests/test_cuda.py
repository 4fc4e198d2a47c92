"""The CUDA paths, on a machine with a GPU (skipped elsewhere): predict with bf16 autocast,
channels_last and batches queued ahead matches the CPU, and a mixed-precision training run
writes a model that predicts on the GPU.

Run them where a GPU is: ``pytest tests/test_cuda.py``."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from predict_helpers import unet_file, write_scene

from geopix2pix.chips.export import export_chips
from geopix2pix.models import load_model
from geopix2pix.prediction import predict
from geopix2pix.prediction.engine import pipeline, reading
from geopix2pix.training import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("workers, fold_on", [("1", {"cuda"}), ("3", {"cuda"}), ("1", set())])
def test_predict_on_cuda_matches_the_cpu(tmp_path, monkeypatch, workers, fold_on):
    """Also with each strip read by 3 threads, and with the windows blended on the host."""
    model = unet_file(tmp_path / "model.safetensors")  # target minmax 100..3000, float32
    scene = write_scene(tmp_path / "scene.tif", 301, 203, tiled=True, blockxsize=64,
                        blockysize=64)
    outputs = {}
    for device in ("cpu", "cuda"):
        monkeypatch.setenv(reading.WORKERS_VARIABLE, "1" if device == "cpu" else workers)
        monkeypatch.setattr(pipeline, "FOLD_ON", frozenset(fold_on))
        outputs[device] = tmp_path / f"{device}.tif"
        # batch 7: batches cross window rows, and one is queued ahead on the GPU
        predict(scene, outputs[device], model=model, device=device, batch_size=7, overlap=0.5,
                progress=False)
    with rasterio.open(outputs["cpu"]) as cpu, rasterio.open(outputs["cuda"]) as gpu:
        assert (gpu.crs, gpu.transform, gpu.shape, gpu.nodata, gpu.dtypes) == \
            (cpu.crs, cpu.transform, cpu.shape, cpu.nodata, cpu.dtypes)
        a, b = cpu.read(1), gpu.read(1)
    a, b = a.astype(np.float64), b.astype(np.float64)
    # the untrained model's outputs vary little (std ~5 units): compare against that spread, so
    # that zeros, unfinished copies or windows out of place would fail; bf16 keeps ~3 digits
    assert a.std() > 1
    assert np.abs(a - b).mean() < 0.1 * a.std()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("fold_on", [{"cuda"}, set()])
def test_a_categorical_model_on_cuda_writes_the_cpus_classes(tmp_path, monkeypatch, fold_on):
    """Class probabilities (softmax in float32 under bf16 autocast) blended on the GPU (fold)
    or on the host give the CPU's class codes but at near ties."""
    model = unet_file(tmp_path / "model.safetensors", out_ch=4, target_dtype="uint8",
                      target_nodata=255, classes=[3, 7, 12, 40])
    scene = write_scene(tmp_path / "scene.tif", 301, 203)
    outputs = {}
    for device in ("cpu", "cuda"):
        monkeypatch.setattr(pipeline, "FOLD_ON", frozenset(fold_on))
        outputs[device] = tmp_path / f"{device}.tif"
        predict(scene, outputs[device], model=model, device=device, batch_size=7,
                progress=False)
    with rasterio.open(outputs["cpu"]) as cpu, rasterio.open(outputs["cuda"]) as gpu:
        assert (gpu.transform, gpu.shape, gpu.nodata, gpu.dtypes) == \
            (cpu.transform, cpu.shape, cpu.nodata, cpu.dtypes)
        a, b = cpu.read(1), gpu.read(1)
    assert set(np.unique(b).tolist()) <= {3, 7, 12, 40, 255}
    assert len(set(np.unique(a).tolist()) - {255}) > 1  # not one class everywhere
    assert (a == b).mean() > 0.99


def test_mixed_precision_training_on_cuda_writes_a_usable_model(tmp_path):
    # export writes the chips' footprint index with geopandas, which GPU images may lack
    # (tools/gpu_check.sh); tools/bench_train.py then still times the CUDA training step
    pytest.importorskip("geopandas", reason="export-chips needs geopandas")
    y, x = np.mgrid[0:256, 0:256]
    dem = (100 + 30 * np.sin(x / 17.0) + 25 * np.cos(y / 23.0)).astype("float32")
    shade = np.clip(128 + 40 * np.gradient(dem)[1], 0, 255).astype("uint8")
    source = write_raster(tmp_path / "dem.tif", dem, nodata=-9999)
    target = write_raster(tmp_path / "shade.tif", shade)
    export_chips(source, target, tmp_path / "chips", chip_size=64, stride=32, split_block=128,
                 workers=1, progress=False)
    result = train(tmp_path / "chips", tmp_path / "run", ngf=8, ndf=8, batch_size=8, workers=0,
                   quiet=True, device="cuda", amp=True, max_steps=30, epochs=1, decay_epochs=0)
    assert result.steps == 30
    losses = [row["val_l1"] for row in result.metrics if row["val_l1"] is not None]
    assert losses and all(np.isfinite(losses))
    model = load_model(result.model_path, device=torch.device("cpu"))
    assert model.spec.in_channels == 1
    out = tmp_path / "pred.tif"
    predict(source, out, model=result.model_path, device="cuda", progress=False)
    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape, dst.dtypes) == \
            (src.crs, src.transform, src.shape, ("uint8",))
