"""Shared test helpers: small real GeoTIFFs written with rasterio, and the shared sample data."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_raster(path: Path, data: np.ndarray, crs="EPSG:32633",
                 transform: Affine = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0),
                 nodata=None, descriptions=None, **extra) -> Path:
    """Write (bands, rows, cols) `data` as a tiled GeoTIFF and return its path."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, text)
    return path


def write_damaged(path: Path, bands: int = 3, size: int = 256) -> Path:
    """A GeoTIFF that opens but whose middle tiles do not decode (a truncated copy, bad disk)."""
    data = np.random.default_rng(1).integers(1, 250, (bands, size, size), np.uint8)
    write_raster(path, data, nodata=0, tiled=True, blockxsize=64, blockysize=64,
                 compress="deflate")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + len(raw) // 4] = b"\x55" * (len(raw) // 4)
    path.write_bytes(bytes(raw))
    return path


def limit_file_size(size: int):
    """A subprocess `preexec_fn`: no file may grow past `size` bytes (a full disk, for the
    writes that pass it); a write past it fails with EFBIG instead of killing the process."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def shared(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared sample data not found: {path}")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> str:
    """A small U-Net model file (3 bands in, one float32 "elevation" band out)."""
    from predict_helpers import unet_file

    return unet_file(tmp_path_factory.mktemp("model") / "model.safetensors",
                     descriptions=["elevation"])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The fault battery's inputs: a source (3 bands uint8) and target (1 band float32) on one
    10 m grid, a model file, and rasters placed nowhere: a CRS without geotransform, and
    neither."""
    import warnings

    from predict_helpers import unet_file
    from rasterio.errors import NotGeoreferencedWarning

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(3)
    write_raster(folder / "s.tif", rng.integers(1, 255, (3, 96, 96), np.uint8), nodata=0)
    write_raster(folder / "t.tif", rng.normal(500, 50, (1, 96, 96)).astype(np.float32))
    unet_file(folder / "model.safetensors", descriptions=["elevation"], pixel_size=(10, 10))
    with warnings.catch_warnings():  # rasterio's, for a raster written without transform
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name, crs in (("crs_only.tif", "EPSG:32633"), ("nowhere.tif", None)):
            with rasterio.open(folder / name, "w", driver="GTiff", width=96, height=96, count=3,
                               dtype="uint8", crs=crs) as dst:
                dst.write(rng.integers(1, 255, (3, 96, 96), np.uint8))
    return folder


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict[str, Path]:
    """Chips and the model file of a run trained for 2 steps, a categorical and an smp
    model file written by the project's writer, and a scene to predict (the model-file fault
    battery's: test_faults_model_files, test_faults_model_digest; once a session, as it trains)."""
    import torch
    from fault_helpers import trained_run
    from predict_helpers import categorical_meta, metadata, unet_file

    from geopix2pix.models import GeneratorSpec, build_generator, save_model

    folder = tmp_path_factory.mktemp("faults_models")
    rng = np.random.default_rng(5)
    chips, run = trained_run(folder)
    scene = write_raster(folder / "scene.tif", rng.normal(100, 20, (1, 64, 64)).astype("f4"))
    rgb = write_raster(folder / "rgb.tif", rng.integers(1, 250, (3, 64, 64), np.uint8))
    categorical = unet_file(folder / "classes.safetensors", out_ch=4, **categorical_meta())
    spec = GeneratorSpec("smp:Unet:resnet18", 3, 1, 64)
    torch.manual_seed(0)
    save_model(folder / "smp.safetensors", build_generator(spec).eval(), spec, metadata(3, 1))
    return {"folder": folder, "chips": chips, "model": run / "model.safetensors",
            "scene": scene, "rgb": rgb, "classes": Path(categorical),
            "smp": folder / "smp.safetensors"}


def run_whole(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True)` in a process group of its own,
    killed whole on timeout: torchrun's workers would otherwise outlive a killed torchrun."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **kwargs) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)
