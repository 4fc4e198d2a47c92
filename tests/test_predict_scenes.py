"""Predicting several scenes: outputs, grouping of small scenes, and failures of one scene."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from conftest import write_damaged
from predict_helpers import pipeline_threads, write_scene

from geopix2pix.cli import main
from geopix2pix.models import load_model
from geopix2pix.prediction import grouped, outputs, predict, predictor
from geopix2pix.prediction.engine import pipeline, reading
from geopix2pix.raster.write import case_insensitive


def test_multi_scene_failure_reported_others_written(tmp_path, model_file, capsys):
    good = write_scene(tmp_path / "good.tif", 40, 40)
    bad = write_scene(tmp_path / "bad.tif", 40, 40, count=2)
    code = main(["predict", bad, good, "--out-dir", str(tmp_path / "out"), "--model",
                 model_file, "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "bad.tif" in err and "1 of 2 scene(s) failed" in err
    assert (tmp_path / "out" / "good.tif").exists() and not (tmp_path / "out" / "bad.tif").exists()


def test_one_failed_scene_under_out_dir_is_one_error_line(tmp_path, model_file, capsys):
    """A tester got the scene's error and then "1 of 1 scene(s) failed (see above)"."""
    bad = write_scene(tmp_path / "bad.tif", 40, 40, count=2)
    code = main(["predict", str(bad), "--out-dir", str(tmp_path / "out"), "--model", model_file,
                 "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("Error: ") and "bad.tif" in err[0]
    assert "scene(s) failed" not in err[0]


def test_the_api_warns_of_a_failed_scene_and_of_warnings_without_a_callback(tmp_path,
                                                                           model_file):
    """A notebook user calling predict on several scenes hears of a failure (it is not only in
    the results) and of the warnings, through Python's warnings, unless on_warning takes them."""
    from geopix2pix.errors import GeoPix2PixWarning

    good = write_scene(tmp_path / "good.tif", 40, 40)
    bad = write_scene(tmp_path / "bad.tif", 40, 40, count=2)
    coarse = write_scene(tmp_path / "coarse.tif", 40, 40,
                         transform=rasterio.transform.from_origin(500000.0, 4e6, 200.0, 200.0))
    with pytest.warns(GeoPix2PixWarning) as caught:
        results = predict([bad, good, coarse], out_dir=tmp_path / "out", model=model_file,
                          progress=False)
    messages = [str(w.message) for w in caught]
    assert [r.ok for r in results] == [False, True, True]
    assert any(m.startswith(f"{bad}") and m.endswith("(not written)") for m in messages), \
        messages
    assert any("differs" in m and "coarse.tif" in m for m in messages), messages
    ours = [w for w in caught if w.category is GeoPix2PixWarning]
    assert {w.filename for w in ours} == {__file__}  # at the caller's line, not inside
    with warnings.catch_warnings(record=True) as again:  # Python's default filter: a
        warnings.simplefilter("default")  # message once per line, yet a cell run again warns
        for run in ("twice", "thrice"):
            predict([coarse], out_dir=tmp_path / run, model=model_file, progress=False)
    assert sum("differs" in str(w.message) for w in again) == 2
    done: list = []
    predict([bad, good], out_dir=tmp_path / "heard", model=model_file, progress=False,
            on_result=done.append, on_warning=lambda _: None)
    assert [(r.scene, r.ok) for r in done] == [(Path(bad), False), (Path(good), True)]
    with pytest.warns(GeoPix2PixWarning) as caught:  # one scene: there are no others
        predict([bad], out_dir=tmp_path / "alone", model=model_file, progress=False)
    assert f"{results[0].error} (not written)" in [str(w.message) for w in caught]
    heard: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeoPix2PixWarning)  # none, with a callback
        results = predict([bad, coarse], out_dir=tmp_path / "again", model=model_file,
                          progress=False, on_warning=heard.append)
    assert not results[0].ok and any("differs" in m for m in heard)
    assert sum("not written" in m for m in heard) == 1  # on_warning takes the failure too


def _scenes_of_tiles(tmp_path) -> list[str]:
    """Small scenes of several sizes and dtypes (one smaller than a window)."""
    scenes = [write_scene(tmp_path / f"t{i}.tif", w, h, seed=i)
              for i, (w, h) in enumerate([(150, 90), (64, 64), (17, 61), (301, 203), (90, 150)])]
    deep = np.clip(np.random.default_rng(9).normal(30000, 9000, (3, 80, 120)), 1, 65000)
    scenes.append(write_scene(tmp_path / "t_uint16.tif", 120, 80, dtype="uint16",
                              data=deep.astype("uint16")))
    return scenes


def _no_reopen(*args):
    raise AssertionError("a scene read ahead needs no other handle")


def _run_counter(monkeypatch) -> list[int]:
    runs = []
    real = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda jobs, *a, **k: runs.append(len(jobs)) or
                        real(jobs, *a, **k))
    return runs


