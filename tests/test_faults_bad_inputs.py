"""The fault battery, bad inputs: what each command promises when it is given a missing, empty,
damaged or odd input. Read each table as a list of promises: the command exits with status 2,
prints one line (after the `warning:` or progress lines a row states) naming the file or option
and what to do, shows no traceback, changes none of its inputs and leaves nothing behind in the
output's folder (earlier outputs there are kept as they were). docs/faults.md counts these
cases."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from fault_inputs import make_inputs

from geopix2pix.cli import main

# --- the inputs ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The folder of inputs, good and bad (`fault_inputs`): {w} in the rows."""
    return make_inputs(tmp_path_factory.mktemp("world"))


def snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every entry under `folder`: size and modification time of files, None for folders."""
    return {str(p.relative_to(folder)): None if p.is_dir() else (p.stat().st_size,
                                                                p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def world_before(world) -> dict:
    return snapshot(world)


# --- the promise -----------------------------------------------------------------------------

def refused(capsys, args: list[str], *needles: str, before: tuple[str, ...] = ()) -> str:
    """Run the command line: exit 2, then on stderr one line starting with each prefix of
    `before` (a stated `warning: ` or progress line) and one "Error: " line holding every
    needle; no traceback, nothing on stdout. Returns the error line."""
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err, captured.err
    assert len(lines) == len(before) + 1, captured.err
    assert all(line.startswith(prefix) for line, prefix in zip(lines, before)), captured.err
    assert lines[-1].startswith("Error: "), captured.err
    for needle in needles:
        assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"
    assert captured.out == "", captured.out
    return lines[-1]


def case(cid: str, args: list[str], *needles: str, before: tuple[str, ...] = (),
         files: dict[str, bytes] | None = None):
    """One row: the arguments ({w}: the inputs' folder, {t}: an empty folder for outputs), what
    the error line must name, the lines stated before it, and earlier outputs to keep."""
    return pytest.param(args, needles, before, files, id=f"{args[0]}-{cid}")


PARAMS = "args, needles, before, files"


# --- export-chips --------------------------------------------------------------------------------



def export(source: str, target: str, *extra: str) -> list[str]:
    return ["export-chips", f"{{w}}/{source}", f"{{w}}/{target}", "-o", "{t}/chips", "-q",
            "--chip-size", "32", "--workers", "0", *extra]


def pairs(csv: str) -> list[str]:
    return ["export-chips", "--pairs", f"{{w}}/{csv}", "-o", "{t}/chips", "-q"]


EXPORT = [
    case("missing-source", export("nope.tif", "tgt.tif"), "{w}/nope.tif", "no such file"),
    case("missing-target", export("src.tif", "nope.tif"), "{w}/nope.tif", "no such file"),
    case("empty-source", export("empty.tif", "tgt.tif"), "{w}/empty.tif", "not a raster"),
    case("empty-target", export("src.tif", "empty.tif"), "{w}/empty.tif", "not a raster"),
    case("damaged-source", export("damaged.tif", "tgt.tif"), "damaged.tif", "damaged"),
    case("damaged-target", export("src.tif", "damaged.tif"), "damaged.tif", "damaged"),
    case("text-source", export("text.tif", "tgt.tif"), "{w}/text.tif is not a raster"),
    case("text-target", export("src.tif", "text.tif"), "{w}/text.tif is not a raster"),
    case("png-without-georeferencing", export("plain.png", "tgt.tif"), "{w}/plain.png",
         "no CRS"),
    case("folder-as-source", export("adir", "tgt.tif"), "{w}/adir", "is a directory"),
    case("folder-as-target", export("src.tif", "adir"), "{w}/adir", "is a directory"),
    case("target-without-crs", export("src.tif", "nocrs.tif"), "{w}/nocrs.tif", "no CRS"),
    case("source-of-one-pixel", export("tiny.tif", "tgt.tif"), "{w}/tiny.tif", "1 x 1"),
    case("target-of-one-pixel", export("src.tif", "tiny.tif"), "{w}/tiny.tif", "1 x 1"),
    case("all-nodata-source", export("nodata.tif", "tgt.tif"), "no chip"),
    case("nan-only-source", export("nan.tif", "tgt.tif"), "no chip"),
    case("all-nodata-target", export("src.tif", "nodata.tif"), "no chip"),
    case("target-band-out-of-range", export("src.tif", "tgt.tif", "--target-bands", "2"),
         "band 2 does not exist", "tgt.tif"),
    case("missing-aoi", export("src.tif", "tgt.tif", "--aoi", "{w}/nope.gpkg"),
         "{w}/nope.gpkg", "no such file"),
    case("text-aoi", export("src.tif", "tgt.tif", "--aoi", "{w}/aoi_text.gpkg"),
         "{w}/aoi_text.gpkg", "not a vector file"),
    case("empty-aoi", export("src.tif", "tgt.tif", "--aoi", "{w}/aoi_empty.gpkg"),
         "{w}/aoi_empty.gpkg", "not a vector file"),
    case("raster-as-aoi", export("src.tif", "tgt.tif", "--aoi", "{w}/tgt.tif"),
         "{w}/tgt.tif", "not a vector file"),
    case("folder-as-aoi", export("src.tif", "tgt.tif", "--aoi", "{w}/adir"), "{w}/adir",
         "is a directory"),
    case("missing-target-mask", export("src.tif", "tgt.tif", "--target-mask", "{w}/nope.tif"),
         "--target-mask {w}/nope.tif: no such file"),
    case("mask-without-crs", export("src.tif", "tgt.tif", "--source-mask", "{w}/nocrs.tif"),
         "--source-mask", "no CRS"),
    case("mask-without-overlap", export("src.tif", "tgt.tif", "--target-mask",
                                        "{w}/pred_far.tif"), "does not overlap the source"),
    case("text-as-mask", export("src.tif", "tgt.tif", "--target-mask", "{w}/text.tif"),
         "--target-mask", "{w}/text.tif is not a raster"),
    case("mask-code-beyond-its-dtype", export("src.tif", "tgt.tif", "--target-mask",
                                              "{w}/mask_u8.tif", "--mask-values", "3,300"),
         "cannot be 300"),
    case("mask-not-0-or-1", export("src.tif", "tgt.tif", "--target-mask", "{w}/ref.tif"),
         "where a 0/1 mask (1 invalid) is expected"),
    case("mask-values-without-a-mask", export("src.tif", "tgt.tif", "--mask-values", "3"),
         "--mask-values needs a mask"),
    case("mask-values-not-numbers", export("src.tif", "tgt.tif", "--mask-values", "cloud"),
         "--mask-values cloud: give the mask codes"),
    case("damaged-target-with-correct-shift", export("src.tif", "damaged.tif",
                                                     "--correct-shift"), "damaged.tif", "damaged"),
    case("correct-shift-without-the-check", export("src.tif", "tgt.tif", "--correct-shift",
                                                   "--no-shift-check"),
         "--correct-shift needs the shift check"),
    case("source-nodata-past-its-dtype", export("src.tif", "tgt.tif", "--source-nodata",
                                                "1e40"),
         "--source-nodata 1e+40: {w}/src.tif is float32, which cannot hold 1e+40"),
    case("max-nodata-above-1", export("src.tif", "tgt.tif", "--max-nodata", "1.5"),
         "--max-nodata 1.5: use a fraction"),
    case("val-fraction-above-1", export("src.tif", "tgt.tif", "--val-fraction", "1.5"),
         "--val-fraction 1.5: use a fraction"),
    case("negative-val-fraction", export("src.tif", "tgt.tif", "--val-fraction", "-0.1"),
         "--val-fraction -0.1: use a fraction"),
    case("chip-size-not-a-number", export("src.tif", "tgt.tif", "--chip-size", "big"),
         "--chip-size", "'big' is not a valid integer"),
    case("unknown-resampling", export("src.tif", "tgt.tif", "--target-resampling", "lanczos"),
         "--target-resampling"),
    case("chip-larger-than-the-rasters", export("src.tif", "tgt.tif", "--chip-size", "256"),
         "--chip-size 256 is larger than the overlap of {w}/src.tif and {w}/tgt.tif"),
    case("missing-pairs-csv", pairs("nope.csv"), "{w}/nope.csv", "no such file"),
    case("folder-as-pairs-csv", pairs("pairs_dir.csv"), "{w}/pairs_dir.csv",
         "is a directory"),
    case("pairs-csv-naming-a-missing-raster", pairs("pairs_missing.csv"),
         "{w}/pairs_missing.csv, line 2", "{w}/nope.tif"),
    case("pairs-csv-naming-an-empty-raster", pairs("pairs_empty_raster.csv"),
         "{w}/empty.tif", "not a raster"),
    case("pairs-and-rasters-together",
         ["export-chips", "{w}/src.tif", "{w}/tgt.tif", "--pairs", "{w}/pairs_missing.csv",
          "-o", "{t}/chips"], "--pairs, not both"),
    case("neither-pairs-nor-rasters", ["export-chips", "-o", "{t}/chips"],
         "give SOURCE and TARGET, or --pairs"),
    case("only-a-source", ["export-chips", "{w}/src.tif", "-o", "{t}/chips"],
         "give SOURCE and TARGET"),
    case("output-is-a-file", ["export-chips", "{w}/src.tif", "{w}/tgt.tif", "-o",
                              "{w}/text.tif"], "{w}/text.tif", "is a file"),
]



# --- train ---------------------------------------------------------------------------------------

TINY = ["--recipe", "paper",
        "--ngf", "8", "--ndf", "8", "--batch-size", "2", "--workers", "0", "--max-steps", "1",
        "--device", "cpu", "-q"]
STARTED = ("training on cpu",)  # the line train prints once its data and model are ready
EARLIER_RUN = {"run/model.safetensors": b"earlier", "run/train.json": b"{}"}


def train(chips: str, *extra: str) -> list[str]:
    return ["train", f"{{w}}/{chips}", "-o", "{t}/run", *TINY, *extra]


TRAIN = [
    case("missing-chips-folder", train("nope"), "{w}/nope", "export-chips"),
    case("file-as-chips-folder", train("src.tif"), "{w}/src.tif", "is a file"),
    case("empty-chips-folder", train("chips_empty"), "{w}/chips_empty", "export-chips"),
    case("chips-without-dataset-json", train("chips_nojson"), "{w}/chips_nojson",
         "incomplete"),
    case("empty-dataset-json", train("chips_json_empty"), "{w}/chips_json_empty/dataset.json",
         "rerun geopix2pix export-chips"),
    case("dataset-json-not-json", train("chips_json_text"), "{w}/chips_json_text/dataset.json",
         "rerun geopix2pix export-chips"),
    case("dataset-json-a-list", train("chips_json_list"), "{w}/chips_json_list",
         "not a JSON object"),
    case("dataset-json-bands-beyond-stats", train("chips_json_bands"),
         "{w}/chips_json_bands/dataset.json", "source.stats is not one per band (7)"),
    case("dataset-json-scaling-mode", train("chips_json_mode"),
         "{w}/chips_json_mode/dataset.json", "source.scaling_mode is 'zzz'"),
    case("dataset-json-pixel-size", train("chips_json_pixel"),
         "{w}/chips_json_pixel/dataset.json", "pixel_size is [-5, 0]"),
    case("dataset-json-complex-dtype", train("chips_json_dtype"),
         "{w}/chips_json_dtype/dataset.json", "target.dtype is 'complex64'"),
    case("dataset-json-nodata-text", train("chips_json_nodata"),
         "{w}/chips_json_nodata/dataset.json", "source.nodata is 'abc'"),
    case("dataset-json-stats-out-of-order", train("chips_json_stats"),
         "{w}/chips_json_stats/dataset.json", "source.stats give the scaling"),
    case("dataset-json-other-chip-size", train("chips_json_size"),
         "{w}/chips_json_size/source/", "32 x 32 px", "says 2 band(s) of 64 x 64 px"),
    # found as the baselines are fitted on the train chips, before training starts
    case("a-chip-missing", train("chips_chip_missing"), "{w}/chips_chip_missing/source/",
         "is missing", "rerun the export"),
    case("an-empty-chip", train("chips_chip_empty"), "{w}/chips_chip_empty/source/",
         "damaged", "rerun the export"),
    case("a-text-chip", train("chips_chip_text"), "{w}/chips_chip_text/target/",
         "damaged", "rerun the export"),
    case("resume-without-a-run", train("chips", "--resume"),
         "{t}/run/checkpoint.pt does not exist"),
    case("resume-without-a-checkpoint", train("chips", "--resume"),
         "{t}/run/checkpoint.pt does not exist",
         files={"run/train.json": b"{}"}),
    case("earlier-run-without-overwrite", train("chips"), "{t}/run", "--overwrite",
         files=EARLIER_RUN),
    case("missing-encoder-weights", train("chips", "--generator", "smp:Unet:resnet18",
                                          "--encoder-weights", "{w}/nope.pt"), "{w}/nope.pt",
         "no such file"),
    case("empty-encoder-weights", train("chips", "--generator", "smp:Unet:resnet18",
                                        "--encoder-weights", "{w}/empty.tif"), "{w}/empty.tif"),
    case("folder-as-encoder-weights", train("chips", "--generator", "smp:Unet:resnet18",
                                            "--encoder-weights", "{w}/adir"), "{w}/adir",
         "is a directory"),
    case("unknown-generator", train("chips", "--generator", "vgg"), "--generator vgg",
         "unknown generator"),
    case("unknown-smp-encoder", train("chips", "--generator", "smp:Unet:nosuchnet"),
         "unknown smp encoder 'nosuchnet'"),
    case("batch-size-0", train("chips", "--batch-size", "0"), "--batch-size"),
    case("max-steps-0", train("chips", "--max-steps", "0"), "--max-steps"),
    case("epochs-0", train("chips", "--epochs", "0", "--decay-epochs", "0"), "--epochs"),
    case("negative-decay-epochs", train("chips", "--decay-epochs", "-1"), "--decay-epochs"),
    case("ngf-0", train("chips", "--ngf", "0"), "--ngf"),
    case("negative-workers", train("chips", "--workers", "-1"), "--workers"),
    case("output-is-a-file", ["train", "{w}/chips", "-o", "{w}/text.tif", *TINY],
         "{w}/text.tif", "is a file"),
]



# --- predict ---------------------------------------------------------------------------------

def predict(scene: str, *extra: str, model: str = "model.safetensors") -> list[str]:
    return ["predict", f"{{w}}/{scene}", "{t}/out.tif", "-m", f"{{w}}/{model}", "-q",
            "--device", "cpu", *extra]


PREDICT = [
    case("missing-scene", predict("nope.tif"), "{w}/nope.tif", "no such file"),
    case("empty-scene", predict("empty.tif"), "{w}/empty.tif", "not a raster"),
    case("text-scene", predict("text.tif"), "{w}/text.tif", "not a raster"),
    case("png-without-georeferencing", predict("plain.png"), "{w}/plain.png",
         "--allow-no-crs"),
    case("scene-without-crs", predict("scene_nocrs.tif"), "scene_nocrs.tif", "--allow-no-crs"),
    case("band-out-of-range", predict("scene.tif", "--bands", "1,2,9"),
         "band 9 does not exist in {w}/scene.tif"),
    case("band-0", predict("scene.tif", "--bands", "0,1,2"), "start at 1"),
    case("source-nodata-an-integer-cannot-hold", predict("scene.tif", "--source-nodata", "nan"),
         "--source-nodata nan: {w}/scene.tif is uint8", "cannot hold NaN"),
    case("too-few-bands", predict("scene.tif", "--bands", "1,2"), "--bands 1,2",
         "the model takes 3"),
    case("missing-model", predict("scene.tif", model="nope.safetensors"),
         "{w}/nope.safetensors does not exist"),
    case("empty-model", predict("scene.tif", model="model_empty.safetensors"),
         "{w}/model_empty.safetensors is not a geopix2pix model file"),
    case("text-model", predict("scene.tif", model="model_text.safetensors"),
         "{w}/model_text.safetensors is not a geopix2pix model file"),
    case("truncated-model", predict("scene.tif", model="model_cut.safetensors"),
         "{w}/model_cut.safetensors is not a geopix2pix model file"),
    case("raster-as-model", predict("scene.tif", model="scene.tif"),
         "{w}/scene.tif is not a geopix2pix model file"),
    case("overlap-1", predict("scene.tif", "--overlap", "1"), "--overlap"),
    case("negative-overlap", predict("scene.tif", "--overlap", "-0.5"), "--overlap"),
    case("batch-size-0", predict("scene.tif", "--batch-size", "0"), "--batch-size"),
    case("unknown-compression", predict("scene.tif", "--compress", "jpeg2000"), "--compress"),
    case("bad-creation-option", predict("scene.tif", "--co", "NOEQUALS"), "NOEQUALS"),
    case("earlier-output-without-overwrite", predict("scene.tif"), "{t}/out.tif",
         "--overwrite", files={"out.tif": b"earlier"}),
    case("two-scenes-one-out", ["predict", "{w}/scene.tif", "{w}/scene_tiny.tif",
                                "{t}/out.tif", "-m", "{w}/model.safetensors"],
         "several scenes with --out-dir"),
    case("out-dir-is-a-file", ["predict", "{w}/scene.tif", "--out-dir", "{w}/text.tif", "-m",
                               "{w}/model.safetensors"], "{w}/text.tif", "is a file"),
]



def test_predict_takes_a_scene_of_one_pixel(world, tmp_path, capsys):
    """Odd but valid: a 1 x 1 scene is predicted (its window reflect-padded) on its grid."""
    out = tmp_path / "out.tif"
    assert main(["predict", str(world / "scene_tiny.tif"), str(out), "-m",
                 str(world / "model.safetensors"), "-q", "--device", "cpu"]) == 0
    assert capsys.readouterr().err == ""
    with rasterio.open(out) as pred, rasterio.open(world / "scene_tiny.tif") as scene:
        assert (pred.width, pred.height, pred.crs, pred.transform) == (1, 1, scene.crs,
                                                                       scene.transform)


# --- evaluate --------------------------------------------------------------------------------

def evaluate(pred: str, reference: str, *extra: str) -> list[str]:
    return ["evaluate", f"{{w}}/{pred}", f"{{w}}/{reference}", *extra]


EVALUATE = [
    case("missing-prediction", evaluate("nope.tif", "ref.tif"), "{w}/nope.tif", "no such file"),
    case("missing-reference", evaluate("pred.tif", "nope.tif"), "{w}/nope.tif", "no such file"),
    case("reference-nodata-past-its-dtype", evaluate("pred.tif", "scene.tif",
                                                     "--reference-nodata", "300"),
         "--reference-nodata 300: {w}/scene.tif is uint8", "cannot hold 300"),
    case("empty-prediction", evaluate("empty.tif", "ref.tif"), "{w}/empty.tif", "not a raster"),
    case("empty-reference", evaluate("pred.tif", "empty.tif"), "{w}/empty.tif", "not a raster"),
    case("damaged-prediction", evaluate("damaged.tif", "ref.tif", "--bands", "1"),
         "damaged.tif", "damaged", "gdalinfo -checksum"),
    case("damaged-reference", evaluate("pred.tif", "damaged.tif", "--reference-bands", "1"),
         "damaged.tif", "damaged"),
    case("text-reference", evaluate("pred.tif", "text.tif"), "{w}/text.tif", "not a raster"),
    case("png-without-georeferencing", evaluate("plain.png", "ref.tif", "--bands", "1"),
         "{w}/plain.png", "no CRS"),
    case("folder-as-prediction", evaluate("adir", "ref.tif"), "{w}/adir is a folder, not a raster"),
    case("no-overlap", evaluate("pred_far.tif", "ref.tif"), "{w}/pred_far.tif",
         "check that they overlap"),
    case("prediction-without-crs", evaluate("nocrs.tif", "ref.tif", "--bands", "1"),
         "{w}/nocrs.tif", "no CRS"),
    case("nan-only-prediction", evaluate("pred_nan.tif", "ref.tif"), "{w}/pred_nan.tif",
         "no valid pixel"),
    case("band-out-of-range", evaluate("pred.tif", "ref.tif", "--bands", "3"),
         "band 3 does not exist in {w}/pred.tif"),
    case("band-0", evaluate("pred.tif", "ref.tif", "--bands", "0"), "start at 1"),
    case("reference-band-out-of-range", evaluate("pred.tif", "ref.tif", "--reference-bands",
                                                 "2"),
         "band 2 does not exist in {w}/ref.tif"),
    case("json-into-a-folder", evaluate("pred.tif", "ref.tif", "--json", "{w}/adir"),
         "--json {w}/adir is a folder, not a file"),
    case("json-over-an-input", evaluate("pred.tif", "ref.tif", "--json", "{w}/ref.tif",
                                        "--overwrite"), "--json {w}/ref.tif is the raster"),
]



# --- demo ------------------------------------------------------------------------------------

DEMO = [
    case("output-is-a-file", ["demo", "-o", "{w}/text.tif", "--quick", "-q"], "{w}/text.tif",
         "is a file"),
    case("earlier-files-without-overwrite", ["demo", "-o", "{t}/demo", "--quick", "-q"],
         "{t}/demo", "notes.txt", files={"demo/notes.txt": b"mine"}),
    case("unknown-task", ["demo", "-o", "{t}/demo", "--task", "nosuch"], "--task", "nosuch"),
    case("unknown-device", ["demo", "-o", "{t}/demo", "--device", "tpu"], "--device"),
    case("steps-not-a-number", ["demo", "-o", "{t}/demo", "--steps", "many"], "--steps"),
    case("seed-not-a-number", ["demo", "-o", "{t}/demo", "--seed", "x"], "--seed"),
]



# --- every row above ---------------------------------------------------------------------------

@pytest.mark.parametrize(PARAMS, EXPORT + TRAIN + PREDICT + EVALUATE + DEMO)
def test_a_bad_input_is_one_line_and_changes_nothing(capsys, world, world_before, tmp_path,
                                                     args, needles, before, files):
    """`refused`, with `files` ({path under tmp_path: bytes}, an earlier run's outputs) there
    first; then no input changed and the output's folder is as it was before the run."""
    for name, content in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    earlier = snapshot(tmp_path)
    refused(capsys, [part.format(w=world, t=tmp_path) for part in args],
            *(n.format(w=world, t=tmp_path) for n in needles), before=before)
    assert snapshot(world) == world_before, "an input was changed"
    assert snapshot(tmp_path) == earlier, "the run changed or left something in its output"


# --- the count in the docs -------------------------------------------------------------------

def test_the_docs_do_not_overstate_the_battery():
    """docs/faults.md says how many cases the battery has: never more than are collected."""
    root = Path(__file__).resolve().parents[1]
    claimed = int(re.search(r"\*\*(\d+) cases\*\*", (root / "docs" / "faults.md").read_text())
                  .group(1))
    battery = sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_faults_*.py"))
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                           "no:cacheprovider", *battery], cwd=root, capture_output=True,
                          text=True, timeout=600)
    collected = int(re.search(r"^(\d+) tests? collected", done.stdout, re.M).group(1))
    assert claimed <= collected, f"docs/faults.md claims {claimed}, {collected} collected"
