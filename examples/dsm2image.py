"""DSM/DEM -> image (here: shaded relief) on your own rasters, with the geopix2pix Python API.

    python examples/dsm2image.py                       # the sample pair in ../shared/data
    python examples/dsm2image.py --source my_dem.tif --target my_image.tif --steps 3000

It trains the recipe docs/train.md gives for terrain derivatives (tools/bench_quality.py measures
it on held-out ground: 42 dB on the sample DEM's south). The choices that matter for elevation
inputs:
- Scaling: `source_scaling="centre"` subtracts each chip's own mean elevation. A shaded relief (or
  an orthophoto) depends on the slopes, not on the height above sea level; without centring, a
  valley at 300 m and a plateau at 2000 m look like different inputs to the model, and a scene
  higher than anything in training falls outside the learnt range.
- Nodata: DEM voids (-9999 here) are excluded from the loss and come out as nodata;
  `validity_band=True` shows the model where they are, so it takes its slopes beside a void from
  valid neighbours only (as gdaldem does).
- Model: `recipe="local"` (what the default, `auto`, picks for a DEM -> hillshade: the linear
  map of the height explains none of it), a local generator, each pixel from its 3x3
  neighbourhood at full resolution, on L1 alone: a hillshade or slope is a fixed local operator
  of the DEM. The recipe also gives `validity_band=True`.
- Augmentation: `augment="none"`. A hillshade is lit from one azimuth (315 degrees here); a flipped
  or rotated chip would be lit from another direction and teach the model the wrong answer.
  (For an elevation -> land cover map, `d4` would be safe.)
- Resampling: a continuous target on another grid is read with `target_resampling="bilinear"`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopix2pix

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dem_hillshade_exploradores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", type=Path, default=DATA / "exploradores_aster_dem_30m.tif",
                        help="elevation raster (metres)")
    parser.add_argument("--target", type=Path,
                        default=DATA / "exploradores_aster_hillshade_gdal_az315_alt45.tif",
                        help="image to learn (e.g. a hillshade or an orthophoto)")
    parser.add_argument("--out", type=Path, default=Path("example-dsm2image"),
                        help="output folder")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: the recipe's length)")
    parser.add_argument("--chip-size", type=int, default=32, help="chip size in pixels")
    parser.add_argument("--stride", type=int, default=12, help="chip stride in pixels")
    args = parser.parse_args()
    for raster in (args.source, args.target):  # the sample data lies beside a checkout
        if not raster.exists():
            parser.error(f"{raster} does not exist; run from a geopix2pix checkout with "
                         "../shared/data beside it, or pass --source and --target")

    chips, run, prediction = args.out / "chips", args.out / "run", args.out / "prediction.tif"
    print("\n".join(geopix2pix.export_chips(
        args.source, args.target, chips, chip_size=args.chip_size, stride=args.stride,
        source_scaling="centre", target_resampling="bilinear", overwrite=True).lines()))
    result = geopix2pix.train(chips, run, max_steps=args.steps, recipe="local", augment="none",
                              overwrite=True)
    # This predicts the whole scene, training area included: for an honest score, predict a
    # scene (or an area, see export-chips --aoi) the model never saw.
    geopix2pix.predict(args.source, prediction, model=result.best_model_path, overwrite=True)
    print(geopix2pix.evaluate(prediction, args.target).table())
    print(f"prediction: {prediction} (open it in QGIS beside {args.target})")


if __name__ == "__main__":  # export-chips starts worker processes, which re-import this file
    main()
