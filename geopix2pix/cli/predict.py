"""`geopix2pix predict`: a model over whole scenes -> GeoTIFFs on the scenes' exact grids."""

from __future__ import annotations

import click

from geopix2pix.cli.options import BANDS, OFF, creation_options
from geopix2pix.cli.stops import predict_stopped, reports_stop
from geopix2pix.errors import GeoPix2PixError


@click.command("predict", context_settings={"show_default": True})
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "-m", required=True, type=click.Path(),
              help="Model file written by `geopix2pix train`: RUN_DIR/model.safetensors (or "
                   "model-best.safetensors).")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for several scenes' outputs (<scene name>.tif); then every PATH is a "
                   "scene.")
@click.option("--overlap", default=0.5, type=float,
              help="Fraction of the window shared by neighbouring windows.")
@click.option("--batch-size", default=8, type=click.IntRange(min=1),
              help="Windows per generator call.")
@click.option("--device", default="auto",
              help="auto (CUDA when present: bf16, channels_last; else the CPU), cpu, cuda or "
                   "cuda:N; under torchrun each process uses its own GPU.")
@click.option("--bands", type=BANDS, default=None,
              help="1-based scene bands to feed the model  [default: the source bands chosen "
                   "at export (e.g. 4,3,2) when the scene is like the training rasters, else "
                   "all its bands but alpha; a scene giving another number of bands than the "
                   "model takes needs --bands]")
@click.option("--blend", type=click.Choice(["hann", "none"]), default="hann",
              help="Hann-weighted blending of overlapping windows, or none (each window's "
                   "centre crop).")
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF with overviews." + OFF)
@click.option("--compress", type=click.Choice(["deflate", "zstd", "lzw", "none"]),
              default="deflate",
              help="Compression of the output GeoTIFF (with a predictor suited to the dtype).")
@click.option("--co", "creation_options", metavar="NAME=VALUE", multiple=True,
              callback=creation_options,
              help="GDAL creation option of the output's driver (GTiff, or COG with --cog), "
                   "over geopix2pix's own; repeatable. E.g. ZLEVEL=1 (GTiff) or LEVEL=1 (COG) "
                   "for faster, larger deflate files. Tiles must divide 512 (with --cog, "
                   "BLOCKSIZE a multiple of 16, at least 128).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs." + OFF)
@click.option("--resample-to-model", is_flag=True,
              help="Predict at the training pixel size (warping the scene) and write back on the "
                   "scene's grid." + OFF)
@click.option("--allow-no-crs", is_flag=True,
              help="Accept scenes without a CRS or without a geotransform (predicted on "
              "their pixels)." + OFF)
@click.option("--baseline", type=click.Choice(["none", "linear", "constant"]), default="none",
              help="Write a simple baseline the model file carries instead of the model's "
                   "prediction (same grid, dtype, nodata): linear (the least-squares map of the "
                   "source bands; for a class map the nearest class mean) or constant (the "
                   "train mean; the majority class), fitted on the train chips.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar." + OFF)
@reports_stop(predict_stopped)
def predict_command(paths, model, out_dir, quiet, **options):
    """Predict SCENE into OUT (`predict SCENE OUT -m MODEL`), or several scenes into --out-dir
    (`predict A.tif B.tif --out-dir DIR -m MODEL`).

    The output has the scene's exact grid (CRS, transform, size) and the model's target bands,
    dtype, units and nodata (a model trained with --categorical: one band, the code of the class
    of highest blended probability, with the target's colour table). Under
    `torchrun --nproc-per-node N -m geopix2pix predict ...` the scenes are shared among the N
    processes (one GPU each); rank 0 prints the summary.
    """
    from geopix2pix.prediction.distributed import predict_sharded
    from geopix2pix.runtime.distributed import env

    if out_dir is None:
        if len(paths) != 2:
            raise click.UsageError("give SCENE OUT, or several scenes with --out-dir DIR")
        scenes, out = paths[0], paths[1]
    else:
        scenes, out = list(paths), None

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    def report(r) -> None:  # as each scene is done, so a later stop loses no failure
        if r.ok and not quiet:
            click.echo(f"{r.out}: {r.windows} windows in {r.seconds:.1f} s")
        elif not r.ok and out is None:  # (one scene's failure is raised, and said once)
            click.echo(f"Error: {r.error}", err=True)

    launched = env().launched  # under torchrun, rank 0 reports every rank's scenes at the end
    results = predict_sharded(scenes, out, model=model, out_dir=out_dir, on_warning=warn,
                              on_result=None if launched else report, progress=not quiet,
                              **options)
    if env().rank != 0:
        return
    for r in results if launched else []:
        report(r)
    failed = [r for r in results if not r.ok]
    if failed:
        raise GeoPix2PixError(f"{len(failed)} of {len(results)} scene(s) failed (see above)")

