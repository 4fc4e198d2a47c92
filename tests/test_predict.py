"""`geopix2pix predict`: exact grids, nodata, dtypes and units, seams, COG, atomic output,
checks."""

from __future__ import annotations

import itertools
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from predict_helpers import (
    ConvModel,
    RandomOffset,
    loaded,
    pipeline_threads,
    unet_file,
    write_scene,
)
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from geopix2pix.chips.scaling import Scaling
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.prediction import forward, pipeline, predict, predictor, reading
from geopix2pix.prediction.blend import fold_segments, overlap_add, window_weights
from geopix2pix.prediction.channels import DONE, Channel
from geopix2pix.prediction.windows import make_layout

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LANDSAT = DATA / "single_landsat7" / "rasterio_RGB.byte.tif"
IDENTITY = Scaling("minmax", (-1.0,), (1.0,))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return unet_file(tmp_path_factory.mktemp("model") / "model.safetensors",
                     descriptions=["elevation"])


@pytest.mark.parametrize("crs, transform, width, height", [
    ("EPSG:32633", from_origin(500000.0, 4_000_000.0, 30.0, 30.0), 1037, 771),
    ("EPSG:4326", from_origin(-3.4123, 40.95, 0.000277, 0.000301), 301, 257),
    ("EPSG:2263", from_origin(980000.0, 200000.0, 3.0, 3.0), 53, 37),  # smaller than a window
    ("EPSG:4326", from_origin(10.0, 50.0, 0.001, 0.001), 17, 61),
])
def test_output_on_exact_input_grid(tmp_path, model_file, crs, transform, width, height):
    scene = write_scene(tmp_path / "scene.tif", width, height, crs=crs, transform=transform)
    out = tmp_path / "out.tif"
    predict(scene, out, model=model_file, progress=False, overlap=0.25)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.count == 1 and dst.dtypes[0] == "float32"
        assert dst.nodata == -9999.0
        assert dst.descriptions == ("elevation",)
        assert dst.compression.value == "DEFLATE"
        if width >= 16 and height >= 16:
            assert dst.profile["tiled"]
        values = dst.read(1)
        assert np.isfinite(values).all() and (values >= 100).all() and (values <= 3000).all()


def test_landsat_nodata_border_preserved_and_uint8(tmp_path):
    if not LANDSAT.exists():
        pytest.skip(f"{LANDSAT} not available")
    # Target uint8 with nodata 0 and a scaling whose predictions round to 0 or 1: valid pixels
    # predicted 0 must be nudged off the nodata value.
    model = unet_file(tmp_path / "m.safetensors", target_dtype="uint8", target_nodata=0.0,
                      target_scaling=Scaling("minmax", (-1.0,), (1.0,)), pixel_size=(300, 300),
                      crs="EPSG:32618")
    out = tmp_path / "out.tif"
    predict(str(LANDSAT), out, model=model, progress=False, batch_size=16, overlap=0.25)
    with rasterio.open(LANDSAT) as src, rasterio.open(out) as dst:
        invalid = (src.read() == 0).any(0)
        pred = dst.read(1)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert invalid.any() and (pred[invalid] == 0).all()
        assert (pred[~invalid] == 1).all()  # nudged or predicted 1, never nodata


def test_float_target_in_metres_with_nan_invalid(tmp_path, model_file):
    """NaN and infinite input pixels (and signalling NaNs, garbage bits) are invalid: nodata
    out, without numpy warnings."""
    data = np.full((3, 70, 90), 120, dtype="float32")
    data[:, 10:20, 30:40] = np.nan
    data[1, 50, 70], data[2, 55:58, 80] = np.inf, -np.inf
    data[0, 60, 10] = np.array(0x7F800001, np.uint32).view(np.float32)  # a signalling NaN
    invalid = np.zeros((70, 90), bool)
    invalid[10:20, 30:40] = invalid[50, 70] = invalid[55:58, 80] = invalid[60, 10] = True
    scene = write_scene(tmp_path / "s.tif", 90, 70, dtype="float32", nodata=None, data=data)
    out = tmp_path / "out.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        predict(scene, out, model=model_file, progress=False)
    with rasterio.open(out) as dst:
        values = dst.read(1)
        assert dst.dtypes[0] == "float32" and dst.nodata == -9999.0
        assert (values[invalid] == -9999).all()
        assert (values[~invalid] >= 100).all() and (values[~invalid] <= 3000).all()


