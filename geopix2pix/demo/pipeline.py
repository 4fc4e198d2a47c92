"""`run_demo`: the whole geopix2pix pipeline on generated scenes, end to end.

generate scenes -> export chips -> train a small Pix2Pix -> predict the held-out scene ->
evaluate it against the held-out truth, beside two baselines fitted on the training chips that
the model file carries and `predict --baseline` writes (the training mean, and the linear map of
the input bands) ->
quicklook PNG (input | prediction | truth) -> demo.json, written last.

With `unpaired` (sar2optical), a small CycleGAN learns instead from the SAR of the first training
scene and the optical image of the second, scenes apart on the ground (no pixel is paired); its
model file carries the training mean alone (the linear baseline is fitted on pairs).

The default `DemoSettings` finish in about two minutes on a 2-core CPU; a GPU is used when present.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from geopix2pix.chips.pipeline import OUTPUTS as CHIP_OUTPUTS
from geopix2pix.demo.recipes import check_task
from geopix2pix.demo.scenes import DemoScenes, make_demo_scenes
from geopix2pix.errors import GeoPix2PixError, GeoPix2PixWarning
from geopix2pix.plot import write_quicklook
from geopix2pix.raster.write import (
    write_text_atomic,
)
from geopix2pix.runtime.aside import put_back_earlier, replaced_when_complete, unfinished
from geopix2pix.runtime.folders import Owned
from geopix2pix.runtime.stopping import Outputs, Reporter, StopReport, stop_signal
from geopix2pix.settings.checking import api_function, check_types
from geopix2pix.settings.common import check_seed
from geopix2pix.settings.demo import DEMO_FOLDER, DemoSettings
from geopix2pix.training.trainer import RUN_OUTPUTS

SUMMARY = "demo.json"
# Everything a demo writes in its folder: --overwrite removes these and refuses anything else.
STARTED = ".geopix2pix-demo"  # written first: the folder is a demo's, finished or not
OUTPUTS = Owned((SUMMARY, STARTED, "prediction.tif", "baseline.tif", "evaluation.json",
                 "evaluation_baseline.json", "linear.tif", "evaluation_linear.json",
                 "quicklook.png"),
                {"scenes": Owned(("train_*_*.tif", "heldout_*.tif", "pairs.csv")),
                 "chips": CHIP_OUTPUTS, "run": RUN_OUTPUTS})
STAGES = 6
UNPAIRED_LIMIT = ("(Unpaired scenes do not say which class is which: the CycleGAN can give them "
                  "each other's colours. README.md, 'Pix2Pix or CycleGAN', says when to use it.)")

@dataclass
class DemoResult:
    """Where everything a demo run wrote is, and how the model did against the baseline."""

    out_dir: Path
    task: str
    seed: int
    scenes: DemoScenes
    chips_dir: Path
    run_dir: Path
    model: Path
    prediction: Path
    baseline: Path
    quicklook: Path
    metrics: dict  # overall metrics of the prediction vs the held-out truth
    baseline_metrics: dict  # the same for the baseline
    seconds: dict = field(default_factory=dict)
    linear: Path | None = None  # the linear baseline's prediction (`predict --baseline linear`)
    linear_metrics: dict = field(default_factory=dict)  # and its metrics
    unpaired: bool = False  # CycleGAN on scenes that share no pixel

    @property
    def beats_baseline(self) -> bool:
        return _beats(self.metrics, self.baseline_metrics)

    @property
    def beats_linear(self) -> bool | None:
        """Whether the model beats the linear baseline as it must beat the train mean (None
        without one)."""
        return _beats(self.metrics, self.linear_metrics) if self.linear_metrics else None

    def table(self) -> list[str]:
        rows = [f"{'held-out scene':<24} {'MAE':>9} {'RMSE':>9} {'PSNR dB':>8} {'SSIM':>7}"]
        for name, m in (("geopix2pix model", self.metrics),
                        ("baseline (train mean)", self.baseline_metrics),
                        ("linear baseline", self.linear_metrics)):
            if not m:
                continue
            rows.append(f"{name:<24} {m['mae']:>9.3f} {m['rmse']:>9.3f} {m['psnr']:>8.2f} "
                        f"{m['ssim']:>7.3f}")
        return rows

    def lines(self) -> list[str]:
        source, target = self.scenes.names
        verdict = "beats" if self.beats_baseline else "does NOT beat"
        return [
            f"geopix2pix demo ({self.task}, seed {self.seed}) in "
            f"{sum(self.seconds.values()):.0f} s",
            *self.table(),
            f"The model {verdict} the baseline on ground it never saw"
            + ("." if self.beats_linear is None else
               f" and {'beats' if self.beats_linear else 'does NOT beat'} the linear "
               "baseline."),
            *([UNPAIRED_LIMIT] if self.unpaired and not self.beats_baseline else []),
            "Outputs (GeoTIFFs in " + self.scenes.crs + ": drag them into QGIS):",
            f"  training scenes    {self.scenes.out_dir}/train_*_{source}.tif, "
            f"train_*_{target}.tif",
            f"  held-out input     {self.scenes.heldout_source}",
            f"  held-out truth     {self.scenes.heldout_target}",
            f"  chips              {self.chips_dir} (chips.gpkg: footprints, dataset.json)",
            f"  training run       {self.run_dir} (metrics.csv, samples/)",
            f"  model              {self.model}",
            f"  prediction         {self.prediction}",
            f"  baseline           {self.baseline}",
            *([f"  linear baseline    {self.linear}"] if self.linear else []),
            f"  quicklook          {self.quicklook} (input | prediction | truth)",
            f"  summary            {self.out_dir / SUMMARY}",
        ]

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "scenes"}
        data["scenes"] = self.scenes.to_dict()
        data["beats_baseline"] = self.beats_baseline
        data["beats_linear"] = self.beats_linear
        return json.loads(json.dumps(data, default=str))


def _beats(model: dict, baseline: dict) -> bool:
    """A lower MAE and RMSE and a higher PSNR than the baseline's: a win on all three."""
    return model["mae"] < baseline["mae"] and model["rmse"] < baseline["rmse"] and \
        model["psnr"] > baseline["psnr"]


