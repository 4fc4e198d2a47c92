"""Quality benchmark: the model against simple baselines on a spatial part it never saw.

Runs the three real-data cases of issue 22, and roads in a panchromatic image, end to end:
export chips inside an AOI polygon (a GeoPackage in a temp folder) covering the train part,
train, predict the whole scene, crop the judged part, `evaluate` it; the product's own simple
baselines (`predict --baseline linear|constant|discriminant`: fitted by `train` on the same
train chips) are written for the whole scene, cropped and evaluated the same way, on the same
pixels. Prints one table.

    python tools/bench_quality.py                      # all four cases, their recipes
    python tools/bench_quality.py --case dem --steps 400 --out /tmp/bq
    python tools/bench_quality.py --recipes            # the recipes as docs/train.md gives them

Splits: train north 60 % / judge south 38 % (DEM -> hillshade, Sentinel-2 -> land cover,
roads), train west 60 % / judge east 38 % (SAR -> RGB), or the other way round with --swap; the
2 % between them keeps every chip (exported with ``aoi_mode="within"``) off the judged part.
Data: ../shared/data beside the repository.
Baselines (models/baseline.py): the train mean per band (constant), the per-band least-squares
linear map of the scaled source bands with an intercept (linear); for a class map the majority
class, the nearest class mean and Fisher's linear discriminant of the source bands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAIN_SHARE, JUDGE_START = 0.60, 0.62
SWAPPED = {"north": "south", "west": "east"}  # --swap: train on the other side
MINUTES_VAL_EVERY = 50  # --minutes: steps between validations
EXPORT_KEYS = ("chip_size", "stride", "source_scaling", "target_scaling", "max_nodata",
               "val_fraction", "target_resampling")


@dataclass
class Case:
    """One benchmark pair, its split and its recipe (export and train options)."""

    name: str
    source: str
    target: str
    split: str  # the train part's side: "north" or "west" (with --swap "south" or "east")
    export: dict
    train: dict
    categorical: bool = False
    predict: dict = field(default_factory=dict)


CASES = {
    "dem": Case("dem", "dem_hillshade_exploradores/exploradores_aster_dem_30m.tif",
                "dem_hillshade_exploradores/exploradores_aster_hillshade_gdal_az315_alt45.tif",
                "north", {"chip_size": 32, "stride": 12, "source_scaling": "centre"},
                {"recipe": "local"}),
    "sar": Case("sar", "sar_optical_spacenet6_rotterdam/sar_masked_HH_HV_VH_VV_dB.tif",
                "sar_optical_spacenet6_rotterdam/rgb_unmasked.tif",
                "west", {"chip_size": 32, "stride": 8, "max_nodata": 0.5},
                {"recipe": "residual"}),
    "landcover": Case("landcover", "image_map_eolearn_slovenia/s2_l1c_2015-07-11_clear.tif",
                      "image_map_eolearn_slovenia/lulc.tif", "north",
                      {"chip_size": 32, "stride": 8, "target_resampling": "nearest"},
                      {"recipe": "classes"},
                      categorical=True),
    # a class told by its shape, not its brightness: the U-Net, not a local recipe
    "roads": Case("roads", "image_map_spacenet3_vegas_roads/road_image_pan.tif",
                  "image_map_spacenet3_vegas_roads/road_mask.tif", "north",
                  {"chip_size": 128, "stride": 32, "target_resampling": "nearest"},
                  {"recipe": "shapes"}, categorical=True),
}


def _flags(options: dict) -> str:
    """Options as the commands' flags: {"ngf": 64, "categorical": True} -> --ngf 64
    --categorical."""
    return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                    for k, v in options.items())


def recipe(case: Case) -> list[str]:
    """The case's export and train commands, as docs/train.md gives them (a test keeps the two
    the same)."""
    train = {**case.train, **({"categorical": True} if case.categorical else {})}
    return [f"geopix2pix export-chips SOURCE TARGET -o chips/ {_flags(case.export)}",
            f"geopix2pix train chips/ -o run/ {_flags(train)}"]


def windows(shape: tuple[int, int], split: str) -> tuple[Window, Window]:
    """(train part, judged part) of a (rows, cols) grid: the train part is the `split` side."""
    rows, cols = shape
    along_rows = split in ("north", "south")
    size = rows if along_rows else cols
    cut, start = int(size * TRAIN_SHARE), int(math.ceil(size * JUDGE_START))
    train, judged = (0, cut), (start, size)
    if split in SWAPPED.values():  # the train part at the far end
        train, judged = (size - cut, size), (0, size - start)

    def window(span: tuple[int, int]) -> Window:
        if along_rows:
            return Window(0, span[0], cols, span[1] - span[0])
        return Window(span[0], 0, span[1] - span[0], rows)

    return window(train), window(judged)


def write_aoi(source: Path, train: Window, path: Path) -> Path:
    """A GeoPackage with the train part's polygon, in the source's CRS."""
    import geopandas as gpd
    from shapely.geometry import box

    with rasterio.open(source) as src:
        left, bottom, right, top = rasterio.windows.bounds(train, src.transform)
        crs = src.crs
    gpd.GeoDataFrame(geometry=[box(left, bottom, right, top)], crs=crs).to_file(path)
    return path


def source_validity(source: Path) -> np.ndarray:
    """(rows, cols): where every band of the source is valid and finite."""
    with rasterio.open(source) as src:
        x = src.read(masked=True)
    return ~np.ma.getmaskarray(x).any(0) & np.isfinite(x.filled(np.nan)).all(0)


def part(array: np.ndarray, window: Window) -> np.ndarray:
    rows, cols = window.toslices()
    return array[..., rows, cols]


def _write(path: Path, profile: dict, data: np.ndarray, colormap: dict | None) -> Path:
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colormap:
            dst.write_colormap(1, colormap)
    return path


def crop(path: Path, window: Window, out: Path, valid: np.ndarray, categorical: bool) -> Path:
    """The window of `path`; values as float32, NaN where the source is invalid (a class map
    keeps its dtype: its source has no invalid pixels here)."""
    with rasterio.open(path) as src:
        profile = {**src.profile, "height": int(window.height), "width": int(window.width),
                   "transform": src.window_transform(window)}
        data = src.read(window=window)
        colormap = src.colormap(1) if src.colorinterp[0] == ColorInterp.palette else None
    if not categorical:
        data = data.astype("float32")
        data[:, ~valid] = np.nan
        profile.update(dtype="float32", nodata=np.nan)
    return _write(out, profile, data, colormap)


def scores(report) -> dict:
    if report.categorical:
        return {"acc": report.pixel_accuracy, "mIoU": report.mean_iou}
    o = report.overall
    return {"MAE": o["mae"], "PSNR": o["psnr"], "SSIM": o["ssim"]}


# the table's columns: the model's prediction and the baselines its file carries, by the
# names `predict --baseline` gives them; for a class map they are the majority class
# (constant), the nearest class mean (linear) and the linear discriminant
PREDICTIONS = {"model": "none", "linear": "linear", "constant": "constant"}
CLASS_PREDICTIONS = {**PREDICTIONS, "discriminant": "discriminant"}  # a class map's third
CLASS_NAMES = {"linear": "nearest-mean", "constant": "majority"}


def predictions(categorical: bool) -> dict[str, str]:
    return CLASS_PREDICTIONS if categorical else PREDICTIONS


def write_predictions(source: Path, work: Path, categorical: bool) -> None:
    """The model's and its baselines' predictions of the whole scene (work/NAME.tif)."""
    from geopix2pix import predict

    for name, baseline in predictions(categorical).items():
        predict(source, work / f"{name}.tif", model=work / "run" / "model-best.safetensors",
                baseline=baseline, overwrite=True, progress=False, device="cpu")


def judge(case: Case, work: Path) -> dict:
    """Scores of the model's prediction and its baselines' (work/NAME.tif) on the judged part,
    on the pixels where the source is valid (elsewhere NaN: a prediction there is no guess)."""
    from geopix2pix import evaluate

    target = DATA / case.target
    valid = source_validity(DATA / case.source)
    _, judge_w = windows(valid.shape, case.split)
    row = {}
    for name in predictions(case.categorical):
        judged = crop(work / f"{name}.tif", judge_w, work / f"{name}_judged.tif",
                      part(valid, judge_w), case.categorical)
        key = CLASS_NAMES.get(name, name) if case.categorical else name
        row[key] = scores(evaluate(judged, target, categorical=case.categorical))
    return row


SPLIT_FILE = "split.txt"  # in OUT/CASE: the part and the source the run trained on (checked by
# --judge-only)
UNSHOWN = ("quiet", "overwrite", "workers", "categorical", "device", "amp", "compile",
           "resume", "samples", "encoder_weights")


def best_step(work: Path) -> int:
    """The step of the run's model-best (0: the residual generator's start, the baseline)."""
    from geopix2pix.models import ModelMetadata, load_model

    model = load_model(work / "run" / "model-best.safetensors")
    return int(ModelMetadata.of(model).training["step"])


def rejudge(case: Case, out: Path) -> dict:
    """Predict and `judge` again with the model an earlier run left in OUT/CASE (--judge-only:
    e.g. after a change to `predict`); its options are the run's own (train.json), and a run
    trained on the other part of the scene (--swap or not) is refused."""
    work = out / case.name
    if not (work / SPLIT_FILE).is_file():
        sys.exit(f"{work} has no {SPLIT_FILE} (a run of an earlier version): run the case again")
    trained_on, *source = (work / SPLIT_FILE).read_text().split()
    if trained_on != case.split:
        sys.exit(f"{work} was trained on the {trained_on} part: judge it "
                 f"{'without' if trained_on == CASES[case.name].split else 'with'} --swap")
    if source and source[0] != case.source:
        sys.exit(f"{work} was trained on {source[0]}: judge it with --source {source[0]}")
    write_predictions(DATA / case.source, work, case.categorical)
    metrics = (work / "run" / "metrics.csv").read_text().splitlines()
    saved = json.loads((work / "run" / "train.json").read_text())["options"]
    return {**judge(case, work), "steps": int(metrics[-1].split(",")[1]),
            "best_step": best_step(work),
            "options": {**_source_shown(case), **case.export, **{
                k: v for k, v in saved.items() if k not in UNSHOWN and v is not None}}}


def _source_shown(case: Case) -> dict:
    """The case's source raster where --source replaced it, for the table."""
    return {} if case.source == CASES[case.name].source else {"source": case.source}