@pytest.mark.parametrize("workers", [1, 3])
def test_small_scenes_are_predicted_together_as_they_would_be_alone(tmp_path, model_file,
                                                                    monkeypatch, workers):
    """Consecutive small scenes go through one pipeline run (`grouped`): the same outputs, on
    the same grids, as predicting each alone; uint8 and uint16 scenes in one run. With several
    read workers (a GPU; forced here) the scenes are read ahead in parallel, each by one thread
    through its own dataset: no other handle is opened."""
    scenes = _scenes_of_tiles(tmp_path)
    runs = _run_counter(monkeypatch)
    monkeypatch.setattr(grouped, "reopen_scene", _no_reopen)
    monkeypatch.setenv(reading.WORKERS_VARIABLE, str(workers))
    readers = set()
    real_rows = reading._source_window_rows
    monkeypatch.setattr(reading, "_source_window_rows", lambda *a, **k: readers.add(
        threading.current_thread().name) or real_rows(*a, **k))
    together = predict(scenes, out_dir=tmp_path / "together", model=model_file,
                       progress=False, batch_size=5)
    assert runs == [len(scenes)]
    if workers == 1:
        assert readers == {"geopix2pix-read"}
    else:  # scenes read at once by several threads of the read-ahead pool
        assert len(readers) > 1 and all(r.startswith("geopix2pix-read-ahead_") for r in readers)
    assert pipeline_threads() == []
    monkeypatch.setenv(reading.WORKERS_VARIABLE, "1")
    monkeypatch.setattr(grouped, "SMALL_WINDOWS", 0)  # every scene alone
    alone = predict(scenes, out_dir=tmp_path / "alone", model=model_file, progress=False,
                    batch_size=5)
    assert runs == [len(scenes)] + [1] * len(scenes)
    for a, b in zip(together, alone):
        assert a.ok and b.ok and a.windows == b.windows > 0 and a.seconds > 0
        with rasterio.open(a.out) as x, rasterio.open(b.out) as y, rasterio.open(a.scene) as s:
            assert (x.crs, x.transform, x.shape, x.nodata) == (s.crs, s.transform, s.shape,
                                                                y.nodata)
            np.testing.assert_array_equal(x.read(1), y.read(1))  # batches cut rows alike
    assert sorted(p.name for p in (tmp_path / "together").iterdir()) == \
        sorted(Path(s).name for s in scenes)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_scene_failing_in_a_group_is_reported_and_the_others_written(tmp_path, model_file,
                                                                       monkeypatch, workers):
    """A scene that cannot be read makes its group's run fail: nothing of the run is kept, each
    scene is predicted again alone, and only the broken one fails. A scene failing its checks
    (band count) is kept out of the run from the start. Nothing partial is left."""
    scenes = _scenes_of_tiles(tmp_path)[:3]
    broken = write_damaged(tmp_path / "broken.tif")
    two = write_scene(tmp_path / "two.tif", 70, 70, count=2)
    order = [scenes[0], str(broken), scenes[1], two, scenes[2]]
    runs = _run_counter(monkeypatch)
    monkeypatch.setenv(reading.WORKERS_VARIABLE, str(workers))  # >1: read ahead in parallel
    results = predict(order, out_dir=tmp_path / "out", model=model_file, progress=False)
    assert pipeline_threads() == []
    assert [r.scene.name for r in results] == [Path(s).name for s in order]
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert "broken.tif" in results[1].error and "band" in results[3].error
    # the group (4 scenes that passed their checks), then each of them alone
    assert runs == [4, 1, 1, 1, 1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        sorted(Path(s).name for s in scenes)
    for result in results[::2]:
        with rasterio.open(result.out) as dst:
            assert dst.read(1).std() > 0


def test_a_scene_that_cannot_be_checked_in_a_group_is_predicted_alone(tmp_path, model_file,
                                                                      monkeypatch):
    """An unexpected error while a group's scenes are opened and checked (not one of ours, e.g.
    an OSError) keeps that scene out of the run; it is predicted alone, which reports its error
    or, as here where the failure does not repeat, writes it. No scene is silently dropped."""
    scenes = _scenes_of_tiles(tmp_path)[:4]
    failing = {Path(scenes[1]).name}
    real_check = grouped.check_scene

    def flaky_check(dataset, *args):
        if Path(dataset.name).name in failing:
            raise OSError("transient NFS hiccup")
        return real_check(dataset, *args)

    monkeypatch.setattr(grouped, "check_scene", flaky_check)
    runs = _run_counter(monkeypatch)
    results = predict(scenes, out_dir=tmp_path / "out", model=model_file, progress=False)
    assert runs == [3, 1]
    assert all(r.ok and r.written and r.windows > 0 for r in results)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        sorted(Path(s).name for s in scenes)


def test_an_output_folder_that_cannot_be_made_fails_every_scene_clearly(tmp_path, model_file,
                                                                         capsys):
    scenes = _scenes_of_tiles(tmp_path)[:3]
    (tmp_path / "taken").write_text("a file, not a folder")
    code = main(["predict", *scenes, "--out-dir", str(tmp_path / "taken" / "out"),
                 "--model", model_file, "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "3 of 3 scene(s) failed" in err
    assert err.count("cannot make the folder") == 3 and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "a file, not a folder"


@pytest.mark.parametrize("folds_case", [False, True])
def test_two_scenes_for_one_output_are_refused(tmp_path, model_file, capsys, monkeypatch,
                                               folds_case):
    """Outputs that are one file (the same path, or names differing only in case where case
    does not tell files apart: macOS and Windows by default; forced here) would overwrite each
    other: refused before any work on the command line, and for the later scene in the API,
    whose other scenes are still written. Where case tells files apart, both are written."""
    a, b, c = _scenes_of_tiles(tmp_path)[:3]
    (tmp_path / "other").mkdir()
    same_name = write_scene(tmp_path / "other" / Path(a).name, 40, 40)
    code = main(["predict", a, same_name, "--out-dir", str(tmp_path / "out"),
                 "--model", model_file, "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "would both be written to" in err
    assert not (tmp_path / "out").exists()

    monkeypatch.setattr(outputs, "case_insensitive", lambda folder: folds_case)
    out = tmp_path / "api"
    pairs = [(Path(a), out / "x.tif"), (Path(b), out / "X.tif"), (Path(c), out / "y.tif"),
             (Path(same_name), out / "y.tif")]
    results = predictor.predict_scenes(pairs, load_model(model_file),
                                       predictor.PredictOptions(progress=False))
    assert [r.ok for r in results] == [True, not folds_case, True, False]
    if folds_case:
        assert "also the output of" in results[1].error and str(b) in results[1].error
    assert results[3].error.startswith(f"{same_name}: its output")
    assert sorted(p.name for p in out.iterdir()) == \
        (["x.tif", "y.tif"] if folds_case else ["X.tif", "x.tif", "y.tif"])
    with rasterio.open(out / "y.tif") as dst:  # the first scene's, not overwritten
        assert dst.shape == rasterio.open(c).shape


def test_case_insensitive_tells_how_the_folder_compares_names(tmp_path):
    (tmp_path / "probe").write_text("")
    expected = (tmp_path / "PROBE").exists()  # True on macOS and Windows by default
    assert case_insensitive(tmp_path) is expected
    assert case_insensitive(tmp_path / "not" / "yet") is expected  # its nearest existing parent
    assert list(tmp_path.iterdir()) == [tmp_path / "probe"]


def test_an_output_appearing_during_a_group_fails_that_scene_only(tmp_path, model_file,
                                                                   monkeypatch):
    """A group's outputs are renamed one by one once the run is done: one whose file appeared
    meanwhile (another process) is kept and that scene fails; the others are kept, not
    predicted again."""
    scenes = _scenes_of_tiles(tmp_path)[:4]
    out = tmp_path / "out"
    runs = _run_counter(monkeypatch)
    real_run = pipeline.run

    def run_then_another_writes(jobs, *args, **kwargs):
        real_run(jobs, *args, **kwargs)
        (out / "t2.tif").write_text("another process's")

    monkeypatch.setattr(pipeline, "run", run_then_another_writes)
    results = predict(scenes, out_dir=out, model=model_file, progress=False)
    assert runs == [4] and [r.ok for r in results] == [True, True, False, True]  # no rerun
    assert "appeared while it was being written" in results[2].error
    assert (out / "t2.tif").read_text() == "another process's"
    assert sorted(p.name for p in out.iterdir()) == ["t0.tif", "t1.tif", "t2.tif", "t3.tif"]


def test_a_model_failing_while_scenes_are_read_ahead_leaves_no_thread(tmp_path, model_file,
                                                                       monkeypatch):
    scenes = _scenes_of_tiles(tmp_path)
    monkeypatch.setenv(reading.WORKERS_VARIABLE, "3")
    model = load_model(model_file)
    calls = []
    forward = model.generator.forward

    def failing(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return forward(x)

    monkeypatch.setattr(model.generator, "forward", failing)
    results = predict(scenes, out_dir=tmp_path / "out", model=model, progress=False,
                      batch_size=4)
    assert pipeline_threads() == []
    assert all(r.ok for r in results)  # the group failed once; each alone then succeeded
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        sorted(Path(s).name for s in scenes)


def test_a_damaged_scene_is_one_clear_line(tmp_path, model_file, capsys):
    """A scene whose tiles do not decode: GDAL's own words (not rasterio's "Read failed. See
    previous exception"), the scene named once, what to check, exit 2, no traceback; alone and
    among other scenes."""
    broken = str(write_damaged(tmp_path / "broken.tif"))
    good = write_scene(tmp_path / "good.tif", 40, 40)
    code = main(["predict", broken, str(tmp_path / "o.tif"), "--model", model_file, "-q"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err, = [line for line in err.splitlines() if not line.startswith("warning: ")]  # pixel size
    assert code == 2
    assert "IReadBlock failed" in err and "gdalinfo -checksum" in err and "See previous" not in err
    assert not (tmp_path / "o.tif").exists()
    code = main(["predict", good, broken, "--out-dir", str(tmp_path / "out"), "--model",
                 model_file, "-q"])
    lines = [line for line in capsys.readouterr().err.splitlines()
             if not line.startswith("warning: ")]
    assert code == 2 and len(lines) == 2 and "1 of 2 scene(s) failed" in lines[1]
    assert lines[0].startswith(f"Error: {broken}: ") and lines[0].count("broken.tif") == 2
    assert "IReadBlock failed" in lines[0]  # GDAL's message names the file once more
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.tif"]
    # over earlier outputs (--overwrite): the failed scene's is as it was, and said so (a
    # reviewer could not tell which outputs were of which run)
    (tmp_path / "out" / "broken.tif").write_bytes(b"earlier")
    code = main(["predict", good, broken, "--out-dir", str(tmp_path / "out"), "--model",
                 model_file, "-q", "--overwrite"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last == ("Error: 1 of 2 scene(s) failed (see above); the earlier "
                                  f"{tmp_path / 'out' / 'broken.tif'} is as it was")
    assert (tmp_path / "out" / "broken.tif").read_bytes() == b"earlier"


def test_an_output_is_never_one_of_the_input_scenes(tmp_path, model_file, capsys):
    """Even with --overwrite: OUT the scene itself, or --out-dir the scenes' own folder, would
    replace the inputs with predictions."""
    scenes = _scenes_of_tiles(tmp_path)[:2]
    before = [Path(s).read_bytes() for s in scenes]
    code = main(["predict", scenes[0], scenes[0], "--model", model_file, "--overwrite", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is the input scene" in err
    code = main(["predict", *scenes, "--out-dir", str(tmp_path), "--model", model_file,
                 "--overwrite", "-q"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines[-1] == "Error: 2 of 2 scene(s) failed (see above)"  # (no
    # "earlier outputs": they are the scenes)
    assert all("which it would replace" in line for line in lines[:-1])
    assert [Path(s).read_bytes() for s in scenes] == before
    # a file a VRT scene reads is an input too (a reviewer's DEM was replaced by its hillshade)
    vrt = str(tmp_path / "scene.vrt")
    rasterio.shutil.copy(scenes[0], vrt, driver="VRT")  # (it reads the scene's file)
    code = main(["predict", vrt, str(scenes[0]), "--model", model_file, "--overwrite", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"Error: {vrt}: its output {scenes[0]} is {scenes[0]}, which the "
                                 f"input scene {vrt} reads, which it would replace; choose another "
                                 "output")
    assert [Path(s).read_bytes() for s in scenes] == before


@pytest.mark.parametrize("name, expected", [
    ("dir/scene.tif", "scene"), ('NETCDF:"/d/a.nc":sst', "a_sst"), ('NETCDF:"a.nc":chl', "a_chl"),
    ('HDF4_EOS:EOS_GRID:"MOD09.hdf":Grid:sur_refl_b01', "MOD09_Grid_sur_refl_b01"),
    ("/vsizip//tmp/a.zip/s.tif", "s"), ("/vsicurl/https://host/x/y.tif", "y"),
    ("GPKG:/data/multi.gpkg:dem", "multi_dem"), ("https://example.com:8080/a/z.tif", "z"),
    ("SENTINEL2_L1C:/p/MTD_MSIL1C.xml:10m:EPSG_32633", "MTD_MSIL1C_10m_EPSG_32633"),
    ("GTIFF_DIR:2:/d/a.tif", "a_2"), ("GTIFF_DIR:2:D:\\d\\a.tif", "a_2"),
    ("cam_T10:20:30.tif", "cam_T10:20:30"), ("scene:v2.tif", "scene:v2")])
def test_outputs_are_named_after_the_scene_or_its_subdataset(tmp_path, name, expected):
    """Two variables of one NetCDF get outputs of their own (were both 'NETCDF:"a.tif')."""
    assert outputs.output_paths([name], None, tmp_path)[0][1] == tmp_path / f"{expected}.tif"


def test_a_scene_named_for_gdal_is_predicted_as_named(tmp_path, model_file):
    """/vsizip//abs/a.zip/s.tif (and so /vsicurl/https://.../s.tif): the name is GDAL's, not a
    path to fold into /vsizip/abs/... (which would name nothing); the output is named s.tif."""
    import zipfile

    scene = write_scene(tmp_path / "s.tif", 70, 50)
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(scene, "s.tif")
    name = f"/vsizip//{str(archive).lstrip('/')}/s.tif"
    assert "//" in name
    results = predict([name], out_dir=tmp_path / "out", model=model_file, progress=False)
    assert results[0].ok and results[0].scene == name, results[0].error
    with rasterio.open(tmp_path / "out" / "s.tif") as dst, rasterio.open(scene) as src:
        assert (dst.transform, dst.shape) == (src.transform, src.shape)
    assert main(["predict", name, str(tmp_path / "one.tif"), "-m", model_file, "-q",
                 "--resample-to-model"]) == 0
