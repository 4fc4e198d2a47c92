"""`geopix2pix demo`: the whole pipeline on generated scenes, in about a minute on a CPU."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import click

from geopix2pix.cli.options import OFF
from geopix2pix.demo.scenes import TASKS
from geopix2pix.errors import GeoPix2PixWarning
from geopix2pix.settings.demo import DemoSettings

DEFAULT_STEPS = DemoSettings().max_steps


@click.command("demo", context_settings={"show_default": True})
@click.option("-o", "--output", "out_dir", default="geopix2pix-demo",
              type=click.Path(file_okay=False),
              help="Folder for everything the demo writes (scenes/, chips/, run/, "
                   "prediction.tif, baseline.tif, quicklook.png, evaluation*.json, demo.json).")
@click.option("--task", type=click.Choice(TASKS), default="dsm2image",
              help="dsm2image: elevation -> shaded relief; sar2optical: speckled SAR backscatter "
                   "(dB) -> optical RGB; sat2map: satellite-like image -> cartographic map.")
@click.option("--seed", type=int, default=0,
              help="Seed of the generated landscapes, the chip split and the training.")
@click.option("--steps", "max_steps", type=int, default=DEFAULT_STEPS,
              help="Training steps (batches of 8 chips of 64 x 64 pixels), at least 1.")
@click.option("--quick", is_flag=True,
              help="Smaller scenes and 150 steps: a run of about 15 seconds that shows every "
                   "step (the model learns less)." + OFF)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto uses CUDA when present, else the CPU.")
@click.option("--overwrite", is_flag=True,
              help="Replace the outputs of an earlier demo in the output folder (a folder "
                   "holding anything else is refused)." + OFF)
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars; print only the summary." + OFF)
def demo_command(out_dir, task, seed, max_steps, quick, device, overwrite, quiet):
    """Run geopix2pix end to end on built-in generated data.

    Generates georeferenced training scenes and a held-out scene (GeoTIFFs in UTM 33N that open
    in QGIS), exports chips, trains a small Pix2Pix, predicts the held-out scene, and prints its
    metrics beside a baseline that predicts the training mean, then where every output is.
    """
    from dataclasses import replace

    from geopix2pix.demo.pipeline import run_demo

    settings = replace(DemoSettings.small() if quick else DemoSettings(), device=device)
    if max_steps != DEFAULT_STEPS:
        settings = replace(settings, max_steps=max_steps)
    with warnings_as_lines():
        result = run_demo(out_dir, task, seed, progress=not quiet, overwrite=overwrite,
                          settings=settings)
    if quiet:
        click.echo("\n".join(result.lines()))


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """The API's GeoPix2PixWarnings (which the command line otherwise ignores, printing its own)
    as the program's "warning: ..." lines, as they come: the demo calls the API."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", GeoPix2PixWarning)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs) -> None:
            if issubclass(category, GeoPix2PixWarning):
                click.echo(f"warning: {message}", err=True)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield
