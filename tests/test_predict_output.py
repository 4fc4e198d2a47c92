"""Predict's output file: COG, creation options, atomic publishing, full disks, SIGTERM,
names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import limit_file_size
from predict_helpers import (
    IDENTITY,
    ConvModel,
    loaded,
    unet_file,
    write_scene,
)
from rasterio.transform import from_origin

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError, GeoPix2PixWarning
from geopix2pix.prediction import predict


def test_cog_is_valid_with_overviews(tmp_path):
    scene = write_scene(tmp_path / "s.tif", 1100, 1030)
    out = tmp_path / "out.tif"
    model = loaded(ConvModel(), target_scaling=IDENTITY)
    with pytest.warns(GeoPix2PixWarning, match=r"^--overlap 0: windows of \d+ px keep their "
                                               "edges"):  # (a speed test's choice: seams)
        predict(scene, out, model=model, progress=False, overlap=0.0, batch_size=32, cog=True,
                compress="zstd")
    with rasterio.open(out) as dst:
        assert dst.profile["tiled"] and dst.block_shapes[0] == (512, 512)
        assert dst.overviews(1)
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.compression.value == "ZSTD"
        with rasterio.open(scene) as src:
            assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "s.tif"]


def test_creation_options_reach_the_output_and_keep_its_values(tmp_path, model_file, capsys):
    """--co goes to GDAL's GTiff driver (or the COG driver with --cog), over geopix2pix's own
    options; the values are the same whatever the blocks."""
    scene = write_scene(tmp_path / "s.tif", 600, 530)
    plain, blocks, cog = (tmp_path / f"{name}.tif" for name in ("plain", "blocks", "cog"))
    assert main(["predict", scene, str(plain), "-m", model_file, "-q"]) == 0
    # one of the two block sizes alone: the other keeps ours
    assert main(["predict", scene, str(blocks), "-m", model_file, "-q", "--co", "blockxsize=256",
                 "--co", "ZLEVEL=1"]) == 0
    assert main(["predict", scene, str(cog), "-m", model_file, "-q", "--cog",
                 "--co", "BLOCKSIZE=256", "--co", "LEVEL=1"]) == 0
    with rasterio.open(plain) as a, rasterio.open(blocks) as b, rasterio.open(cog) as c:
        assert a.block_shapes == [(512, 512)]
        assert b.block_shapes == [(512, 256)] and c.block_shapes == [(256, 256)]
        assert c.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and c.overviews(1)
        for other in (b, c):
            assert (other.crs, other.transform, other.shape, other.nodata) == \
                (a.crs, a.transform, a.shape, a.nodata)
            np.testing.assert_array_equal(other.read(1), a.read(1))


@pytest.mark.parametrize(("options", "expected"), [
    (["--co", "FOO=bar"], "driver GTiff does not support creation option FOO"),
    (["--co", "PREDICTOR=7"], "PREDICTOR=7"),
    # GDAL itself says "ignoring"; what we do is refuse, and we say so first
    (["--co", "ZLEVEL=99"], "--co ZLEVEL=99: GDAL's GTiff driver would refuse or ignore it "
                            "(GDAL says: ZLEVEL=99 value not recognised, ignoring)"),
    (["--cog", "--co", "ZLEVEL=1"], "driver COG does not support creation option ZLEVEL"),
    (["--co", "nodata=5"], "not a creation option"),
    (["--co", "BLOCKYSIZE=768"], "tiles must divide 512"),
    (["--co", "TILED=NO"], "writes a tiled GeoTIFF"),
    (["--cog", "--co", "BLOCKSIZE=100"], "BLOCKSIZE=100"),
    # GDAL's reason, not rasterio's "Write failed. See previous exception"
    (["--co", "COMPRESS=WEBP", "--co", "WEBP_LOSSLESS=TRUE"], "doesn't support 1 bands"),
    # lossy: nodata pixels would not stay nodata
    (["--co", "COMPRESS=JPEG"], "COMPRESS=JPEG: a lossy compression"),
    (["--cog", "--co", "COMPRESS=webp"], "COMPRESS=webp: a lossy compression"),
    (["--co", "COMPRESS=LERC", "--co", "MAX_Z_ERROR=5"], "COMPRESS=LERC: a lossy compression"),
    (["--cog", "--co", "COMPRESS=LERC_ZSTD", "--co", "MAX_Z_ERROR=0.5"],
     "COMPRESS=LERC_ZSTD: a lossy compression"),
    # fewer bits stored: a float32 -9999 nodata read back as -9992, tagged -9999 still
    (["--co", "NBITS=16"], "NBITS=16: storing fewer bits per value (16-bit floats, packed "
                           "integers) changes the values written"),
    (["--cog", "--co", "discard_lsb=16"], "DISCARD_LSB=16: discarding low bits"),
    # the output would leave the scene's grid or lose its georeferencing
    (["--co", "PROFILE=BASELINE"], "PROFILE=BASELINE: it would move the output off"),
    (["--co", "profile=GeoTIFF"], "PROFILE=GeoTIFF: it would move the output off"),
    (["--cog", "--co", "TILING_SCHEME=GoogleMapsCompatible"], "TILING_SCHEME=GoogleMaps"),
    (["--cog", "--co", "TARGET_SRS=EPSG:4326"], "TARGET_SRS=EPSG:4326: it would move"),
    # accepted by GDAL and silently ignored: options of another compression
    (["--compress", "zstd", "--co", "ZLEVEL=1"], "ZLEVEL=1: only DEFLATE/LERC_DEFLATE"),
    (["--co", "COMPRESS=LZW", "--co", "ZLEVEL=1"], "compressed with LZW"),
    (["--compress", "none", "--co", "PREDICTOR=3"], "compressed with NONE"),
    (["--cog", "--compress", "lzw", "--co", "LEVEL=3"], "LEVEL=3: only DEFLATE/ZSTD"),
])
def test_bad_creation_options_are_refused_before_any_work(tmp_path, model_file, capsys, options,
                                                          expected):
    scene = write_scene(tmp_path / "s.tif", 100, 100)
    code = main(["predict", scene, str(tmp_path / "o.tif"), "-m", model_file, "-q", *options])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


class Failing(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.calls += 1
        if self.calls > 2:
            raise RuntimeError("boom")
        return x[:, :1]


def test_failed_run_leaves_no_output_and_existing_out_is_kept(tmp_path, model_file):
    scene = write_scene(tmp_path / "s.tif", 200, 200)
    out = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="boom"):
        predict(scene, out, model=loaded(Failing()), progress=False, batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
    out.write_bytes(b"previous")
    with pytest.raises(GeoPix2PixError, match="already exists"):
        predict(scene, out, model=model_file, progress=False)
    assert out.read_bytes() == b"previous"
    predict(scene, out, model=model_file, progress=False, overwrite=True)
    with rasterio.open(out) as dst:
        assert dst.width == 200


def test_a_second_scene_given_as_out_is_not_offered_to_overwrite(tmp_path, model_file, capsys):
    """`predict A.tif B.tif` reads B as OUT: the refusal named only --overwrite, which then
    replaced the user's second scene with A's prediction; it names --out-dir first."""
    first, second = (Path(write_scene(tmp_path / name, 64, 64)) for name in ("a.tif", "b.tif"))
    before = second.read_bytes()
    assert main(["predict", str(first), str(second), "-m", str(model_file), "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: {second} already exists: if it is a second scene, predict both with --out-dir "
        "DIR; to replace it with a.tif's prediction, pass --overwrite")
    assert second.read_bytes() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a file-size limit needs POSIX")
@pytest.mark.parametrize("cog", [False, True])
def test_an_output_that_could_not_be_written_whole_is_not_published(tmp_path, model_file, cog):
    """libtiff's write errors reach neither rasterio nor GDAL's error log: a GeoTIFF cut short
    (here by a file-size limit, as by a full disk) closes without complaint. Predict checks the
    closed file and refuses it: one line, exit 2, nothing at OUT."""
    scene = write_scene(tmp_path / "s.tif", 300, 300)
    out = tmp_path / "out.tif"

    done = subprocess.run([sys.executable, "-m", "geopix2pix", "predict", scene, str(out),
                           "--model", model_file, "-q", *(["--cog"] if cog else [])],
                          preexec_fn=limit_file_size(60_000), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: cannot write {out} (")  # one line, libtiff's
    assert len(done.stderr.splitlines()) == 1, done.stderr  # own printing of it silenced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_sigterm_stops_predict_like_ctrl_c_and_leaves_nothing(tmp_path, model_file):
    """kill/timeout/a scheduler send SIGTERM, which by default ends a process on the spot and
    leaves the temporary output behind: it now stops like Ctrl-C, cleaning up, exit 143."""
    scene = write_scene(tmp_path / "s.tif", 3000, 3000)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "geopix2pix", "predict", scene, "--out-dir",
                            str(out), "--model", model_file, "-q", "--batch-size", "2"],
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.iterdir())) and time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)  # while the temporary output is being written
    assert run.wait(60) == 143
    assert run.stderr.read() == (f"Stopped: {out / 's.tif'} was not written (no partial "
                                 "output is left)\n")  # one line: no "Terminated." either
    assert not out.exists()  # nor the folder made for it: as it was before the command


def test_a_rerun_after_sigkill_removes_the_killed_runs_temporary(tmp_path, model_file):
    """SIGKILL (the out-of-memory killer) leaves no chance to clean up: the temporary stays,
    hidden, never under the final name. Rerunning the command removes it and writes OUT."""
    scene = write_scene(tmp_path / "s.tif", 1500, 1500)
    out = tmp_path / "out" / "pred.tif"
    command = [sys.executable, "-m", "geopix2pix", "predict", scene, str(out), "--model",
               model_file, "-q", "--batch-size", "2"]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.parent.is_dir() and any(out.parent.iterdir())) and \
            time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    run.kill()
    run.wait(60)
    left = [p.name for p in out.parent.iterdir()]
    assert left and all(name.startswith(".pred.") and ".partial" in name for name in left)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.parent.iterdir()] == ["pred.tif"]


def test_an_output_not_named_as_a_geotiff_is_refused(tmp_path, model_file, capsys):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    code = main(["predict", scene, str(tmp_path / "map.png"), "--model", model_file, "-q"])
    assert code == 2 and "writes a GeoTIFF; name the output .tif" in capsys.readouterr().err
    assert main(["predict", scene, str(tmp_path / "map.TIFF"), "--model", model_file,
                 "-q"]) == 0


def test_resampled_prediction_keeps_its_temporary_under_the_outputs_name(tmp_path, model_file,
                                                                         monkeypatch):
    """--resample-to-model's float32 temporary is named after the output (one `.partial`), so
    the next write of that output removes it if a kill (SIGKILL, out of memory) left it."""
    from geopix2pix.prediction import resample

    coarse = write_scene(tmp_path / "coarse.tif", 60, 50,
                         transform=from_origin(500000.0, 4_000_000.0, 100.0, 100.0))
    seen: list[list[str]] = []
    write_on_grid = resample.write_on_grid

    def listing_first(*args, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return write_on_grid(*args, **kwargs)

    monkeypatch.setattr(resample, "write_on_grid", listing_first)
    predict(coarse, tmp_path / "out.tif", model=model_file, progress=False,
            resample_to_model=True, on_warning=lambda _: None)
    temporaries = [name for name in seen[0] if name != "coarse.tif"]
    assert len(temporaries) == 1 and temporaries[0].startswith(".out.")
    assert temporaries[0].count(".partial") == 1 and temporaries[0].endswith(".partial.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coarse.tif", "out.tif"]


def test_the_progress_bar_names_the_scene_when_resampling(tmp_path, model_file, capsys):
    coarse = write_scene(tmp_path / "coarse.tif", 60, 50,
                         transform=from_origin(500000.0, 4_000_000.0, 100.0, 100.0))
    assert main(["predict", coarse, str(tmp_path / "o.tif"), "-m", model_file,
                 "--resample-to-model"]) == 0
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
            if "window" in line]
    assert bars and all(bar.startswith("coarse.tif: ") for bar in bars), bars  # not "...tif):"


def test_allow_no_crs_prints_no_rasterio_warning(tmp_path, model_file):
    scene = write_scene(tmp_path / "nocrs.tif", 40, 40, crs=None,
                        transform=rasterio.Affine.identity())
    done = subprocess.run([sys.executable, "-m", "geopix2pix", "predict", scene,
                           str(tmp_path / "o.tif"), "-m", model_file, "-q", "--allow-no-crs"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("pixel_size", [15.0, 27.3, 45.0])
@pytest.mark.parametrize("target", ["float32", "uint8"])  # warped back bilinear, nearest
def test_resampled_prediction_is_nodata_exactly_where_the_scene_is(tmp_path, pixel_size,
                                                                  target):
    """--resample-to-model predicts at the training pixel size and warps back: every valid
    pixel of the scene gets a value, also beside its nodata (a tester found hundreds of valid
    pixels along a reprojected scene's nodata border written as nodata), and every invalid one
    is nodata."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:120, 0:150]
    data = np.clip(rng.normal(128, 30, (3, 120, 150)), 1, 254).astype("uint8")
    data[:, (xx + 2 * yy < 90) | (xx - yy > 100)] = 0  # a slanted nodata border, as reprojected
    data[:, 50:58, 60:75] = 0  # and a hole
    scene = write_scene(tmp_path / "s.tif", 150, 120, data=data,
                        transform=from_origin(500000.0, 4_000_000.0, pixel_size, pixel_size))
    out = tmp_path / "out.tif"
    model = unet_file(tmp_path / "m.safetensors", target_dtype=target,
                      target_nodata=-9999.0 if target == "float32" else None)
    predict(scene, out, model=model, progress=False, resample_to_model=True,
            on_warning=lambda _: None)
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert (dst.transform, dst.width, dst.height) == (src.transform, src.width, src.height)
        written = dst.read_masks(1) > 0  # nodata or, for uint8 without one, the internal mask
    invalid = (data == 0).any(0)
    np.testing.assert_array_equal(written, ~invalid)


def _sidecars(out) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name + "."))