def run_case(case: Case, steps: int | None, minutes: float | None, out: Path,
             extra: dict) -> dict:
    """Export, train, predict, crop, evaluate; the baselines on the same judged pixels."""
    from geopix2pix import export_chips, train
    from geopix2pix.training import TrainingStopped

    source, target = DATA / case.source, DATA / case.target
    work = out / case.name
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "run", ignore_errors=True)  # never judge an earlier run's model
    (work / SPLIT_FILE).write_text(f"{case.split}\n{case.source}\n")
    with rasterio.open(source) as src:
        train_w, _ = windows(src.shape, case.split)
    aoi = write_aoi(source, train_w, work / "train_aoi.gpkg")
    export = {**case.export, **{k: v for k, v in extra.items() if k in EXPORT_KEYS}}
    extra = {k: v for k, v in extra.items() if k not in EXPORT_KEYS}
    export_chips(source, target, work / "chips", aoi=aoi, aoi_mode="within", overwrite=True,
                 progress=False, workers=1, **export)
    options = {**case.train, **extra, "categorical": case.categorical, "quiet": True,
               "overwrite": True, "workers": 0}  # no max_steps: the recipe's schedule
    if steps or minutes:
        options["max_steps"] = steps or 10**6
    if minutes:  # the schedule is open-ended: validate (and write model files) on a cadence
        options.setdefault("val_every", MINUTES_VAL_EVERY)
    deadline = time.monotonic() + minutes * 60 if minutes else None
    try:
        result = train(work / "chips", work / "run", log=lambda m: None,
                       callback=(lambda info: time.monotonic() > deadline) if deadline else None,
                       **options)
        done = result.steps
    except TrainingStopped:  # --minutes: model-best so far
        done = None
    write_predictions(source, work, case.categorical)
    row = judge(case, work)
    row["steps"], row["best_step"] = done, best_step(work)
    row["options"] = {**_source_shown(case), **export,
                      **{k: v for k, v in options.items() if k not in UNSHOWN},
                      "recipe_used": json.loads((work / "run" / "train.json").read_text())
                      .get("recipe_used")}  # (auto's pick with --defaults)
    return row


