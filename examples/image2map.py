"""Image -> map (land cover classes) on your own rasters, with the geopix2pix Python API.

    python examples/image2map.py                       # Sentinel-2 + land cover in ../shared/data
    python examples/image2map.py --source image.tif --target classes.tif --chip-size 128

It trains the recipe docs/train.md gives for an image -> class map, which tools/bench_quality.py
measures on held-out ground against the simple baselines. The choices that matter for a
categorical target:
- Classes, not values: `categorical=True` learns one score per class code of the train chips
  (cross-entropy); predict writes the most probable code, with the map's dtype, nodata and colour
  table. Regressed as numbers, an uncertain pixel or a class edge would come out as an intermediate
  code (between 2 = forest and 8 = artificial surface lies 5 = water).
- Resampling: `target_resampling="nearest"`. When the map is on another grid it is warped onto the
  image's grid; bilinear or cubic would average neighbouring codes into codes of other classes.
- Evaluation: `categorical=True` reports pixel accuracy and per-class IoU instead of PSNR.
- Augmentation: the recipe's d4 (flips and 90-degree rotations). A land cover class does not
  depend on the orientation of the chip, and eight times more variety helps with few chips.
- Model: `recipe="classes"` (what the default, `auto`, picks where the bands' linear
  discriminant tells the classes apart, as here): with a few
  thousand labelled pixels most of a class is in its spectrum, so a local generator learns the
  residual over the linear discriminant of the bands (starting from it), on the same unweighted
  cross-entropy the
  discriminant's priors (the train class shares) stand for. Its start is validated too, so
  `result.best_model_path` never has a lower val mean IoU than the discriminant: on a held-out
  part of this scene it ties or beats it a little. `predict --baseline discriminant` writes the
  discriminant itself (here the whole scene is scored, training area included).
- Chip size vs pixel size: a chip must hold enough context to recognise a class (fields, towns);
  at 10 m, 32 px is 320 m. This sample is only 100 x 101 pixels, hence the small chips.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopix2pix

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "image_map_eolearn_slovenia"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", type=Path, default=DATA / "s2_l1c_2015-07-11_clear.tif",
                        help="image (any number of bands, e.g. 13 Sentinel-2 bands)")
    parser.add_argument("--target", type=Path, default=DATA / "lulc.tif",
                        help="categorical map (integer class codes, nodata 0)")
    parser.add_argument("--out", type=Path, default=Path("example-image2map"),
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
        target_resampling="nearest", overwrite=True).lines()))
    result = geopix2pix.train(chips, run, max_steps=args.steps, recipe="classes",
                              categorical=True, overwrite=True)  # (the recipe augments: d4)
    # The whole scene, training area included: for an honest score, predict another scene.
    geopix2pix.predict(args.source, prediction, model=result.best_model_path, overwrite=True)
    print(geopix2pix.evaluate(prediction, args.target, categorical=True).table())
    fisher = args.out / "discriminant.tif"
    geopix2pix.predict(args.source, fisher, model=result.best_model_path,
                       baseline="discriminant", overwrite=True)
    print("the linear discriminant alone:")
    print(geopix2pix.evaluate(fisher, args.target, categorical=True).table())
    print(f"prediction: {prediction} (class codes as in {args.target})")


if __name__ == "__main__":  # export-chips starts worker processes, which re-import this file
    main()