def test_integer_target_without_nodata_uses_internal_mask(tmp_path):
    model = unet_file(tmp_path / "m.safetensors", target_dtype="uint16", target_nodata=None,
                      target_scaling=Scaling("minmax", (0.0,), (1000.0,)))
    data = np.full((3, 40, 50), 100, dtype="uint8")
    data[:, :5] = 0
    scene = write_scene(tmp_path / "s.tif", 50, 40, data=data)
    out = tmp_path / "out.tif"
    predict(scene, out, model=model, progress=False)
    assert not list(tmp_path.glob("*.msk"))
    with rasterio.open(out) as dst:
        assert dst.nodata is None and dst.dtypes[0] == "uint16"
        mask = dst.read_masks(1)
        assert (mask[:5] == 0).all() and (mask[5:] == 255).all()


def _column_diffs(values: np.ndarray, layout) -> tuple[float, float]:
    """Mean |difference| between neighbouring columns across window edges and inside windows."""
    diffs = np.abs(np.diff(values, axis=1)).mean(0)  # diffs[j] is between columns j and j+1
    edges = {c + layout.size for c in layout.cols} | set(layout.cols)
    at_edge = np.array([j + 1 in edges for j in range(len(diffs))])
    return float(diffs[at_edge].mean()), float(diffs[~at_edge].mean())


def test_hann_blend_has_no_seams_with_window_varying_model(tmp_path):
    scene = write_scene(tmp_path / "s.tif", 300, 200)
    layout = make_layout(200, 300, 64, 0.5, "hann")
    out_hann, out_none = tmp_path / "hann.tif", tmp_path / "none.tif"
    for blend, out in (("hann", out_hann), ("none", out_none)):
        model = loaded(RandomOffset(), target_scaling=IDENTITY)
        predict(scene, out, model=model, progress=False, blend=blend)
    with rasterio.open(out_hann) as a, rasterio.open(out_none) as b:
        hann, none = a.read(1), b.read(1)
    edge, inside = _column_diffs(hann, layout)
    assert edge <= inside
    # The same measure sees the seams of unblended window outputs (the test can fail).
    _, inside_none = _column_diffs(none, make_layout(200, 300, 64, 0.5, "none"))
    none_layout = make_layout(200, 300, 64, 0.5, "none")
    crop_edges = [c + none_layout.margin for c in none_layout.cols]
    diffs = np.abs(np.diff(none, axis=1)).mean(0)
    assert diffs[[e - 1 for e in crop_edges if 0 < e < 300]].mean() > 10 * inside_none


def _whole_scene_conv(scene: Path, conv: torch.nn.Conv2d) -> np.ndarray:
    """ConvModel over the whole reflect-padded scene at once: what seam-free windows give."""
    with rasterio.open(scene) as src:
        scaled = Scaling("percentile", (0.0,) * 3, (255.0,) * 3).forward(
            src.read(), np.ones((src.height, src.width), bool))
    padded = torch.from_numpy(np.pad(scaled, ((0, 0), (2, 2), (2, 2)), mode="reflect"))[None]
    with torch.no_grad():
        return torch.tanh(torch.nn.functional.conv2d(padded, conv.weight, conv.bias))[0, 0].numpy()


def test_centre_crop_is_seam_free_for_translation_equivariant_model(tmp_path):
    scene = write_scene(tmp_path / "s.tif", 211, 150)
    model = loaded(ConvModel(), target_scaling=IDENTITY)
    outs = {}
    for blend in ("none", "hann"):
        outs[blend] = tmp_path / f"{blend}.tif"
        predict(scene, outs[blend], model=model, progress=False, blend=blend, batch_size=5)
    whole = _whole_scene_conv(scene, model.generator.conv)
    with rasterio.open(outs["none"]) as a, rasterio.open(outs["hann"]) as b:
        np.testing.assert_allclose(a.read(1), whole, atol=1e-5)
        # Hann also gives the whole-scene result up to the floored weight of window edges.
        np.testing.assert_allclose(b.read(1), whole, atol=2e-3)


