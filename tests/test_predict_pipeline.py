"""How predict runs: model threads, strip reads, overlap-add and folding arithmetic,
the GPU launch, and the writer's order."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from predict_helpers import (
    IDENTITY,
    ConvModel,
    loaded,
    pipeline_threads,
    whole_scene_conv,
    write_scene,
)
from rasterio.transform import from_origin

from geopix2pix.chips.scaling import Scaling
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.prediction import predict, predictor, resample
from geopix2pix.prediction.engine import forward, pipeline, reading
from geopix2pix.prediction.engine.blend import fold_segments, overlap_add, window_weights
from geopix2pix.prediction.engine.channels import DONE, Channel
from geopix2pix.prediction.engine.windows import make_layout


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
        np.testing.assert_allclose(dst.read(1), whole_scene_conv(scene, generator.conv),
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
    from geopix2pix.prediction.engine.windows import iter_chunk_strips, make_layout, read_strip

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
    for module in (predictor, resample):  # the scene's handles, or its warped view's
        monkeypatch.setattr(module, "reopen_scene", lambda *args, **kwargs: handles.append(
            threading.current_thread()) or reopen(*args, **kwargs))
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
    def broken(*args, **kwargs):
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


class InterruptsOnThirdBatch(ConvModel):
    """ConvModel that sends the process SIGINT (Ctrl-C) from a model thread on its 3rd batch."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__()
        self.calls, self.signum = itertools.count(), signum

    def forward(self, x):
        if next(self.calls) == 2:
            os.kill(os.getpid(), self.signum)
        return super().forward(x)


def test_ctrl_c_stops_the_pipeline_and_is_raised_once_its_threads_are_joined(tmp_path):
    """Raised anywhere in the main thread, KeyboardInterrupt can leave a lock held that a
    pipeline thread then waits on forever. Ctrl-C now stops the stages and is raised after."""
    scene = write_scene(tmp_path / "s.tif", 600, 300)
    out = tmp_path / "o.tif"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        predict(scene, out, model=loaded(InterruptsOnThirdBatch(), target_scaling=IDENTITY),
                progress=False, batch_size=2)
    assert pipeline_threads() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    # SIGTERM reaches the handler that was there before (the program's raises Terminated)
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt):  # the handler returned, but the run was cut short
            predict(scene, out, model=loaded(InterruptsOnThirdBatch(signal.SIGTERM),
                                             target_scaling=IDENTITY), progress=False,
                    batch_size=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]  # once, after the run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