def test_an_overwritten_output_loses_the_replaced_files_sidecars(tmp_path, model_file):
    """A tester's QGIS showed the old output's statistics, stretch and pyramids after
    --overwrite: GDAL's .aux.xml, .ovr and .msk beside it described the replaced pixels."""
    scene = write_scene(tmp_path / "s.tif", 120, 90)
    out = tmp_path / "out.tif"
    predict(scene, out, model=model_file, progress=False)
    with rasterio.open(out) as dst:
        dst.stats(approx=False)  # what gdalinfo -stats and QGIS do: writes out.tif.aux.xml
        before = dst.read(1)
    for suffix in (".ovr", ".msk"):
        (tmp_path / f"out.tif{suffix}").write_bytes(b"stale")
    assert _sidecars(out) == ["out.tif.aux.xml", "out.tif.msk", "out.tif.ovr"]
    # a failed run keeps the earlier output with its sidecars
    with pytest.raises(RuntimeError, match="boom"):
        predict(scene, out, model=loaded(Failing()), progress=False, overwrite=True)
    assert _sidecars(out) == ["out.tif.aux.xml", "out.tif.msk", "out.tif.ovr"]
    predict(scene, out, model=loaded(ConvModel(), target_scaling=IDENTITY), progress=False,
            overwrite=True)
    assert _sidecars(out) == []
    with rasterio.open(out) as dst:
        data = dst.read(1, masked=True)
        assert not np.array_equal(data.filled(0), before) and not dst.overviews(1)
        assert "STATISTICS_MINIMUM" not in dst.tags(1)
    # a sidecar left by an output removed by hand goes with the next one written there
    out.unlink()
    (tmp_path / "out.tif.aux.xml").write_text("<PAMDataset/>")
    predict(scene, out, model=model_file, progress=False)
    assert _sidecars(out) == []