class SlowEvenBatches(ConvModel):
    """ConvModel whose even-numbered batches take longer: with several model threads, later
    batches finish first. Records the threads that ran it."""

    def __init__(self):
        super().__init__()
        self.calls, self.threads = itertools.count(), set()

    def forward(self, x):
        self.threads.add(threading.get_ident())
        if next(self.calls) % 2 == 0:
            time.sleep(0.02)
        return super().forward(x)


def _torch_threads_of_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_cpu_model_threads_hand_outputs_on_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(forward, "cpu_workers", lambda threads: [1, 1, 1])
    threads = _torch_threads_of_a_new_thread()
    scene = write_scene(tmp_path / "s.tif", 211, 150)
    generator = SlowEvenBatches()
    out = tmp_path / "o.tif"
    predict(scene, out, model=loaded(generator, target_scaling=IDENTITY), progress=False,
            blend="none", batch_size=2)
    assert len(generator.threads) == 3
    # the model threads' setting of torch's process-wide thread count is undone
    assert _torch_threads_of_a_new_thread() == threads
    with rasterio.open(out) as dst:
        np.testing.assert_allclose(dst.read(1), _whole_scene_conv(scene, generator.conv),
                                   atol=1e-5)


@pytest.mark.parametrize("threads, expected", [(1, [1]), (2, [1, 1]), (3, [2, 1]),
                                               (6, [3, 3]), (16, [8, 8])])
def test_cpu_workers_share_torch_threads(threads, expected):
    assert forward.cpu_workers(threads) == expected


def test_column_chunks_give_the_same_result(tmp_path, model_file):
    scene = write_scene(tmp_path / "s.tif", 1100, 90)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    predict(scene, a, model=model_file, progress=False)
    predict(scene, b, model=model_file, progress=False, chunk_width=512)
    with rasterio.open(a) as x, rasterio.open(b) as y:
        np.testing.assert_allclose(x.read(1), y.read(1), rtol=1e-6)


def test_cog_is_valid_with_overviews(tmp_path):
    scene = write_scene(tmp_path / "s.tif", 1100, 1030)
    out = tmp_path / "out.tif"
    model = loaded(ConvModel(), target_scaling=IDENTITY)
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


