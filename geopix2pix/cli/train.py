"""`geopix2pix train`: chips folder -> run folder of a trained model family (Pix2Pix, or CycleGAN
with --model cyclegan)."""

from __future__ import annotations

import click
from click.core import ParameterSource

from geopix2pix.cli.options import click_options
from geopix2pix.cli.stops import reports_stop, train_stopped
from geopix2pix.runtime.ranks import speaks
from geopix2pix.settings.train import TrainConfig


@click.command("train", context_settings={"show_default": True})
@click.argument("chips_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: model.safetensors, model-best.safetensors, checkpoint.pt, "
                   "metrics.csv, baselines.json, samples/, train.json.")
@click_options(TrainConfig, last=("quiet",))
@reports_stop(train_stopped)
def train_command(chips_dir, out_dir, **options):
    """Train Pix2Pix (or CycleGAN, --model cyclegan) on CHIPS_DIR (from geopix2pix export-chips)
    into RUN_DIR (-o).

    Ctrl-C or SIGTERM finishes the step and writes the checkpoint; continue with --resume. Under
    `torchrun --nproc-per-node N -m geopix2pix train ...` it trains with DistributedDataParallel
    (one process per GPU; rank 0 writes the run folder).
    """
    from geopix2pix.training import train

    if options["resume"]:  # the run's own options, but for those typed again
        context = click.get_current_context()
        options = {name: value for name, value in options.items()
                   if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
    # SIGTERM raises KeyboardInterrupt too (`runtime.stopping.Terminated`): `reports_stop`
    # says what is left
    result = train(chips_dir, out_dir, log=_log, **options)
    if not speaks():  # under torchrun, rank 0 speaks
        return
    best = ", ".join(f"{k} {v:.4g}" for k, v in result.best.items()
                     if isinstance(v, float) and k.startswith("val_"))
    reverse = result.reverse_model_path
    click.echo(f"{result.run_dir}: {result.steps} steps in {result.epochs} "
               f"epoch{'s' if result.epochs != 1 else ''}; "
               f"model {result.model_path.name}, best {result.best_model_path.name}"
               + (f"; B -> A: {reverse.name}, best {result.reverse_best_model_path.name}"
                  if reverse else "")
               + (f" ({best})" if best else ""))
    if result.comparison:
        click.echo(result.comparison)


def _log(message: str) -> None:
    click.echo(message, err=True)
