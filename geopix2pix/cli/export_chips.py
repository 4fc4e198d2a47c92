"""`geopix2pix export-chips`: paired rasters -> aligned training chips."""

from __future__ import annotations

import click

from geopix2pix.cli.options import BANDS, OFF
from geopix2pix.cli.stops import export_stopped, reports_stop


def mask_values(ctx, param, text: str | None) -> list[float] | None:
    """--mask-values 3,8,9,10 -> [3.0, 8.0, 9.0, 10.0]; a slip is one line naming the option."""
    from geopix2pix.chips.masks import parse_mask_values

    return parse_mask_values(text)


@click.command("export-chips", context_settings={"show_default": True})
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@click.argument("target", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Chips folder to write (source/, target/, chips.gpkg, dataset.json).")
@click.option("--pairs", type=click.Path(dir_okay=False),
              help="CSV with source,target columns (paths relative to the CSV) instead of "
                   "SOURCE TARGET.")
@click.option("--chip-size", default=256, type=int,
              help="Chip width and height in source pixels: a power of two from 32 to 2048.")
@click.option("--stride", type=int, default=None,
              help="Pixels between chip origins  [default: the chip size]")
@click.option("--source-bands", type=BANDS, default=None,
              help="1-based source bands, e.g. 1,2,3 or 1-3  [default: all but alpha]")
@click.option("--target-bands", type=BANDS, default=None,
              help="1-based target bands  [default: all but alpha]")
@click.option("--target-resampling", type=click.Choice(["nearest", "bilinear", "cubic"]),
              default="bilinear",
              help="Resampling when the target is warped onto the source grid; nearest for "
                   "categorical maps. Identical grids are never resampled, unless --correct-shift "
                   "moves the target.")
@click.option("--aoi", type=click.Path(dir_okay=False), default=None,
              help="Vector file (any format geopandas reads, any CRS): keep chips touching its "
                   "polygons.")
@click.option("--aoi-mode", type=click.Choice(["intersects", "within"]), default="intersects",
              help="Keep chips that intersect the AOI, or only those entirely within it.")
@click.option("--max-nodata", type=float, default=0.1,
              help="Keep a chip when at most this fraction of its pixels is invalid in either "
                   "raster.")
@click.option("--max-shift", type=float, default=None, metavar="PX",
              help="Drop chips whose target is confidently shifted by more than PX source "
                   "pixels against their source (the shift check's estimate).")
@click.option("--shift-check/--no-shift-check", default=True,
              help="Estimate each chip's shift of the target against the source (chips.gpkg's "
                   "shift_x, shift_y, shift_confidence; the summary's line per pair).")
@click.option("--correct-shift", is_flag=True,
              help="Measure each pair's systematic shift first and move its target by it (its "
                   "warp's transform), so the chips come out aligned; the target is then "
                   "resampled (--target-resampling) even on an identical grid. dataset.json "
                   "records the shift applied." + OFF)
@click.option("--source-mask", type=click.Path(dir_okay=False), default=None, metavar="MASK",
              help="Validity mask raster of the source (any grid and CRS, warped with nearest): "
                   "its masked pixels are invalid in both chips, like nodata.")
@click.option("--target-mask", type=click.Path(dir_okay=False), default=None, metavar="MASK",
              help="Validity mask raster of the target (clouds, shadows, changes), as "
                   "--source-mask.")
@click.option("--mask-values", callback=mask_values, default=None, metavar="CODES",
              help="Mask codes that mark a pixel invalid, e.g. 3,8,9,10 for Sentinel-2 SCL's "
                   "cloud shadows and clouds  [default: a 0/1 mask, 1 invalid]")
@click.option("--val-fraction", type=float, default=0.2,
              help="Share of chips in the validation split.")
@click.option("--split-block", type=int, default=None,
              help="Side of the spatial blocks given whole to train or val, in pixels of the "
                   "first pair's source (the blocks are shared by all pairs), at least the chip "
                   "size  [default: 8 x chip size, or 4, 2 or 1 for a val share nearer "
                   "--val-fraction]")
@click.option("--seed", type=int, default=0, help="Seed of the split and the statistics sample.")
@click.option("--source-scaling", type=click.Choice(["percentile", "minmax", "centre"]),
              default="percentile",
              help="How source values map to [-1, 1]: 1st-99th percentiles, min-max, or centre "
                   "(each chip minus its mean: for elevation inputs).")
@click.option("--target-scaling", type=click.Choice(["minmax", "percentile"]), default="minmax",
              help="How target values map to [-1, 1] (and back at prediction).")
@click.option("--workers", type=int, default=None,
              help="Worker processes (0 or 1: export in this process)  "
                   "[default: one per core, at most 8]")
@click.option("--overwrite", is_flag=True,
              help="Replace the outputs of an earlier export in the output folder (a folder "
                   "holding anything else is refused)." + OFF)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar." + OFF)
@reports_stop(export_stopped)
def export_chips_command(source, target, out_dir, pairs, quiet, **options):
    """Cut aligned training chips from SOURCE and TARGET rasters (or from --pairs).

    The SOURCE grid is the reference: TARGET is warped onto it whatever its CRS, resolution or
    extent, and copied bit for bit when both grids are the same (unless --correct-shift moves
    it). Ctrl-C or SIGTERM removes the
    chips written so far (an export cannot be continued).
    """
    from geopix2pix.chips.export import export_chips

    if pairs and (source or target):
        raise click.UsageError("give either SOURCE TARGET or --pairs, not both")
    summary = export_chips(source, target, out_dir, pairs=pairs, progress=not quiet, **options)
    for line in summary.lines():
        click.echo(line)
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
