"""`geopix2pix predict`: a model over whole scenes -> GeoTIFFs on the scenes' exact grids."""

from __future__ import annotations

import os
from pathlib import Path

import click

from geopix2pix.cli.options import click_options
from geopix2pix.cli.stops import predict_stopped, reports_stop
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings.predict import PredictOptions


@click.command("predict", context_settings={"show_default": True})
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "-m", required=True, type=click.Path(),
              help="Model file written by `geopix2pix train`: RUN_DIR/model.safetensors (or "
                   "model-best.safetensors).")
@click.option("--out-dir", type=click.Path(), metavar="DIRECTORY", default=None,
              help="Folder for several scenes' outputs (<scene name>.tif); then every PATH is a "
                   "scene.")
@click_options(PredictOptions, last=("progress",))
@reports_stop(predict_stopped)
def predict_command(paths, model, out_dir, progress, **options):
    """Predict SCENE into OUT (`predict SCENE OUT -m MODEL`), or several scenes into --out-dir
    (`predict A.tif B.tif --out-dir DIR -m MODEL`).

    The output has the scene's exact grid (CRS, transform, size) and the model's target bands,
    dtype, units and nodata (a model trained with --categorical: one band, the code of the class
    of highest blended probability, with the target's colour table). Under
    `torchrun --nproc-per-node N -m geopix2pix predict ...` the scenes are shared among the N
    processes (one GPU each); rank 0 prints the summary.
    """
    from geopix2pix.prediction.distributed import predict_sharded
    from geopix2pix.prediction.outputs import earlier_kept
    from geopix2pix.raster.write import refuse_link, refuse_special_file, replaced_inputs
    from geopix2pix.runtime.distributed import env

    if out_dir is None:
        if len(paths) != 2:
            raise click.UsageError("give SCENE OUT, or several scenes with --out-dir DIR")
        scenes, out = paths[0], paths[1]
        refuse_special_file(Path(out))
        refuse_link(Path(out))  # (before "pass --overwrite", which would not do)
        if os.path.lexists(out) and not os.path.isdir(out) and not options.get("overwrite"):
            raise GeoPix2PixError(f"{out} already exists: if it is a second scene, predict both "
                                  f"with --out-dir DIR; to replace it with {Path(scenes).name}'s "
                                  "prediction, pass --overwrite")
    else:
        scenes, out = list(paths), None

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    alone = out is not None or len(scenes) == 1  # one scene: its failure is the error line

    def report(r) -> None:  # as each scene is done, so a later stop loses no failure
        if r.ok and progress:
            click.echo(f"{r.out}: {r.windows} windows in {r.seconds:.1f} s")
        elif not r.ok and not alone:
            click.echo(f"Error: {r.error}", err=True)

    launched = env().launched  # under torchrun, rank 0 reports every rank's scenes at the end
    results = predict_sharded(scenes, out, model=model, out_dir=out_dir, on_warning=warn,
                              on_result=None if launched else report, progress=progress,
                              **options)
    if env().rank != 0:
        return
    for r in results if launched else []:
        report(r)
    failed = [r for r in results if not r.ok]
    if failed and len(results) == 1:
        raise GeoPix2PixError(str(failed[0].error))
    if failed:  # a failed scene's output there now is the earlier one (--overwrite), kept
        kept = [r.out for r in failed if r.out is not None and os.path.isfile(r.out)
                and not replaced_inputs([r.out], [r.scene])]  # (not the scene it would be)
        raise GeoPix2PixError(f"{len(failed)} of {len(results)} scene(s) failed (see above)"
                              f"{earlier_kept(kept)}")

