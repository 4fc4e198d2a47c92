"""`geopix2pix evaluate`: a prediction against a reference raster (table and optional JSON)."""

from __future__ import annotations

import click

from geopix2pix.cli.options import BANDS, OFF


@click.command("evaluate", context_settings={"show_default": True})
@click.argument("pred", type=click.Path(dir_okay=False))
@click.argument("reference", type=click.Path(dir_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the results as JSON to this file.  [default: none]")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file." + OFF)
@click.option("--categorical", is_flag=True,
              help="Class maps: pixel accuracy and per-class IoU instead of MAE/RMSE/PSNR/SSIM "
                   "(the reference is then warped with nearest).  [default: off]")
@click.option("--bands", type=BANDS, default=None,
              help="1-based PRED bands, e.g. 1,2,3 or 1-3  [default: all but alpha]")
@click.option("--reference-bands", type=BANDS, default=None,
              help="1-based REFERENCE bands compared with PRED's, in order, e.g. 4,3,2  "
                   "[default: all but alpha; when that is not as many as PRED's, the bands "
                   "with PRED's band descriptions]")
def evaluate_command(pred, reference, json_path, overwrite, categorical, bands, reference_bands):
    """Compare PRED with REFERENCE (read on PRED's grid) on the pixels valid in both."""
    from geopix2pix.evaluation.evaluate import evaluate

    report = evaluate(pred, reference, categorical=categorical, json_path=json_path,
                      overwrite=overwrite, bands=bands, reference_bands=reference_bands)
    click.echo(report.table())
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