def _stage(progress: bool, number: int, text: str) -> None:
    if progress:
        print(f"[{number}/{STAGES}] {text}", flush=True)


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, function: Callable, *args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 2)
        return result


def check_demo_options(task: str, seed: int, settings: DemoSettings,
                       unpaired: bool = False) -> None:
    """Refuse bad options before any work, naming the demo's own options (the CLI's for those
    it has, the `DemoSettings` field for the others)."""
    from geopix2pix.runtime.device import resolve_device

    if not isinstance(settings, DemoSettings):
        raise GeoPix2PixError(f"run_demo(): settings={settings!r}: expected a DemoSettings "
                              "(e.g. geopix2pix.DemoSettings(max_steps=100)) or None")
    try:
        check_types(asdict(settings), DemoSettings)
    except GeoPix2PixError as exc:
        raise GeoPix2PixError(f"DemoSettings.{exc}") from None
    check_task(task, unpaired)
    check_seed(seed)
    if settings.max_steps < 1:
        raise GeoPix2PixError(f"--steps {settings.max_steps}: use at least 1 training step")
    resolve_device(settings.device)  # --device cuda without a GPU: say so before the scenes
    for name in ("n_train", "ngf", "ndf", "batch_size"):
        if getattr(settings, name) < 1:
            raise GeoPix2PixError(f"DemoSettings.{name} {getattr(settings, name)}: use at "
                                  "least 1")
    for name in ("train_size", "split_block"):
        if getattr(settings, name) < settings.chip_size:
            raise GeoPix2PixError(f"DemoSettings.{name} {getattr(settings, name)}: use at least "
                                  f"the chip size ({settings.chip_size})")