class Broadcast(torch.nn.Module):
    """One value for every pixel, returned as a broadcast view (all pixels share memory)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n, _, h, w = x.shape
        return torch.full((1, 1, 1, 1), 0.5).expand(n, 1, h, w)


@pytest.mark.parametrize("blend", ["hann", "none"])
def test_a_broadcast_output_blends_like_any_other(tmp_path, blend):
    """The blender weights outputs in place only when they are a plain array of their own."""
    scene = write_scene(tmp_path / "s.tif", 130, 70)
    out = tmp_path / "o.tif"
    predict(scene, out, model=loaded(Broadcast()), progress=False, batch_size=64, blend=blend)
    with rasterio.open(out) as dst:  # 0.5 on [-1, 1] -> 100 + 0.75 * 2900
        np.testing.assert_array_equal(dst.read(1), np.float32(2275.0))


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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a file-size limit needs POSIX")
@pytest.mark.parametrize("cog", [False, True])
def test_an_output_that_could_not_be_written_whole_is_not_published(tmp_path, model_file, cog):
    """libtiff's write errors reach neither rasterio nor GDAL's error log: a GeoTIFF cut short
    (here by a file-size limit, as by a full disk) closes without complaint. Predict checks the
    closed file and refuses it: one line, exit 2, nothing at OUT."""
    scene = write_scene(tmp_path / "s.tif", 300, 300)
    out = tmp_path / "out.tif"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    done = subprocess.run([sys.executable, "-m", "geopix2pix", "predict", scene, str(out),
                           "--model", model_file, "-q", *(["--cog"] if cog else [])],
                          preexec_fn=limit_file_size, capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(errors) == 1 and f"could not write {out}: " in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_bands_default_to_those_the_model_was_trained_on(tmp_path):
    """A model trained on bands 4,3,2 of a 6-band raster reads those of a 6-band scene by
    default, all bands of a scene already cut to 3, and refuses (pointing at --bands) where it
    cannot tell. Without the training rasters' band count (older files) a model trained on the
    first 3 bands never guesses them out of a 6-band scene; with it, it reads them."""
    rng = np.random.default_rng(8)
    six = rng.integers(1, 250, (6, 70, 80)).astype("uint8")
    wide = str(write_raster(tmp_path / "six.tif", six, nodata=0,
                            transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0)))
    cut = str(write_raster(tmp_path / "cut.tif", six[[3, 2, 1]], nodata=0,
                           transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0)))
    model = unet_file(tmp_path / "m432.safetensors", source_bands=[4, 3, 2])

    def values(scene, name, **options):
        predict(scene, tmp_path / name, model=model, progress=False, **options)
        with rasterio.open(tmp_path / name) as dst:
            return dst.read(1)

    chosen = values(wide, "default.tif")
    np.testing.assert_array_equal(chosen, values(wide, "explicit.tif", bands=[4, 3, 2]))
    np.testing.assert_array_equal(chosen, values(cut, "from_cut.tif"))
    assert not np.array_equal(chosen, values(wide, "other.tif", bands=[1, 2, 3]))
    first3 = unet_file(tmp_path / "m123.safetensors")  # an older file: no raster band count
    with pytest.raises(GeoPix2PixError, match="gives 6 band.* choose bands with --bands"):
        predict(wide, tmp_path / "x.tif", model=first3, progress=False)
    # trained on the first 3 of 6-band rasters (recorded): the same bands of a 6-band scene,
    # all of a 3-band one, and an error for a scene of another band count
    first3 = unet_file(tmp_path / "m123_of6.safetensors", source_raster_bands=6)
    model = first3
    np.testing.assert_array_equal(values(wide, "first3.tif"),
                                  values(wide, "first3_explicit.tif", bands=[1, 2, 3]))
    values(cut, "first3_cut.tif")
    five = str(write_raster(tmp_path / "five.tif", six[:5], nodata=0,
                            transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0)))
    with pytest.raises(GeoPix2PixError, match="gives 5 band"):
        predict(five, tmp_path / "y.tif", model=model, progress=False)
    # trained on 4 of 4 bands (RGBN): an RGBA scene's alpha is never read as data
    rgba = write_raster(tmp_path / "rgba.tif", six[:4], nodata=0,
                        transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0))
    with rasterio.open(rgba, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                           ColorInterp.alpha]
    rgba = str(rgba)
    rgbn = unet_file(tmp_path / "rgbn.safetensors", in_ch=4, source_raster_bands=4)
    with pytest.raises(GeoPix2PixError, match="gives 3 band"):
        predict(rgba, tmp_path / "z.tif", model=rgbn, progress=False)


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_a_batch_of_no_windows_is_refused(tmp_path, model_file, capsys, batch):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    code = main(["predict", scene, str(tmp_path / "o.tif"), "-m", model_file, "-q",
                 "--batch-size", batch])
    assert code == 2 and "--batch-size" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


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
    assert run.stderr.read().strip().splitlines()[-1] == "Terminated."
    assert list(out.iterdir()) == []


def test_an_output_not_named_as_a_geotiff_is_refused(tmp_path, model_file, capsys):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    code = main(["predict", scene, str(tmp_path / "map.png"), "--model", model_file, "-q"])
    assert code == 2 and "writes a GeoTIFF; name the output .tif" in capsys.readouterr().err
    assert main(["predict", scene, str(tmp_path / "map.TIFF"), "--model", model_file,
                 "-q"]) == 0


def test_band_count_error_via_cli(tmp_path, model_file, capsys):
    scene = write_scene(tmp_path / "two.tif", 40, 40, count=2)
    code = main(["predict", scene, str(tmp_path / "o.tif"), "--model", model_file, "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "2 band(s)" in err and "takes 3" in err
    assert not (tmp_path / "o.tif").exists()


def test_crs_and_pixel_size_checks(tmp_path, model_file):
    no_crs = write_scene(tmp_path / "nocrs.tif", 40, 40, crs=None)
    with pytest.raises(GeoPix2PixError, match="no CRS"):
        predict(no_crs, tmp_path / "a.tif", model=model_file, progress=False)
    predict(no_crs, tmp_path / "a.tif", model=model_file, progress=False, allow_no_crs=True)
    coarse = write_scene(tmp_path / "coarse.tif", 60, 50,
                         transform=from_origin(500000.0, 4_000_000.0, 100.0, 100.0))
    messages: list[str] = []
    out = tmp_path / "b.tif"
    predict(coarse, out, model=model_file, progress=False, on_warning=messages.append,
            resample_to_model=True)
    assert len(messages) == 1 and "100x100" in messages[0] and "30x30" in messages[0]
    assert "predicting at the training pixel size" in messages[0]  # not "consider" it
    predict(coarse, tmp_path / "c.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert messages[1].endswith("consider --resample-to-model")
    with rasterio.open(coarse) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        values = dst.read(1)
        assert (values >= 100).all() and (values <= 3000).all()


@pytest.mark.parametrize("shape", [(1, 70), (20, 20), (53, 37), (300, 200)])
@pytest.mark.parametrize("overlap", [0.5, 0.3, 0.0, 0.75])
@pytest.mark.parametrize("workers", [1, 3])
def test_strip_windows_are_windows_of_the_reflect_padded_scene(tmp_path, shape, overlap,
                                                               workers):
    """One read per window row (what predict does, each row reusing the rows it shares with the
    row above) gives, for every window of the lattice, the window of the whole scene
    reflect-padded (data and validity), also for scenes smaller than a window, where the padding
    mirrors pixels outside the strip's own rows; a conversion applies to every pixel once. Also
    when each read is split by columns among 3 threads, each with a handle of its own (16-pixel
    blocks: the pieces meet inside the scene and next to its edges)."""
    from geopix2pix.prediction.windows import iter_chunk_strips, make_layout, read_strip

    rng = np.random.default_rng(0)
    data = rng.integers(1, 200, (2, *shape), dtype=np.uint8)
    data[:, : shape[0] // 3, : shape[1] // 4] = 0  # some nodata
    path = write_raster(tmp_path / "s.tif", data, nodata=0, tiled=True, blockxsize=16,
                        blockysize=16)
    layout = make_layout(shape[0], shape[1], 64, overlap, "hann")
    [chunk] = layout.chunks()
    pad = 256  # more than any window reaches past the scene
    padded = np.pad(data, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    padded_valid = np.pad(data[0] != 0, pad, mode="reflect")

    def convert(values, valid, out=None):  # not idempotent: applying it twice would show
        converted = values.astype(np.float32) * 2 + valid
        if out is None:
            return converted
        out[...] = converted
        return out

    opened = []

    def reopen():
        opened.append(threading.current_thread())
        return rasterio.open(path)

    with rasterio.open(path) as ds, \
            reading.ColumnReader(ds, [1, 2], convert, workers, reopen) as read:
        rows = []
        # each strip checked before the next is read: they share one reused buffer
        for rolled_strip in iter_chunk_strips(read, layout, chunk):
            row = rolled_strip.row
            rows.append(row)
            strip = read_strip(ds, [1, 2], row, layout.cols, 64)
            windows, valids = strip.windows(strip.data), strip.windows(strip.valid)
            assert windows.shape == (len(layout.cols), 2, 64, 64)
            for i, col in enumerate(layout.cols):
                r, c = slice(pad + row, pad + row + 64), slice(pad + col, pad + col + 64)
                np.testing.assert_array_equal(windows[i], padded[:, r, c])
                np.testing.assert_array_equal(valids[i], padded_valid[r, c])
            np.testing.assert_array_equal(rolled_strip.valid, strip.valid)
            np.testing.assert_array_equal(rolled_strip.data, convert(strip.data, strip.valid))
        assert rows == list(layout.rows)
        split = reading.column_parts((layout.cols[0], layout.cols[-1] + 64), shape[1], 16, 3)
        # the other threads read through their own handles, when the strips are split at all
        assert len(set(opened)) == (min(len(split), workers) - 1)
        assert threading.current_thread() not in opened


def test_gdal_cache_for_strips_covers_a_strip_not_the_scene(tmp_path):
    """The block cache predict (and export) give GDAL: the decoded blocks one read of a row of
    windows can touch, whatever the scene's size."""
    from geopix2pix.raster.io import decoded_block_bytes

    data = np.zeros((3, 1000, 3000), np.uint16)
    path = write_raster(tmp_path / "s.tif", data, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path) as ds:
        # 64 rows can touch 2 block rows, 500 columns 3 block columns; 3 bands of 2 bytes
        assert decoded_block_bytes(ds, 64, 500) == 512 * 768 * 3 * 2
        assert decoded_block_bytes(ds, 5000, 9000) == 1000 * 3000 * 3 * 2  # never past the scene


