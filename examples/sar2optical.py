"""SAR -> optical on your own rasters, with the geopix2pix Python API.

    python examples/sar2optical.py                     # the SpaceNet 6 sample in ../shared/data
    python examples/sar2optical.py --source sar_db.tif --target rgb.tif --steps 1200

It trains the recipe docs/train.md gives for SAR -> optical, which tools/bench_quality.py
measures on held-out ground against the linear baseline. The choices that matter for SAR inputs:
- Units: give the backscatter in dB (10*log10 of the intensity); linear intensities span
  orders of magnitude. `source_scaling="percentile"` maps the 1st..99th percentiles to [-1, 1],
  so speckle outliers and bright corner reflectors do not squash everything else.
- Masks: NaN (here about 40% of the SAR scene, without a nodata tag) is invalid; such pixels are
  left out of the loss and come out as nodata. Raise `max_nodata` when the valid area is ragged,
  or most chips are rejected.
- Grids: the optical image is warped onto the SAR grid (`target_resampling="bilinear"` for
  continuous imagery); here the two grids differ by a fraction of a pixel.
- Model: `recipe="residual"` (what the default, `auto`, picks here: the linear map of the
  bands explains part of the colour): with few pairs, little of the colour is in the
  backscatter, so a narrow local generator learns the residual over the least-squares linear
  baseline (starting from it), on the squared error that baseline is fitted with; `predict
  --baseline linear` writes the baseline itself, to compare on ground the run never saw.
- Augmentation: `augment="flip"`, as the recipe measured: its 3x3 neighbourhood hardly sees the
  look direction. With a wide-context model (the U-Net) use `none`: layover and shadow fall away
  from the sensor, and the optical image has a sun direction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopix2pix

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sar_optical_spacenet6_rotterdam"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", type=Path, default=DATA / "sar_masked_HH_HV_VH_VV_dB.tif",
                        help="SAR backscatter raster in dB (any number of polarisations)")
    parser.add_argument("--target", type=Path, default=DATA / "rgb_unmasked.tif",
                        help="optical image to learn")
    parser.add_argument("--out", type=Path, default=Path("example-sar2optical"),
                        help="output folder")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: the recipe's length)")
    parser.add_argument("--chip-size", type=int, default=32, help="chip size in pixels")
    args = parser.parse_args()
    for raster in (args.source, args.target):  # the sample data lies beside a checkout
        if not raster.exists():
            parser.error(f"{raster} does not exist; run from a geopix2pix checkout with "
                         "../shared/data beside it, or pass --source and --target")

    chips, run, prediction = args.out / "chips", args.out / "run", args.out / "prediction.tif"
    print("\n".join(geopix2pix.export_chips(
        args.source, args.target, chips, chip_size=args.chip_size, stride=args.chip_size // 4,
        source_scaling="percentile", target_resampling="bilinear", max_nodata=0.5,
        overwrite=True).lines()))
    result = geopix2pix.train(chips, run, max_steps=args.steps, recipe="residual",
                              augment="flip", overwrite=True)
    # The whole scene, training area included: for an honest score, predict another scene.
    geopix2pix.predict(args.source, prediction, model=result.best_model_path, overwrite=True)
    print(geopix2pix.evaluate(prediction, args.target).table())
    print(f"prediction: {prediction} (nodata where the SAR is NaN)")


if __name__ == "__main__":  # export-chips starts worker processes, which re-import this file
    main()