def _refuse_foreign_runs(out_dir: Path) -> None:
    """Scenes, chips and a run made by a user (the README's layout: scenes/, chips/, run/) look
    like a demo's: they count as the demo's only in a folder a demo started (its marker file,
    written first, or its demo.json)."""
    theirs = [name for name in ("scenes", "chips", "run") if (out_dir / name).exists()]
    ours = (out_dir / SUMMARY).exists() or (out_dir / STARTED).exists()
    if theirs and not ours:
        raise GeoPix2PixError(
            f"{out_dir} holds {', '.join(f'{n}/' for n in theirs)} that no demo made (there is "
            f"no {SUMMARY} or {STARTED}); choose another folder for the demo")


def _export(scenes: DemoScenes, chips: Path, s: DemoSettings, seed: int, progress: bool,
            options: dict, unpaired: bool) -> None:
    """The training chips: every training pair, or (`unpaired`) the source of the first scene
    and the target of the second, two collections that share no pixel."""
    from geopix2pix.chips.export import export_chips

    inputs = dict(pairs=scenes.pairs_csv) if not unpaired else dict(
        unpaired=True, sources=[scenes.train[0][0]], targets=[scenes.train[1][1]])
    with warnings.catch_warnings():  # the demo's sizes are its own: no --split-block to change
        for kind in SPLIT_WARNINGS:
            warnings.filterwarnings("ignore", message=kind, category=GeoPix2PixWarning)
        export_chips(out_dir=chips, chip_size=s.chip_size, stride=s.stride,
                     split_block=s.split_block, seed=seed, workers=s.workers, progress=progress,
                     **inputs, **options)


# export's warnings of a val share off --val-fraction (`chips.layout.val_warnings`), whose advice
# (export options) a demo user cannot take (chips/dataset.json keeps the counts)
SPLIT_WARNINGS = (r"(the \w+ domain: )?val holds ", r"(the \w+ domain: )?0 val chips")


def _train_options(scenes: DemoScenes, s: DemoSettings, unpaired: bool) -> dict:
    """The scenes' training recipe (`DemoScenes.recipe`), CycleGAN's at the demo's width."""
    train = scenes.recipe(unpaired).train
    return {**train, "ngf": s.ngf} if unpaired else train


@api_function
def run_demo(out_dir: str | os.PathLike = DEMO_FOLDER, task: str = "dsm2image",
             seed: int = 0, progress: bool = True, *, overwrite: bool = False,
             settings: DemoSettings | None = None, unpaired: bool = False) -> DemoResult:
    """Run the whole pipeline on generated scenes for `task` into `out_dir` (see module doc).
    With `overwrite`, an earlier demo there stays whole (set aside) until this one is complete,
    and is put back if it fails or is stopped."""
    s = DemoSettings() if settings is None else settings
    check_demo_options(task, seed, s, unpaired)
    if unpaired:  # one scene gives the SAR, another the optical image
        s = replace(s, n_train=max(2, s.n_train))
    report = None
    try:
        put_back_earlier(Path(out_dir), OUTPUTS, SUMMARY)  # (what a killed demo set aside)
        _refuse_foreign_runs(Path(out_dir))
        report = stop_reporter(out_dir)
        with replaced_when_complete(out_dir, overwrite, owned=OUTPUTS, marker=SUMMARY,
                                    command="demo") as out:
            return _run_stages(out, task, seed, progress, s, unpaired)
    except KeyboardInterrupt as stop:  # (a stop in training carries train's report: --resume)
        stop.report = report(stop) if report else StopReport(
            "demo", stop_signal(stop), f"Stopped before the demo began: {out_dir} is as it was")
        raise


def stop_reporter(out_dir: str | os.PathLike) -> Reporter:
    """What a stop of a demo into `out_dir` left, asked of the folder before the run: complete
    (demo.json, written last, is new), or not: then an earlier demo (--overwrite), finished or
    not, is as it was (set aside while the new one ran, and put back)."""
    out = Path(out_dir)
    summary, started = Outputs([out / SUMMARY]), Outputs([out / STARTED])

    def report(stop: BaseException) -> StopReport:
        signum = stop_signal(stop)
        if summary.finished():  # (the earlier one's leftovers, if any, go with the next run)
            return StopReport("demo", signum, f"Stopped after the demo finished: {out} is "
                              "complete", completed=(out,))
        if unfinished(out):  # (a second stop while the earlier outputs were moving back)
            return StopReport("demo", signum, f"Stopped while the earlier demo in {out} was "
                              "being put back: the next demo into that folder finishes it")
        if summary.kept() or started.kept():
            return StopReport("demo", signum, "Stopped before the new demo was complete: the "
                              f"earlier demo in {out} is as it was", kept=out)
        return StopReport("demo", signum, f"Stopped before the demo was complete: {out} holds "
                          "what it wrote so far; run it again with --overwrite")

    return report


