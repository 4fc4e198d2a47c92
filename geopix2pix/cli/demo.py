"""`geopix2pix demo`: the whole pipeline on generated scenes, sized to run on a CPU."""

from __future__ import annotations

import click

from geopix2pix.cli.options import click_options
from geopix2pix.cli.stops import demo_stopped, reports_stop
from geopix2pix.cli.warning_lines import warnings_as_lines
from geopix2pix.settings.demo import DEMO_FOLDER, DemoOptions


@click.command("demo", context_settings={"show_default": True})
@click.option("-o", "--output", "out_dir", default=DEMO_FOLDER,
              type=click.Path(file_okay=False),
              help="Folder for everything the demo writes (scenes/, chips/, run/, "
                   "prediction.tif, baseline.tif, linear.tif, quicklook.png, evaluation*.json, "
                   "demo.json).")
@click_options(DemoOptions)
@reports_stop(demo_stopped)
def demo_command(out_dir, **options):
    """Run geopix2pix end to end on built-in generated data.

    Generates georeferenced training scenes and a held-out scene (GeoTIFFs in UTM 33N that open
    in QGIS), exports chips, trains a small Pix2Pix, predicts the held-out scene, and prints its
    metrics beside a baseline that predicts the training mean, then where every output is.
    With --unpaired (sar2optical), a small CycleGAN learns from scenes that share no pixel.
    """
    from geopix2pix.demo.pipeline import run_demo

    demo = DemoOptions(**options)
    with warnings_as_lines():
        result = run_demo(out_dir, demo.task, demo.seed, progress=demo.progress,
                          overwrite=demo.overwrite, settings=demo.settings(),
                          unpaired=demo.unpaired)
    if not demo.progress:
        click.echo("\n".join(result.lines()))