@pytest.mark.parametrize(("size", "stride", "n"), [(64, 32, 5), (64, 45, 4), (64, 16, 7),
                                                  (64, 64, 3), (8, 3, 1), (8, 5, 2)])
def test_overlap_add_sums_windows_like_a_loop(size, stride, n):
    windows = np.random.default_rng(1).random((n, 2, 5, size)).astype(np.float32)
    expected = np.zeros((2, 5, (n - 1) * stride + size), np.float32)
    for i in range(n):
        expected[..., i * stride:i * stride + size] += windows[i]
    np.testing.assert_allclose(overlap_add(windows, stride), expected, rtol=1e-6)


@pytest.mark.parametrize("lengths", [[5], [3, 1, 4], [1, 1]])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fold_segments_weights_and_sums_each_run_like_overlap_add(lengths, memory_format):
    rng = np.random.default_rng(2)
    windows = rng.random((sum(lengths), 2, 16, 16)).astype(np.float32)
    weights = window_weights(16, 6, 5, "hann")
    # on CUDA the model's outputs are channels_last
    tensor = torch.from_numpy(windows).contiguous(memory_format=memory_format)
    sums = fold_segments(tensor, torch.from_numpy(weights), lengths, 6)
    starts = np.cumsum([0, *lengths])
    assert len(sums) == len(lengths)
    for got, a, b in zip(sums, starts, starts[1:]):
        np.testing.assert_allclose(got.numpy(), overlap_add(windows[a:b] * weights, 6),
                                   rtol=1e-6)


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("precision", [None, torch.bfloat16])
def test_the_gpu_launch_computes_what_the_cpu_forward_does(folded, precision):
    """What `forward._launch_cuda` does around its copies and events (channels_last, autocast,
    `fold`, the outputs flattened for one copy out and split again), run on the CPU: the same
    outputs as the CPU's forward, to autocast's precision."""
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Tanh()).eval()
    generator.to(memory_format=torch.channels_last)
    batch = np.random.default_rng(0).random((7, 3, 16, 16)).astype(np.float32)
    fold = pipeline._fold(make_layout(300, 300, 16, 0.5, "hann"), torch.device("cpu"))
    fold = fold if folded else None
    with torch.inference_mode():
        flat, shapes = forward.device_outputs(generator, torch.from_numpy(batch), [3, 4], fold,
                                              precision)
        got = forward.host_outputs(flat.numpy(), shapes, folded)
        expected = forward.cpu_forward(generator, batch, [3, 4], fold)
    if not folded:
        got, expected = [got], [expected]
    assert [a.shape for a in got] == [b.shape for b in expected]
    assert len(got) == (2 if folded else 1)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 if precision is None else 0.05)


