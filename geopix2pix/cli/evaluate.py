"""`geopix2pix evaluate`: a prediction against a reference raster (table and optional JSON)."""

from __future__ import annotations

import click

from geopix2pix.cli.options import click_options
from geopix2pix.settings.evaluate import EvaluateOptions


@click.command("evaluate", context_settings={"show_default": True})
@click.argument("pred", type=click.Path())  # a folder: open_raster's one line
@click.argument("reference", type=click.Path())
@click_options(EvaluateOptions)
def evaluate_command(pred, reference, **options):
    """Compare PRED with REFERENCE (read on PRED's grid) on the pixels valid in both."""
    from geopix2pix.evaluation.evaluate import evaluate

    report = evaluate(pred, reference, **options)
    click.echo(report.table())
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
