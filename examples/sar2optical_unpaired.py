"""SAR -> optical without pairs (CycleGAN), with the geopix2pix Python API.

    python examples/sar2optical_unpaired.py            # the SpaceNet 6 sample in ../shared/data
    python examples/sar2optical_unpaired.py --source sar_db.tif --target rgb.tif --steps 3000

When no optical image covers the SAR's ground (or none from the same season), CycleGAN learns
the translation from two collections that share no pixel. Here the sample's SAR is cut to its
west part and the optical image to its east part, so that no pixel is paired; on your own data,
pass the two collections as they are (any CRSs, grids and extents).

- `export_chips(..., unpaired=True, sources=[...], targets=[...])` cuts each domain's chips on
  its own rasters' grids, with its own split, statistics and scaling; nothing is warped.
- `train(..., model="cyclegan")` writes two model files: run/model.safetensors (SAR -> optical)
  and run/model-ba.safetensors (optical -> SAR).
- The score is on the west half, whose optical image the model never saw (it saw that half's
  SAR), beside the train mean of the optical domain that the model file carries
  (`predict(..., baseline="constant")`), on the same pixels: a CycleGAN is worth using only
  where it beats that. With aligned pairs, Pix2Pix (examples/sar2optical.py) learns far better.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rasterio
from rasterio.windows import Window

import geopix2pix

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sar_optical_spacenet6_rotterdam"


def crop(path: Path, out: Path, east: bool) -> Path:
    """The west (or east) half of `path` as its own GeoTIFF, on the same grid (a window read)."""
    with rasterio.open(path) as src:
        half = src.width // 2
        window = Window(half if east else 0, 0, src.width - half if east else half, src.height)
        profile = dict(src.profile, width=window.width, height=window.height,
                       transform=src.window_transform(window))
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", type=Path, default=DATA / "sar_masked_HH_HV_VH_VV_dB.tif",
                        help="SAR backscatter raster in dB (its west half is the SAR domain)")
    parser.add_argument("--target", type=Path, default=DATA / "rgb_unmasked.tif",
                        help="optical image (its east half is the optical domain)")
    parser.add_argument("--out", type=Path, default=Path("example-sar2optical-unpaired"),
                        help="output folder")
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--chip-size", type=int, default=32, help="chip size in pixels")
    args = parser.parse_args()
    for raster in (args.source, args.target):  # the sample data lies beside a checkout
        if not raster.exists():
            parser.error(f"{raster} does not exist; run from a geopix2pix checkout with "
                         "../shared/data beside it, or pass --source and --target")

    sar = crop(args.source, args.out / "domains" / "sar_west.tif", east=False)
    optical = crop(args.target, args.out / "domains" / "optical_east.tif", east=True)
    chips, run, prediction = args.out / "chips", args.out / "run", args.out / "prediction.tif"
    print("\n".join(geopix2pix.export_chips(
        out_dir=chips, unpaired=True, sources=[sar], targets=[optical],
        chip_size=args.chip_size, stride=args.chip_size // 4, split_block=2 * args.chip_size,
        source_scaling="percentile", max_nodata=0.6, overwrite=True).lines()))
    result = geopix2pix.train(chips, run, model="cyclegan", generator="resnet_6blocks",
                              max_steps=args.steps, epochs=1, decay_epochs=1, ngf=32,
                              batch_size=4, augment="none", overwrite=True)
    # SAR -> optical over the whole scene; model-ba.safetensors translates optical -> SAR.
    geopix2pix.predict(args.source, prediction, model=result.model_path, overwrite=True)
    mean = args.out / "train_mean.tif"  # the optical domain's train mean, on the same grid
    geopix2pix.predict(args.source, mean, model=result.model_path, baseline="constant",
                       overwrite=True, progress=False)
    judged = crop(args.target, args.out / "judged" / "optical_west.tif", east=False)
    for name, raster in (("CycleGAN", prediction), ("train mean", mean)):
        west = crop(raster, args.out / "judged" / f"{raster.stem}_west.tif", east=False)
        scores = geopix2pix.evaluate(west, judged).overall
        print(f"west half (optical never seen), {name:<10}: MAE {scores['mae']:.2f}  "
              f"RMSE {scores['rmse']:.2f}  SSIM {scores['ssim']:.3f}")
    print(f"prediction: {prediction} (nodata where the SAR is NaN)")


if __name__ == "__main__":  # export-chips starts worker processes, which re-import this file
    main()