def _cell(value: float | None) -> str:
    return f"{value:>9.4g}" if value is not None else f"{'':>9}"


def table(rows: dict[str, dict]) -> str:
    """One line per case and metric: model, then each baseline; the recipe under it."""
    lines = [f"{'case':<10} {'metric':<6} {'model':>9} {'linear':>9} {'constant':>9} "
             f"{'majority':>9} {'nearest':>9} {'discrim.':>9}"]
    for name, row in rows.items():
        for metric in row["model"]:
            cells = " ".join(_cell(row.get(key, {}).get(metric)) for key in (
                "model", "linear", "constant", "majority", "nearest-mean", "discriminant"))
            lines.append(f"{name:<10} {metric:<6} {cells}")
        lines.append(f"{'':<10} steps {row['steps']}, model-best at step {row['best_step']}"
                     f"{' (the start)' if row['best_step'] == 0 else ''}; " + ", ".join(
            f"{k}={v}" for k, v in row["options"].items() if k != "max_steps"))
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None,
                        help="training steps of every case (default: its recipe's length, "
                        "--epochs and --decay-epochs)")
    budget.add_argument("--minutes", type=float, default=None,
                        help="training minutes per case instead (model-best so far is used; "
                        f"validation every {MINUTES_VAL_EVERY} steps unless --set val_every=N)")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder (default: a temporary one, removed)")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="override an export or training option of every case, "
                        "e.g. --set ngf=64")
    parser.add_argument("--recipes", action="store_true",
                        help="print each case's export and train commands and stop")
    parser.add_argument("--swap", action="store_true",
                        help="train on the other side (south / east) and judge the first one: "
                        "the same recipes on another part of each scene")
    parser.add_argument("--defaults", action="store_true",
                        help="train with nothing but the case's export options (--recipe auto "
                        "picks from the chips: each case's named recipe on its own split; "
                        "--set still applies)")
    parser.add_argument("--source", default=None, metavar="RASTER",
                        help="another source raster for the case, as a path under "
                        "../shared/data or absolute (e.g. another date of the Slovenia scene: "
                        "the same recipe on another real scene of its kind); the same target")
    parser.add_argument("--judge-only", action="store_true",
                        help="predict and judge again with the models an earlier run left in --out")
    parser.add_argument("--centre-clip", type=float, default=None,
                        help="clip centre-scaled inputs at this instead (1 = the clip before "
                        "issue 22: the DEM A/B of docs/benchmarks.md)")
    return parser.parse_args(argv)


