"""`geopix2pix export-chips`: paired rasters -> aligned training chips."""

from __future__ import annotations

import click

from geopix2pix.cli.options import click_options
from geopix2pix.cli.stops import export_stopped, reports_stop
from geopix2pix.cli.warning_lines import warnings_as_lines
from geopix2pix.settings.export import ExportOptions


@click.command("export-chips", context_settings={"show_default": True})
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@click.argument("target", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Chips folder to write (source/, target/, chips.gpkg, dataset.json).")
@click.option("--pairs", type=click.Path(dir_okay=False),
              help="CSV with source,target columns (paths relative to the CSV) instead of "
                   "SOURCE TARGET.")
@click.option("--source", "sources", multiple=True, type=click.Path(dir_okay=False),
              help="A raster of the source domain (repeat it; needs --unpaired).")
@click.option("--target", "targets", multiple=True, type=click.Path(dir_okay=False),
              help="A raster of the target domain (repeat it; needs --unpaired).")
@click.option("--rasters", type=click.Path(dir_okay=False),
              help="CSV with path,domain columns (domain: source or target; paths relative to "
                   "the CSV) instead of --source/--target; needs --unpaired.")
@click_options(ExportOptions)
@reports_stop(export_stopped)
def export_chips_command(source, target, out_dir, pairs, sources, targets, rasters, **options):
    """Cut aligned training chips from SOURCE and TARGET rasters (or from --pairs).

    The SOURCE grid is the reference: TARGET is warped onto it whatever its CRS, resolution or
    extent, and copied bit for bit when both grids are the same (unless --correct-shift moves
    it). Ctrl-C or SIGTERM removes the
    chips written so far (an export cannot be continued).

    With --unpaired, the chips of two unpaired collections (--source and --target rasters, or
    --rasters) are cut, each raster's on its own grid, for a model that learns without pairs.
    """
    from geopix2pix.chips.export import export_chips

    if pairs and (source or target):
        raise click.UsageError("give either SOURCE TARGET or --pairs, not both")
    with warnings_as_lines():  # as they come: those found on opening before the work
        summary = export_chips(source, target, out_dir, pairs=pairs,
                               sources=list(sources) or None, targets=list(targets) or None,
                               rasters=rasters, **options)
    for line in summary.lines():
        click.echo(line)
