"""The Python API as a notebook user meets it: paths and settings of the wrong kind are one
GeoPix2PixError (not a TypeError from pathlib or a dataclass), a generator of paths is taken,
numbers below an option's minimum are refused as the command line refuses them, tab completion
shows the whole API, failures reach `on_warning`, and a run leaves the caller's random
generators as they were."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_raster
from predict_helpers import write_scene

import geopix2pix as g
from geopix2pix.errors import GeoPix2PixError


@pytest.mark.parametrize("call, message", [
    (lambda m, t: g.predict(None, t / "p.tif", model=m),
     "predict(): scenes=None: expected a path or a list of paths"),
    (lambda m, t: g.predict(5, t / "p.tif", model=m),
     "predict(): scenes=5: expected a path or a list of paths"),
    (lambda m, t: g.predict([t / "a.tif", None], out_dir=t / "out", model=m),
     "predict(): scenes=[PosixPath"),
    (lambda m, t: g.ChipDataset(None), "ChipDataset(): chips_dir=None: expected a path"),
    (lambda m, t: g.ChipDataset(5), "ChipDataset(): chips_dir=5: expected a path"),
    (lambda m, t: g.run_demo(t / "demo", settings={"max_steps": 5}),
     "run_demo(): settings={'max_steps': 5}: expected a DemoSettings"),
    (lambda m, t: g.run_demo(t / "demo", settings=g.DemoSettings(max_steps="5")),
     "DemoSettings.max_steps='5': expected an integer"),
    (lambda m, t: g.predict(t / "a.tif", t / "p.tif", model=m, batch_size=0),
     "--batch-size 0: use at least 1"),
])
def test_arguments_of_the_wrong_kind_are_one_line(model_file, tmp_path, call, message):
    with pytest.raises(GeoPix2PixError) as caught:
        call(model_file, tmp_path)
    assert str(caught.value).startswith(message), caught.value
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [0, -1, 1000, "3"])
def test_a_figure_size_that_cannot_be_drawn_is_one_line(tmp_path, size):
    pytest.importorskip("matplotlib")
    with pytest.raises(GeoPix2PixError, match=r"^size=.*: expected"):
        g.plot_metrics(tmp_path, size=size)


def test_tab_completion_lists_the_whole_api():
    names = dir(g)
    assert set(g.__all__) <= set(names)
    assert g.DemoSettings.small().max_steps < g.DemoSettings().max_steps


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return Path(write_scene(tmp_path_factory.mktemp("scene") / "scene.tif", 48, 48))


def test_a_generator_of_scenes_is_predicted_and_failures_reach_on_warning(model_file, scene,
                                                                           tmp_path):
    """`Path.glob` gives a generator: every scene in it is predicted (the check of the
    paths reads it once). A scene that fails goes to `on_warning` as the docs say."""
    heard: list[str] = []
    missing = tmp_path / "missing.tif"
    results = g.predict((p for p in [Path(scene), missing]), out_dir=tmp_path / "out",
                        model=model_file, progress=False, on_warning=heard.append)
    assert [r.ok for r in results] == [True, False]
    assert (tmp_path / "out" / "scene.tif").exists()
    assert len(heard) == 1 and str(missing) in heard[0] and heard[0].endswith("(not written)")


def test_training_leaves_the_callers_random_generators_as_they_were(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 255, (3, 96, 96)).astype(np.float32)
    target = (source.mean(0, keepdims=True) / 2).astype(np.float32)
    src = write_raster(tmp_path / "src.tif", source)
    tgt = write_raster(tmp_path / "tgt.tif", target)
    g.export_chips(src, tgt, tmp_path / "chips", chip_size=32, workers=0, progress=False)

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    expected = draws()
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    g.train(tmp_path / "chips", tmp_path / "run", max_steps=2, batch_size=2, workers=0,
            device="cpu", quiet=True, log=lambda line: None)
    assert draws() == expected
