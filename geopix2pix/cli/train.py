"""`geopix2pix train`: chips folder -> trained Pix2Pix run folder."""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

from geopix2pix.cli.stops import reports_stop, train_stopped

GENERATOR_HELP = ("Generator: 'unet' (the paper's U-Net, depth log2 of the chip size) or "
                  "'smp:<Architecture>:<encoder>' from segmentation-models-pytorch, e.g. "
                  "smp:Unet:resnet34 (no weights are downloaded).")
NORM_HELP = ("Normalisation in G and D. batch: at prediction, eval-mode batch norm uses the "
             "statistics learned in training, so a pixel's value does not depend on its window's "
             "neighbours or batch and stitched scenes show no seams. instance: normalises each "
             "window by its own statistics (can show seams between prediction windows).")
AUGMENT_HELP = ("Random transforms applied identically to input and target. none: when the "
                "answer depends on orientation (a hillshade depends on the sun azimuth, shadows "
                "and slopes have a direction). flip: mirror images are as plausible as the "
                "originals. d4: flips and 90-degree rotations, for orientation-free mappings "
                "(e.g. land cover from imagery).")


@click.command("train", context_settings={"show_default": True})
@click.argument("chips_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: model.safetensors, model-best.safetensors, checkpoint.pt, "
                   "metrics.csv, baselines.json, samples/, train.json.")
@click.option("--batch-size", type=int, default=8,
              help="Chips per step, per process under torchrun (effective batch = this x "
                   "processes); batch norm learns steadier statistics with more than 1.")
@click.option("--workers", type=int, default=None,
              help="Data-loading processes, 0 = main process  [default: cores - 1, at most 8]")
@click.option("--device", default="auto",
              help="auto (CUDA when present, else the CPU), cpu, cuda or cuda:N (under torchrun, "
                   "each process takes the GPU of its LOCAL_RANK).")
@click.option("--amp/--no-amp", default=True,
              help="Mixed precision on CUDA (bf16 autocast, or fp16 with a grad scaler where "
                   "bf16 is unsupported); the CPU always trains in fp32.")
@click.option("--compile", "compile_", is_flag=True, default=False,
              help="Compile G and D with torch.compile (slow start, faster steps on a GPU)  "
                   "[default: off]")
@click.option("--seed", type=int, default=0, help="Seed of weights, batch order, augmentation.")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the run in RUN_DIR from its checkpoint.pt, with the options it was "
                   "started with (those that shape the result may not change)  [default: off]")
@click.option("--epochs", type=int, default=100, help="Epochs at the constant learning rate.")
@click.option("--decay-epochs", type=int, default=100,
              help="Epochs of linear learning-rate decay to zero after --epochs.")
@click.option("--max-steps", type=int, default=None,
              help="Train this many steps instead (same constant/decay proportions)  "
                   "[default: none]")
@click.option("--lr", type=float, default=2e-4, help="Adam learning rate (betas 0.5, 0.999).")
@click.option("--lambda-l1", type=float, default=None,
              help="Weight of the L1 loss (of the cross-entropy with --categorical).  "
                   "[default: 100.0]")
@click.option("--gan-mode", type=click.Choice(["vanilla", "lsgan"]), default=None,
              help="Adversarial loss: vanilla (cross-entropy, the paper's) or lsgan (squares).  "
                   "[default: vanilla]")
@click.option("--gan-warmup", type=float, default=0.0,
              help="Share of the steps (0 to 1) in which G learns from the L1 (cross-entropy) "
                   "loss alone and D is idle; 1 = no adversarial term at all.")
@click.option("--ema", type=float, default=0.0,
              help="Decay of an average of G's weights kept over the steps (e.g. 0.999); "
                   "validation, samples and the model files use the average. 0 = off.")
@click.option("--val-every", type=int, default=None,
              help="Validate and write the model files and checkpoint at the first epoch end "
                   "after every N steps, and at the end  [default: a tenth of the run]")
@click.option("--generator", default=None, help=GENERATOR_HELP + "  [default: unet]")
@click.option("--encoder-weights", type=click.Path(dir_okay=False), default=None,
              help="Local state dict (.pt/.pth/.safetensors) to initialise an smp encoder  "
                   "[default: none]")
