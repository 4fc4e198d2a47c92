"""SAR -> optical on your own rasters, with the geopix2pix Python API.

    python examples/sar2optical.py                     # the SpaceNet 6 sample in ../shared/data
    python examples/sar2optical.py --source sar_db.tif --target rgb.tif --steps 3000

The choices that matter for SAR inputs:
- Units: give the backscatter in dB (10*log10 of the intensity); linear intensities span
  orders of magnitude. `source_scaling="percentile"` maps the 1st..99th percentiles to [-1, 1],
  so speckle outliers and bright corner reflectors do not squash everything else.
- Masks: NaN (here about 40% of the SAR scene, without a nodata tag) is invalid; such pixels are
  left out of the loss and come out as nodata. Raise `max_nodata` when the valid area is ragged,
  or most chips are rejected.
- Grids: the optical image is warped onto the SAR grid (`target_resampling="bilinear"` for
  continuous imagery); here the two grids differ by a fraction of a pixel.
- Augmentation: `augment="none"`. A SAR image has a look direction (layover and shadow fall away
  from the sensor) and the optical image a sun direction; flips would break both.
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
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--chip-size", type=int, default=64, help="chip size in pixels")
    args = parser.parse_args()

    chips, run, prediction = args.out / "chips", args.out / "run", args.out / "prediction.tif"
    print("\n".join(geopix2pix.export_chips(
        args.source, args.target, chips, chip_size=args.chip_size, stride=args.chip_size // 4,
        split_block=2 * args.chip_size, source_scaling="percentile", target_resampling="bilinear",
        max_nodata=0.6,
        overwrite=True).lines()))
    result = geopix2pix.train(chips, run, max_steps=args.steps, epochs=1, decay_epochs=1,
                              ngf=32, batch_size=8, augment="none", overwrite=True)
    # The whole scene, training area included: for an honest score, predict another scene.
    geopix2pix.predict(args.source, prediction, model=result.best_model_path, overwrite=True)
    print(geopix2pix.evaluate(prediction, args.target).table())
    print(f"prediction: {prediction} (nodata where the SAR is NaN)")


if __name__ == "__main__":  # export-chips starts worker processes, which re-import this file
    main()