def _run_stages(out: Path, task: str, seed: int, progress: bool, s: DemoSettings,
                unpaired: bool) -> DemoResult:
    """The demo's stages, writing in `out`; demo.json last."""
    from geopix2pix.evaluation.evaluate import evaluate
    from geopix2pix.prediction.predictor import predict
    from geopix2pix.training import train

    (out / STARTED).write_text("a geopix2pix demo writes this folder\n")
    clock = _Clock()

    _stage(progress, 1, f"generating {s.n_train + 1} {task} scenes (procedural terrain)")
    scenes = clock.run("scenes", make_demo_scenes, out / "scenes", task, seed, n_train=s.n_train,
                       train_size=s.train_size, heldout_size=s.heldout_size, progress=progress)
    _stage(progress, 2, f"exporting {s.chip_size} px chips")
    chips = out / "chips"
    clock.run("export", _export, scenes, chips, s, seed, progress, scenes.recipe().export,
              unpaired)
    family = "CycleGAN (unpaired scenes)" if unpaired else "Pix2Pix"
    width = f"ngf {s.ngf}, " if unpaired else ""  # Pix2Pix: its recipe's width
    _stage(progress, 3, f"training a small {family} ({width}{s.max_steps} steps)")
    run = out / "run"
    trained = clock.run("train", train, chips, run, max_steps=s.max_steps, epochs=1,
                        decay_epochs=1, ndf=s.ndf, batch_size=s.batch_size,
                        device=s.device, seed=seed, quiet=not progress, workers=0,
                        log=print if progress else (lambda _: None),
                        **_train_options(scenes, s, unpaired))
    model = trained.best_model_path if trained.best_model_path.exists() else trained.model_path
    _stage(progress, 4, "predicting the held-out scene")
    prediction = out / "prediction.tif"
    clock.run("predict", predict, scenes.heldout_source, prediction, model=model,
              device=s.device, batch_size=s.batch_size, progress=progress)
    _stage(progress, 5, "evaluating against the held-out truth and the baseline")
    baseline = out / "baseline.tif"  # the train mean the model file carries, on the same grid
    predict(scenes.heldout_source, baseline, model=model, device=s.device, baseline="constant",
            batch_size=s.batch_size, progress=False)
    report = clock.run("evaluate", evaluate, prediction, scenes.heldout_target,
                       json_path=out / "evaluation.json")
    base_report = evaluate(baseline, scenes.heldout_target,
                           json_path=out / "evaluation_baseline.json")
    linear, linear_metrics = None, {}
    if not unpaired:  # the linear baseline is fitted on pairs
        linear = out / "linear.tif"
        predict(scenes.heldout_source, linear, model=model, device=s.device, baseline="linear",
                batch_size=s.batch_size, progress=False)
        linear_metrics = evaluate(linear, scenes.heldout_target,
                                  json_path=out / "evaluation_linear.json").overall
    _stage(progress, 6, "writing the quicklook")
    quicklook = clock.run("quicklook", write_quicklook, scenes.heldout_source, prediction,
                          scenes.heldout_target, out / "quicklook.png", overwrite=True)
    result = DemoResult(out, task, seed, scenes, chips, run, model, prediction, baseline,
                        quicklook, report.overall, base_report.overall, clock.seconds, linear,
                        linear_metrics, unpaired)
    if progress:  # (before demo.json: a terminal gone meanwhile fails the run, not after it)
        print("\n".join(result.lines()), flush=True)
    write_text_atomic(out / SUMMARY, json.dumps(
        {**result.to_dict(), "settings": asdict(s)}, indent=2) + "\n")
    return result