def overrides(pairs: list[str], budget: bool) -> dict:
    """--set's options; max_steps refused beside --steps or --minutes (``budget``), which set
    the length too."""
    extra = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            extra[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            extra[key.replace("-", "_")] = value
    if budget and "max_steps" in extra:
        raise SystemExit("--set max_steps and --steps or --minutes both set the run's length: "
                         "give one")
    return extra


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not DATA.is_dir():
        print(f"no sample data at {DATA}", file=sys.stderr)
        return 2
    if args.centre_clip is not None:  # export, training and predict all run in this process
        from geopix2pix.chips import scaling

        scaling.CENTRE_CLIP = args.centre_clip
    if args.recipes:
        print("\n".join(line for case in CASES.values() for line in recipe(case)))
        return 0
    steps = None if args.minutes else args.steps
    extra = overrides(args.set, bool(args.steps or args.minutes))
    names = list(CASES) if args.case == "all" else [args.case]
    cases = {name: dataclasses.replace(case, split=SWAPPED[case.split]) if args.swap else case
             for name, case in CASES.items()}
    if args.source:
        if args.case == "all":
            raise SystemExit("--source replaces one case's source raster: give --case too")
        cases[args.case] = dataclasses.replace(cases[args.case], source=args.source)
    if args.defaults:
        cases = {name: dataclasses.replace(case, train={}) for name, case in cases.items()}
    with tempfile.TemporaryDirectory() as temp:
        out = args.out or Path(temp)
        rows = {}
        for name in names:
            rows[name] = rejudge(cases[name], out) if args.judge_only else run_case(
                cases[name], steps, args.minutes, out, extra)
            print(table({name: rows[name]}), file=sys.stderr, flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
