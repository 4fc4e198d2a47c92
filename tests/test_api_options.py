"""The Python API's options are checked as the command line's are: a wrong name or a value of
the wrong type is one GeoPix2PixError naming it, before any work."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from predict_helpers import write_scene

import geopix2pix as g
from geopix2pix.errors import GeoPix2PixError


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    data = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    return write_raster(folder / "s.tif", data), write_raster(folder / "t.tif", data[:1])


@pytest.mark.parametrize("options, message", [
    (dict(source_bands=1), "source_bands=1: expected a list of integers or None"),
    (dict(source_bands="1"), "source_bands='1': expected a list of integers or None"),
    (dict(chip_size="64"), "chip_size='64': expected an integer"),
    (dict(max_nodata="0.1"), "max_nodata='0.1': expected a number"),
    (dict(overwrite="yes"), "overwrite='yes': expected True or False"),
])
def test_export_options_of_the_wrong_type_are_one_line(pair, tmp_path, options, message):
    with pytest.raises(GeoPix2PixError) as caught:
        g.export_chips(*pair, tmp_path / "chips", progress=False, **options)
    assert str(caught.value) == message
    assert not (tmp_path / "chips").exists()


@pytest.mark.parametrize("options, message", [
    (dict(overlap="0.5"), "overlap='0.5': expected a number"),
    (dict(bands=1), "bands=1: expected a list of integers or None"),
    (dict(creation_options=["ZLEVEL=1"]),
     "creation_options=['ZLEVEL=1']: expected a dict of strings to a string or an integer or "
     "a number or True or False"),
    (dict(co={"ZLEVEL": "1"}), "unknown predict option(s): co; valid: allow_no_crs, bands, "),
    (dict(device="gpu"), "--device gpu: use auto, cpu, cuda or cuda:N"),
    (dict(device="mps"), "--device mps: use auto, cpu, cuda or cuda:N"),
])
def test_predict_options_of_the_wrong_type_or_name_are_one_line(tmp_path, model_file, options,
                                                                 message):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with pytest.raises(GeoPix2PixError) as caught:
        g.predict(scene, tmp_path / "o.tif", model=model_file, progress=False, **options)
    assert str(caught.value).startswith(message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_creation_options_take_python_numbers_and_booleans(tmp_path, model_file):
    """creation_options={"ZLEVEL": 1} is how Python writes it: numbers become GDAL's text and
    booleans YES/NO (a tester's ZLEVEL=1 was refused: only "1" was accepted)."""
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    out = tmp_path / "o.tif"
    g.predict(scene, out, model=model_file, progress=False,
              creation_options={"ZLEVEL": 1, "BLOCKXSIZE": 256, "SPARSE_OK": True})
    from geopix2pix.settings.predict import PredictOptions
    assert PredictOptions(creation_options={"ZLEVEL": 1, "SPARSE_OK": False}).creation_options \
        == {"ZLEVEL": "1", "SPARSE_OK": "NO"}
    with rasterio.open(out) as dst:
        assert dst.profile["blockxsize"] == 256


def test_train_options_of_the_wrong_type_are_one_line(tmp_path):
    with pytest.raises(GeoPix2PixError, match=r"^max_steps='4': expected an integer or None$"):
        g.train(tmp_path / "chips", tmp_path / "run", max_steps="4")
    with pytest.raises(GeoPix2PixError, match=r"^lr='1e-3': expected a number or None$"):
        g.train(tmp_path / "chips", tmp_path / "run", lr="1e-3")
    assert not (tmp_path / "run").exists()
    from geopix2pix.training import TrainConfig

    # None: the default, here the paper recipe's length
    assert TrainConfig.from_options(epochs=None, max_steps=None, recipe="paper").epochs == 100


@pytest.mark.parametrize("options, message", [
    (dict(block=0), "block=0: expected a block size of at least 1 pixel"),
    (dict(block="512"), "block='512': expected an integer"),
    (dict(categorical="yes"), "categorical='yes': expected True or False"),
])
def test_evaluate_options_of_the_wrong_type_or_value_are_one_line(pair, options, message):
    with pytest.raises(GeoPix2PixError) as caught:
        g.evaluate(pair[1], pair[1], **options)
    assert str(caught.value) == message


def test_numbers_of_any_kind_and_tuples_are_accepted(pair, tmp_path):
    summary = g.export_chips(*pair, tmp_path / "chips", chip_size=np.int64(32),
                             source_bands=(1, 2), max_nodata=np.float32(0.5), progress=False)
    assert summary.kept["train"] + summary.kept.get("val", 0) > 0


# --- calls that do not fit the signature (api_function) -----------------------------------------

@pytest.fixture(scope="module")
def chips(pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("chips") / "chips"
    g.export_chips(*pair, out, chip_size=32, val_fraction=0, workers=0, progress=False)
    return out


def test_an_unknown_keyword_is_one_line_naming_it_and_the_valid_ones(pair, tmp_path):
    with pytest.raises(GeoPix2PixError) as caught:
        g.export_chips(*pair, tmp_path / "chips", chipsize=3)
    assert str(caught.value).startswith(
        "unknown export_chips option(s): chipsize; valid: aoi, aoi_layer, aoi_mode, chip_size, ")
    assert "\n" not in str(caught.value) and "workers" in str(caught.value)
    assert not (tmp_path / "chips").exists()


@pytest.mark.parametrize("call, message", [
    (lambda m, c: g.load_model(m, devce="cpu"),
     "unknown load_model option(s): devce; valid: device, path"),
    (lambda m, c: g.load_model(m, "cpu", 3),
     "load_model() takes at most 2 positional argument(s) (path, device) but got 3; pass the "
     "others by name"),
    (lambda m, c: g.load_model(),
     "load_model(): missing a required argument: 'path'; see help(geopix2pix.load_model)"),
    (lambda m, c: g.predict(c / "s.tif", c / "o.tif"),
     "predict(): missing a required argument: 'model'; see help(geopix2pix.predict)"),
    (lambda m, c: g.show_chips(c, nn=2),
     "unknown show_chips option(s): nn; valid: chips_dir, n, seed, size, split"),
    (lambda m, c: g.show_results(m, c, nn=2, spilt="val"),
     "unknown show_results option(s): nn, spilt; valid: baseline, chips_dir, model, n, seed, size, "
     "split"),
    (lambda m, c: g.plot_metrics(c, sise=3),
     "unknown plot_metrics option(s): sise; valid: run_dir, size"),
    (lambda m, c: g.plot_footprints(c, secne="s.tif"),
     "unknown plot_footprints option(s): secne; valid: chips_dir, scene, size"),
    (lambda m, c: g.ChipDataset(c, splt="val"),
     "unknown ChipDataset option(s): splt; valid: augment, chips_dir, classes, draw_targets, seed, "
     "source_scaling, split, target_scaling, unpaired, validity_band"),
    (lambda m, c: g.make_demo_scenes(c / "demo", ntrain=1),
     "unknown make_demo_scenes option(s): ntrain; valid: heldout_size, n_train, out_dir, "
     "overwrite, progress, seed, task, train_size"),
    (lambda m, c: g.run_demo(c / "demo", tsk="sat2map"),
     "unknown run_demo option(s): tsk; valid: out_dir, overwrite, progress, seed, settings, "
     "task, unpaired"),
])
def test_calls_that_do_not_fit_the_signature_are_one_line(model_file, tmp_path, call, message):
    with pytest.raises(GeoPix2PixError) as caught:
        call(model_file, tmp_path)
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


def test_the_checked_functions_keep_their_signature_and_help():
    import inspect
    import typing

    assert list(inspect.signature(g.export_chips).parameters)[:4] == [
        "source", "target", "out_dir", "pairs"]
    assert "Export aligned training chips" in g.export_chips.__doc__
    assert typing.get_type_hints(g.load_model)["return"].__name__ == "LoadedModel"
    assert g.predict.__wrapped__.__name__ == "predict"
    assert list(inspect.signature(g.ChipDataset).parameters)[:2] == ["chips_dir", "split"]


@pytest.mark.parametrize("keywords, options", [
    ("geopix2pix.settings.train:TrainKeywords", "geopix2pix.settings.train:TrainConfig"),
    ("geopix2pix.settings.predict:PredictKeywords",
     "geopix2pix.settings.predict:PredictOptions"),
    ("geopix2pix.settings.export:ExportKeywords", "geopix2pix.settings.export:ExportOptions"),
])
def test_keyword_types_name_every_option_with_its_type(keywords, options):
    """`train(**options)`, `predict(**options)` and `export_chips(**options)` are typed by
    TypedDicts (PEP 692): each must name exactly its options dataclass's fields, with the same
    types, so an IDE or a type checker sees every option and no option is hidden or left out."""
    import dataclasses
    import importlib
    import typing

    def resolve(name):
        module, attr = name.split(":")
        return getattr(importlib.import_module(module), attr)

    typed, config = resolve(keywords), resolve(options)
    fields = [f.name for f in dataclasses.fields(config)]
    assert list(typing.get_type_hints(typed)) == fields
    hints = typing.get_type_hints(config)
    assert typing.get_type_hints(typed) == {name: hints[name] for name in fields}
    assert typed.__total__ is False  # every option may be left out


@pytest.mark.parametrize("function, options", [
    ("geopix2pix.evaluation.evaluate:evaluate", "geopix2pix.settings.evaluate:EvaluateOptions"),
    ("geopix2pix.demo.pipeline:run_demo", "geopix2pix.settings.demo:DemoOptions"),
])
def test_functions_with_their_own_signature_take_the_declared_defaults(function, options):
    """evaluate and run_demo keep their arguments in their signature (they may be passed by
    position): each option the command line declares for them is one of those arguments (or,
    for the demo, a size of `DemoSettings`), with the declared default."""
    import dataclasses
    import importlib
    import inspect

    from geopix2pix.settings.demo import DemoSettings

    module, attr = function.split(":")
    parameters = inspect.signature(getattr(importlib.import_module(module), attr)).parameters
    module, attr = options.split(":")
    declared = {f.name: f.default for f in dataclasses.fields(
        getattr(importlib.import_module(module), attr))}
    for name, default in declared.items():
        if name in parameters:
            assert parameters[name].default == default, name
        elif name == "max_steps":  # --steps: the run size's (DemoSettings's, or small()'s)
            assert default is None
        elif name != "quick":  # --quick: DemoSettings.small()
            assert getattr(DemoSettings(), name) == default, name


def test_train_and_predict_declare_their_options_typed():
    import inspect

    for function, keywords in ((g.train, "TrainKeywords"), (g.predict, "PredictKeywords"),
                               (g.export_chips, "ExportKeywords")):
        options = inspect.signature(function).parameters["options"]
        assert options.kind is inspect.Parameter.VAR_KEYWORD
        assert options.annotation == f"Unpack[{keywords}]"


# --- export_chips(pairs=...) --------------------------------------------------------------------

def test_malformed_pairs_are_one_line(pair, tmp_path):
    source, target = (str(p) for p in pair)
    out = tmp_path / "chips"
    cases = [
        (dict(pairs=[(source,)]), f"pairs[0]=({source!r},): expected a (source, target) pair "
                                  "of paths, as in pairs=[(source, target), ...]"),
        (dict(pairs=[(source, target), (source, target, target)]),
         f"pairs[1]=({source!r}, {target!r}, {target!r}): expected a (source, target) pair of "
         "paths, as in pairs=[(source, target), ...]"),
        (dict(pairs=(source, target)), f"pairs[0]={source!r}: expected a (source, target) pair "
                                       "of paths, as in pairs=[(source, target), ...]"),
        (dict(pairs=[(source, None)]), f"pairs[0]=({source!r}, None): expected a (source, "
                                       "target) pair of paths, as in pairs=[(source, target), "
                                       "...]"),
        (dict(pairs=[]), "pairs=[]: expected at least one (source, target) pair of paths"),
        (dict(pairs=3), "pairs=3: expected a CSV path or a list of (source, target) pairs of "
                        "paths"),
    ]
    for options, message in cases:
        with pytest.raises(GeoPix2PixError) as caught:
            g.export_chips(out_dir=out, progress=False, **options)
        assert str(caught.value) == message
    assert not out.exists()


def test_pairs_with_source_and_target_are_refused(pair, tmp_path):
    for args in (pair, (pair[0], None)):
        with pytest.raises(GeoPix2PixError) as caught:
            g.export_chips(*args, tmp_path / "chips", pairs=[pair], progress=False)
        assert str(caught.value) == ("give source and target (one pair) or pairs (a CSV or a "
                                     "list of (source, target) pairs), not both")
    assert not (tmp_path / "chips").exists()


def test_pairs_may_be_any_iterable_of_pairs(pair, tmp_path):
    summary = g.export_chips(pairs=zip([pair[0]], [pair[1]]), out_dir=tmp_path / "chips",
                             chip_size=32, val_fraction=0, workers=0, progress=False)
    assert summary.kept["train"] == 4


# --- predict and load_model ---------------------------------------------------------------------

def test_predict_compression_and_model_are_checked_in_one_line(tmp_path, model_file):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    for options, message in [
        (dict(model=model_file, compress="jpeg"),
         "--compress jpeg: use one of deflate, zstd, lzw, none"),  # (the option's flag)
        (dict(model=None), "model=None: expected a model file (e.g. run/model.safetensors) or a "
                           "model from geopix2pix.load_model"),
    ]:
        with pytest.raises(GeoPix2PixError) as caught:
            g.predict(scene, tmp_path / "o.tif", progress=False, **options)
        assert str(caught.value) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


@pytest.mark.parametrize("device, message", [
    ("tpu", "device='tpu': use auto, cpu, cuda or cuda:N"),
    ("gpu", "device='gpu': use auto, cpu, cuda or cuda:N"),
    pytest.param("cuda", "device='cuda': no CUDA device is available; use device='cpu'",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
])
def test_load_model_refuses_a_device_it_cannot_use_in_one_line(model_file, device, message):
    with pytest.raises(GeoPix2PixError) as caught:
        g.load_model(model_file, device=device)
    assert str(caught.value) == message


def test_a_gpu_number_beyond_the_visible_ones_is_one_line(model_file, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(GeoPix2PixError) as caught:
        g.load_model(model_file, device="cuda:2")
    assert str(caught.value) == ("device='cuda:2': only 2 CUDA device(s) are visible; use "
                                 "cuda:0 to cuda:1")


def test_load_model_needs_a_path_and_takes_auto(model_file):
    with pytest.raises(GeoPix2PixError) as caught:
        g.load_model(None)
    assert str(caught.value) == ("path=None: expected the path of a model file, e.g. "
                                 "run/model.safetensors")
    model = g.load_model(model_file, device="auto")
    assert isinstance(model, g.LoadedModel) and not model.generator.training


# --- plots --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, message", [
    (0, "n=0: expected the number of chips to show, at least 1"),
    (-2, "n=-2: expected the number of chips to show, at least 1"),
    ("2", "n='2': expected an integer"),
])
def test_show_chips_needs_a_number_of_chips(chips, model_file, n, message):
    pytest.importorskip("matplotlib")
    for show in (lambda: g.show_chips(chips, n=n), lambda: g.show_results(model_file, chips, n)):
        with pytest.raises(GeoPix2PixError) as caught:
            show()
        assert str(caught.value) == message


def test_show_results_refuses_a_model_for_other_bands(chips, tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    from predict_helpers import unet_file

    model = unet_file(tmp_path / "rgbn.safetensors", in_ch=4)
    figures = plt.get_fignums()
    with pytest.raises(GeoPix2PixError) as caught:
        g.show_results(model, chips, n=1, split="train")
    assert str(caught.value) == (
        f"{chips}: its chips have 2 source and 1 target band(s) but the model takes 4 and gives "
        "1; pass the chips folder the model was trained on (or chips exported with the same "
        "bands)")
    assert plt.get_fignums() == figures  # no figure left open


# --- the package: typed, light to import, every name it lists ------------------------------------

def test_evaluate_and_train_name_a_wrong_keyword_or_argument(pair, tmp_path):
    with pytest.raises(GeoPix2PixError) as caught:
        g.evaluate(pair[1], pair[1], categoricl=True)
    assert str(caught.value) == (
        "unknown evaluate option(s): categoricl; valid: bands, block, categorical, json_path, "
        "nodata, overwrite, pred, reference, reference_bands, reference_nodata")
    with pytest.raises(GeoPix2PixError, match=r"^train\(\): missing a required argument"):
        g.train(tmp_path / "chips")


def test_a_misspelt_required_keyword_is_named(tmp_path):
    with pytest.raises(GeoPix2PixError) as caught:
        g.predict(tmp_path / "a.tif", tmp_path / "b.tif", modle="m.safetensors")
    assert str(caught.value) == ("predict(): missing 'model' (given as 'modle'?); "
                                 "see help(geopix2pix.predict)")


@pytest.mark.parametrize("options, message", [
    (dict(source_scaling="zscore"), "--source-scaling zscore: use one of percentile, minmax, "
                                    "centre"),
    (dict(target_scaling="centre"), "--target-scaling centre: use percentile or minmax (centre "
                                    "cannot be inverted at prediction)"),
    (dict(aoi_mode="inside"), "--aoi-mode inside: use one of intersects, within"),  # no aoi
])
def test_export_choices_name_the_bad_value(pair, tmp_path, options, message):
    with pytest.raises(GeoPix2PixError) as caught:
        g.export_chips(*pair, tmp_path / "chips", progress=False, **options)
    assert str(caught.value) == message


def test_a_bad_overlap_is_refused_before_any_scene_is_opened(tmp_path, model_file):
    warnings: list[str] = []
    with pytest.raises(GeoPix2PixError, match=r"^--overlap 1.0: use a fraction"):
        g.predict(tmp_path / "missing.tif", tmp_path / "o.tif", model=model_file, overlap=1.0,
                  progress=False, on_warning=warnings.append)
    assert warnings == []  # not "no such file" either: the options come first


def test_a_folder_as_scene_or_output_is_named_in_the_api_too(tmp_path, model_file):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with pytest.raises(GeoPix2PixError, match=r"^SCENE .* is a folder, not a raster"):
        g.predict(tmp_path, tmp_path / "o.tif", model=model_file, progress=False)
    with pytest.raises(GeoPix2PixError, match=r"^OUT .* is a folder; .* pass --out-dir"):
        g.predict(scene, tmp_path, model=model_file, progress=False)