@pytest.mark.parametrize("blend_mode", ["hann", "none"])
def test_folding_where_the_model_ran_blends_like_the_blender(tmp_path, model_file, monkeypatch,
                                                             blend_mode):
    """On CUDA each run of a batch's windows is weighted and summed on the GPU and only the sums
    are handed on (`pipeline.FOLD_ON`); checked here on the CPU against the blender's numpy, with
    batches crossing window rows (batch 7) and column chunks."""
    folds = []
    monkeypatch.setattr(pipeline, "fold_segments",
                        lambda *args: folds.append(args[2]) or fold_segments(*args))
    scene = write_scene(tmp_path / "s.tif", 1100, 203)
    values = {}
    for fold_on in (frozenset(), frozenset({"cpu"})):
        monkeypatch.setattr(pipeline, "FOLD_ON", fold_on)
        out = tmp_path / f"fold_{len(fold_on)}.tif"
        predict(scene, out, model=model_file, progress=False, batch_size=7, chunk_width=512,
                blend=blend_mode)
        with rasterio.open(out) as dst:
            values[fold_on] = dst.read(1)
    assert folds and any(len(lengths) > 1 for lengths in folds)  # runs from two window rows
    np.testing.assert_allclose(values[frozenset({"cpu"})], values[frozenset()], rtol=1e-5)


