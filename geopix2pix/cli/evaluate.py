"""`geopix2pix evaluate`: a prediction against a reference raster (table and optional JSON)."""

from __future__ import annotations

import json

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

    to_stdout = str(options["json_path"]) in ("-", "/dev/stdout")  # (`--json - | jq`)
    report = evaluate(pred, reference, **{**options, "json_path": None} if to_stdout else options)
    click.echo(report.table(), err=to_stdout)
    if to_stdout:
        click.echo(json.dumps(report.to_dict(), indent=2))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