@click.option("--ngf", type=int, default=64, help="Filters of the U-Net's outer level.")
@click.option("--ndf", type=int, default=64, help="Filters of the discriminator's first layer.")
@click.option("--n-layers", type=int, default=3,
              help="PatchGAN layers: 3 = the paper's 70x70 patches; at most log2(chip size) - 2 "
                   "(4 for 64-px chips).")
@click.option("--norm", type=click.Choice(["batch", "instance"]), default=None,
              help=NORM_HELP + "  [default: batch]")
@click.option("--augment", type=click.Choice(["none", "flip", "d4"]), default="none",
              help=AUGMENT_HELP)
@click.option("--categorical", is_flag=True, default=False,
              help="The target is a class map (land cover codes, a road mask): learn one score "
                   "per class code of the train chips with cross-entropy, so predict writes the "
                   "most probable class, never a blend of codes. Export such targets with "
                   "--target-resampling nearest.  [default: off]")
@click.option("--class-weights", type=click.Choice(["none", "balanced"]), default="none",
              help="With --categorical: balanced weighs each class's pixels by the inverse of "
                   "its share of the train pixels (at most 100), for rare classes such as "
                   "roads; none counts every pixel alike.")
@click.option("--residual", type=click.Choice(["none", "linear"]), default="none",
              help="linear: the generator learns the target minus the linear baseline (the "
                   "least-squares map of the source bands fitted on the train chips, see "
                   "baselines.json), which it starts from and predict adds back; for values, "
                   "not --categorical.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace the files of an earlier run in RUN_DIR (a folder holding anything "
                   "else, or the chips, is refused).  [default: off]")
@click.option("--sync-bn", is_flag=True, default=False,
              help="Under torchrun on GPUs: batch norm statistics over the effective batch "
                   "(SyncBatchNorm) instead of each process's own.  [default: off]")
@click.option("--model", type=click.Choice(["pix2pix", "cyclegan"]), default="pix2pix",
              help="Model family: pix2pix learns from paired chips; cyclegan from two unpaired "
                   "collections (the chips' pairing, if any, is ignored). cyclegan defaults: "
                   "--generator resnet_9blocks, --norm instance, LSGAN.")
@click.option("--lambda-a", type=float, default=None,
              help="cyclegan: weight of the cycle L1 of A -> B -> A.  [default: 10.0]")
@click.option("--lambda-b", type=float, default=None,
              help="cyclegan: weight of the cycle L1 of B -> A -> B.  [default: 10.0]")
@click.option("--lambda-identity", type=float, default=None,
              help="cyclegan: weight of the identity L1 (relative to the cycle weights); only "
                   "when both domains have as many bands (else 0).  [default: 0.5]")
@click.option("--pool-size", type=int, default=None,
              help="cyclegan: generated images each discriminator keeps to learn from.  "
                   "[default: 50]")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bar.  [default: off]")
@reports_stop(train_stopped)
def train_command(chips_dir, out_dir, compile_, **options):
    """Train Pix2Pix on CHIPS_DIR (from geopix2pix export-chips) into RUN_DIR (-o).

    Ctrl-C or SIGTERM finishes the step and writes the checkpoint; continue with --resume. Under
    `torchrun --nproc-per-node N -m geopix2pix train ...` it trains with DistributedDataParallel
    (one process per GPU; rank 0 writes the run folder).
    """
    from geopix2pix.training import train

    if options["resume"]:  # the run's own options, but for those typed again
        context = click.get_current_context()
        options = {name: value for name, value in options.items()
                   if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
    # SIGTERM raises KeyboardInterrupt too (`cli.Terminated`): `reports_stop` says what is left
    result = train(chips_dir, out_dir, compile=compile_, log=_log, **options)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks
        return
    best = ", ".join(f"{k} {v:.4g}" for k, v in result.best.items()
                     if isinstance(v, float) and k.startswith("val_"))
    click.echo(f"{result.run_dir}: {result.steps} steps in {result.epochs} epochs; "
               f"model {result.model_path.name}, best {result.best_model_path.name}"
               + (f" ({best})" if best else ""))
    if result.comparison:
        click.echo(result.comparison)


def _log(message: str) -> None:
    click.echo(message, err=True)