@pytest.mark.parametrize("case", ["percentile", "centre", "resampled"])
def test_strips_read_by_several_threads_give_one_threads_result(tmp_path, model_file,
                                                                  monkeypatch, case):
    """On a GPU each strip is read by several threads, split by columns, each through its own
    handle on the scene (`reading.ColumnReader`). Forced here on the CPU, the output matches one
    thread's: with pixel-wise and per-window (``centre``) scaling, and through a warped view of
    the scene (--resample-to-model)."""
    handles = []
    reopen = predictor.reopen_scene
    monkeypatch.setattr(predictor, "reopen_scene", lambda *args: handles.append(
        threading.current_thread()) or reopen(*args))
    options = dict(progress=False, batch_size=3)
    blocks = dict(tiled=True, blockxsize=64, blockysize=64)
    if case == "centre":
        rng = np.random.default_rng(4)
        data = np.clip(rng.normal(100, 20, (1, 230, 300)), 40, 160).astype("float32")
        scene = str(write_raster(tmp_path / "s.tif", data, nodata=0, **blocks))
        model = loaded(ConvModel(in_ch=1), in_ch=1, target_scaling=IDENTITY,
                       source_scaling=Scaling("centre", (-50.0,), (50.0,)))
    else:
        pixel = 60.0 if case == "resampled" else 30.0
        data = np.clip(np.random.default_rng(5).normal(128, 40, (3, 230, 300)), 1, 254)
        scene = str(write_raster(tmp_path / "s.tif", data.astype("uint8"), nodata=0,
                                 transform=from_origin(500000.0, 4_000_000.0, pixel, pixel),
                                 **blocks))
        model, options["resample_to_model"] = model_file, case == "resampled"
    values = {}
    for workers in (1, 3):
        monkeypatch.setenv(reading.WORKERS_VARIABLE, str(workers))
        out = tmp_path / f"workers_{workers}.tif"
        predict(scene, out, model=model, **options)
        with rasterio.open(out) as dst:
            values[workers] = dst.read(1)
    # more threads read through handles of their own, opened in their threads: two with the
    # scene's 64-pixel blocks, one through the warped view's 512-pixel blocks (600 columns)
    assert len(handles) == (1 if case == "resampled" else 2)
    assert threading.main_thread() not in handles
    assert np.isfinite(values[1]).all() and values[1].std() > 0
    np.testing.assert_array_equal(values[3], values[1])


def test_a_failing_read_thread_stops_predict_cleanly(tmp_path, model_file, monkeypatch):
    def broken(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(predictor, "reopen_scene", broken)
    monkeypatch.setenv(reading.WORKERS_VARIABLE, "3")
    scene = str(write_raster(tmp_path / "s.tif", np.full((3, 200, 300), 7, np.uint8), nodata=0,
                             tiled=True, blockxsize=64, blockysize=64))
    with pytest.raises(GeoPix2PixError, match="s.tif: disk gone") as raised:
        predict(scene, tmp_path / "o.tif", model=model_file, progress=False)
    assert isinstance(raised.value.__cause__, OSError)  # a data error: the user's to fix
    assert not (tmp_path / "o.tif").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
    assert pipeline_threads() == []  # no thread left behind


@pytest.mark.parametrize("cpus, quota, processes, expected", [
    (16, None, None, 4), (64, None, None, 4), (6, None, None, 1), (2, None, None, 1),
    (16, None, "2", 2), (16, None, "4", 1), (32, None, "2", 4),
    (64, {"cpu.max": "400000 100000"}, None, 1), (64, {"cpu.max": "800000 100000"}, None, 2),
    (64, {"cpu.max": "max 100000"}, None, 4),
    (64, {"cpu/cpu.cfs_quota_us": "800000", "cpu/cpu.cfs_period_us": "100000"}, None, 2),
    (64, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None, 4)])
def test_read_workers_per_gpu(monkeypatch, tmp_path, cpus, quota, processes, expected):
    """One reading thread per 4 CPUs that this process may use: within a cgroup v2 or v1 CPU
    quota (containers) and sharing the machine with torchrun's other processes."""
    monkeypatch.setattr(reading.os, "sched_getaffinity", lambda pid: set(range(cpus)),
                        raising=False)
    cgroup = tmp_path / "cgroup"
    for name, text in (quota or {}).items():
        (cgroup / name).parent.mkdir(parents=True, exist_ok=True)
        (cgroup / name).write_text(text + "\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        str(path).replace("/sys/fs/cgroup", str(cgroup), 1), *a, **k))
    monkeypatch.delenv(reading.WORKERS_VARIABLE, raising=False)
    if processes is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    assert reading.read_workers(torch.device("cuda")) == expected
    assert reading.read_workers(torch.device("cpu")) == 1
    monkeypatch.setenv(reading.WORKERS_VARIABLE, "3")  # the user's word goes
    assert reading.read_workers(torch.device("cpu")) == 3


@pytest.mark.parametrize("cols, width, parts, expected", [
    ((-64, 3064), 3000, 4, [(-64, 512), (512, 1536), (1536, 2048), (2048, 3064)]),
    ((-64, 3064), 3000, 2, [(-64, 1536), (1536, 3064)]),
    ((-32, 400), 380, 3, [(-32, 400)]),  # narrower than two blocks: one piece
    ((1000, 1800), 5000, 2, [(1000, 1536), (1536, 1800)]),
    ((0, 1024), 1024, 2, [(0, 512), (512, 1024)]),
])
def test_column_parts_split_at_block_edges_inside_the_scene(cols, width, parts, expected):
    got = reading.column_parts(cols, width, 512, parts)
    assert got == expected
    assert got[0][0] == cols[0] and got[-1][1] == cols[1]


def test_centre_scaled_input_ignores_the_absolute_level(tmp_path):
    """With ``centre`` source scaling (DEM inputs) each window is centred on its own mean, so a
    scene raised by a constant predicts the same; the window rows cross batches (batch 7)."""
    rng = np.random.default_rng(3)
    base = np.clip(rng.normal(100, 20, (1, 150, 211)), 40, 160).astype("float32")
    low = write_scene(tmp_path / "low.tif", 211, 150, count=1, dtype="float32", data=base)
    high = write_scene(tmp_path / "high.tif", 211, 150, count=1, dtype="float32",
                       data=base + 500)
    model = loaded(ConvModel(in_ch=1), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("centre", (-50.0,), (50.0,)))
    outs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for scene, out in zip((low, high), outs):
        predict(scene, out, model=model, progress=False, batch_size=7)
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        first, second = a.read(1), b.read(1)
    assert np.isfinite(first).all() and first.std() > 0.01
    np.testing.assert_allclose(first, second, atol=1e-5)
    # the percentile scaling of the same model does see the level (the test can fail)
    model = loaded(ConvModel(in_ch=1), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("percentile", (0.0,), (700.0,)))
    for scene, out in zip((low, high), outs):
        predict(scene, out, model=model, progress=False, batch_size=7, overwrite=True)
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        assert np.abs(a.read(1) - b.read(1)).mean() > 1e-2


def test_each_output_is_finished_once_right_after_its_last_strip(monkeypatch):
    """The writer thread finishes a job (writes its last band of rows, lets its buffer go) as
    soon as the next job's strips come, each job once, the last one at the end."""
    monkeypatch.setattr(pipeline, "to_output", lambda blended, valid, spec: blended)
    events = []
    jobs = [pipeline.Job(None, None, lambda row, col, data, valid, k=k: events.append(
        ("write", k, row)), lambda k=k: events.append(("finish", k))) for k in range(4)]
    inbox = Channel(threading.Event(), depth=16)
    strip = (np.zeros((1, 2, 3)), np.ones((2, 3), bool))
    for index, row in [(0, 0), (0, 2), (2, 0), (3, 0), (3, 2)]:
        inbox.put((index, row, 0, *strip))
    inbox.put(DONE)
    pipeline._writer(jobs, inbox)
    assert events == [("write", 0, 0), ("write", 0, 2), ("finish", 0), ("finish", 1),
                      ("write", 2, 0), ("finish", 2), ("write", 3, 0), ("write", 3, 2),
                      ("finish", 3)]
