"""`geopix2pix train`'s options (`TrainConfig`), declared once: their names (the CLI's,
``--batch-size`` -> ``batch_size``), types, defaults, choices and help, and their checks. The
command line derives its options from these fields; ``train(chips_dir, out_dir, **options)``
takes the same names;
`TrainKeywords` names them with their types for type checkers and IDEs (a test keeps the two the
same). Options fall in two groups: those that shape the result (a resumed run must use the same
ones, `TrainConfig.result_options`) and runtime ones that may change between a run and its
resumption (declared ``runtime=True``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings import common
from geopix2pix.settings.checking import from_keywords
from geopix2pix.settings.declare import check_choice, flag, option, runtime_names
from geopix2pix.settings.families import (
    BETA1,
    BETA2,
    CYCLEGAN_DEFAULTS,
    CYCLEGAN_OPTIONS,
    FAMILY_DEFAULTS,
    GENERATOR_HELP,
    LOCAL_DEFAULT,
    LOCAL_LAYERS,
    MODELS,
    NORM_HELP,
    NORMS,
    PIX2PIX,
    PIX2PIX_OPTIONS,
    RESOLVED_BY_RUN,
    cyclegan_default,
    family_default,
)
from geopix2pix.settings.recipes import (
    CLASS_RECIPES,
    RECIPE_CHOICES,
    RECIPE_HELP,
    RECIPE_OPTIONS,
    RECIPES,
    SHOWN,
    auto_choice,
)

GAN_MODES = ("vanilla", "lsgan")
CLASS_WEIGHTS = ("none", "balanced")
AUGMENTS = ("none", "flip", "d4")
RESIDUALS = ("none", "linear")
PIXEL_LOSSES = ("l1", "mse")
AUGMENT_HELP = ("Random transforms applied identically to input and target. none: when the "
                "answer depends on orientation (a hillshade depends on the sun azimuth, shadows "
                "and slopes have a direction). flip: mirror images are as plausible as the "
                "originals. d4: flips and 90-degree rotations, for orientation-free mappings "
                "(e.g. land cover from imagery).")


class TrainKeywords(TypedDict, total=False):
    """The keyword options of `train`, as type checkers see them: `TrainConfig`'s fields (a
    test keeps the two the same). Defaults and meanings: `TrainConfig` and `geopix2pix train
    --help`."""

    batch_size: int
    workers: int | None
    device: str
    amp: bool
    compile: bool
    seed: int
    resume: bool
    epochs: int | None
    decay_epochs: int | None
    max_steps: int | None
    min_steps: int | None
    lr: float | None
    beta1: float
    lambda_l1: float | None
    gan_mode: str | None
    gan_warmup: float | None
    ema: float | None
    val_every: int | None
    generator: str | None
    encoder_weights: str | None
    ngf: int | None
    local_layers: int | None
    ndf: int
    n_layers: int
    norm: str | None
    augment: str | None
    categorical: bool
    class_weights: str | None
    residual: str | None
    pixel_loss: str | None
    validity_band: bool | None
    samples: int
    overwrite: bool
    quiet: bool
    sync_bn: bool
    model: str
    recipe: str
    lambda_a: float | None
    lambda_b: float | None
    lambda_identity: float | None
    pool_size: int | None



def highest_lr(beta1: float) -> float:
    """The largest --lr whose first Adam step, lr / (1 - beta1), is still a float32 (with room
    for the step's other factor), to three digits, rounded down."""
    highest = 3.4028234663852886e38 * (1 - beta1) / 2  # (float32's largest)
    unit = 10.0 ** (math.floor(math.log10(highest)) - 2)
    return math.floor(highest / unit) * unit

@dataclass
class TrainConfig:
    """Options of a training run (see `geopix2pix train --help` for what each one does)."""

    batch_size: int = option(8, help="Chips per step, per process under torchrun (effective "
                             "batch = this x processes); batch norm learns steadier statistics "
                             "with more than 1.")
    workers: int | None = common.workers("Data-loading processes, 0 = main process",
                                         "usable cores - 1, at most 8")
    device: str = common.device("auto (CUDA when present, else the CPU), cpu, cuda or cuda:N "
                                "(under torchrun, each process takes the GPU of its LOCAL_RANK).")
    amp: bool = option(True, negatable=True, runtime=True, help=(
        "Mixed precision on CUDA (bf16 autocast, or fp16 with a grad scaler where bf16 is "
        "unsupported); the CPU always trains in fp32."))
    compile: bool = option(False, runtime=True, help="Compile G and D with torch.compile (slow "
                           "start, faster steps on a GPU)")
    seed: int = common.seed("Seed of weights, batch order, augmentation.")
    resume: bool = option(False, runtime=True, help=(
        "Continue the run in RUN_DIR from its checkpoint.pt, with the options it was started "
        "with (those that shape the result may not change)"))
    epochs: int | None = option(None, shown_default=family_default("epochs"),
                                help="Epochs at the constant learning rate.")
    decay_epochs: int | None = option(None, shown_default=family_default("decay_epochs"), help=(
        "Epochs of linear learning-rate decay to zero after --epochs."))
    max_steps: int | None = option(None, shown_default="none", help=(
        "Train this many steps instead (same constant/decay proportions)"))
    min_steps: int | None = option(None, shown_default=family_default("min_steps"), help=(
        "Train at least this many steps: where --epochs and --decay-epochs make fewer (a small "
        "chips folder's epochs are a few steps each), their schedule is stretched to it (same "
        "proportions; 0: no floor). A recipe's floor applies only to its own length: a run "
        "that gives --epochs, --decay-epochs or --max-steps trains exactly those."))
    lr: float | None = option(None, shown_default=family_default("lr"),
                              help=f"Adam learning rate (betas {BETA1}, {BETA2}).")
    beta1: float = option(BETA1, cli=False)
    lambda_l1: float | None = option(None, shown_default=str(PIX2PIX["lambda_l1"]), help=(
        "Weight of the pixel loss (--pixel-loss; the cross-entropy with --categorical)."))
    gan_mode: str | None = option(None, choices=GAN_MODES, shown_default=PIX2PIX["gan_mode"],
                                  help=("Pix2Pix's adversarial loss: vanilla (cross-entropy, the "
                                        "paper's) or lsgan (squares; CycleGAN's, always)."))
    # the share of the steps with G on its pixel loss alone
    gan_warmup: float | None = option(None, shown_default=SHOWN, help=(
        "Share of the steps (0 to 1) in which G learns from the L1 (cross-entropy) loss alone "
        "and D is idle; 1 = no adversarial term at all."))
    # the decay of the generator's weight average (0: off); ema.py
    ema: float | None = option(None, shown_default=SHOWN, help=(
        "Decay of an average of G's weights kept over the steps (e.g. 0.999); validation, "
        "samples and the model files use the average. 0 = off."))
    val_every: int | None = option(None, runtime=True, shown_default="a tenth of the run", help=(
        "Validate and write the model files and checkpoint at the first epoch end after every "
        "N steps, and at the end"))
    generator: str | None = option(None, shown_default=family_default("generator"),
                                    help=GENERATOR_HELP)
    encoder_weights: str | None = option(None, kind="file", runtime=True, shown_default="none",
                                         help="Local state dict (.pt/.pth/.safetensors) to "
                                              "initialise an smp encoder")
    ngf: int | None = option(None, shown_default=family_default("ngf"), help=(
        "Filters of the U-Net's outer level (the local generator's width)."))
    local_layers: int | None = option(None, shown_default=SHOWN, help=(
        "--generator local: its layers (a 3x3 convolution, then 1x1 ones; "
        f"{LOCAL_LAYERS[0]} to {LOCAL_LAYERS[1]})."))
    ndf: int = option(64, help="Filters of the discriminator's first layer.")
    n_layers: int = option(3, help="PatchGAN layers: 3 = the paper's 70x70 patches; at most "
                           "log2(chip size) - 2 (4 for 64-px chips).")
    norm: str | None = option(None, choices=NORMS, shown_default=family_default("norm"),
                              help=NORM_HELP)
    augment: str | None = option(None, choices=AUGMENTS, shown_default=family_default("augment"),
                                 help=AUGMENT_HELP)
    categorical: bool = option(False, help=(  # one score per class, cross-entropy (classes.py)
        "The target is a class map (land cover codes, a road mask): learn one score per class "
        "code of the train chips with cross-entropy, so predict writes the most probable "
        "class, never a blend of codes. Export such targets with --target-resampling nearest."))
    class_weights: str | None = option(None, choices=CLASS_WEIGHTS, shown_default=SHOWN, help=(
        "With --categorical: balanced weighs each class's pixels by the inverse of its share of "
        "the train pixels (at most 100), for rare classes such as roads; none counts every "
        "pixel alike."))
    residual: str | None = option(None, choices=RESIDUALS, shown_default=SHOWN, help=(
        "linear: the generator learns the target minus the linear baseline (the least-squares "
        "map of the source bands fitted on the train chips, see baselines.json), which it "
        "starts from and predict adds back; for a class map (--categorical), its class scores "
        "start from the linear discriminant of the source bands instead."))
    pixel_loss: str | None = option(None, choices=PIXEL_LOSSES, shown_default=SHOWN, help=(
        "G's pixel loss on values: l1 (the paper's: sharp, learns the median) or mse (learns "
        "the mean, as the linear baseline is fitted: with --residual linear its residual "
        "refines that fit instead of first moving it to the median, which transfers poorly "
        "between parts of a scene with skewed values, e.g. SAR -> optical)."))
    validity_band: bool | None = option(None, negatable=True, shown_default=SHOWN, help=(
        "Give G the source's validity as one more input band (1 where every source band is "
        "valid, 0 at its nodata: a DEM's voids, SAR's NaN), which predict adds too; the local "
        "generator then takes its differences over valid neighbours only, as gdaldem does "
        "beside a void."))
    samples: int = option(4, cli=False)
    overwrite: bool = common.overwrite(
        "Replace the files of an earlier run in RUN_DIR (a folder holding anything else, or the "
        "chips, is refused).")
    quiet: bool = common.quiet()
    # a run may resume on another number of ranks, where it means nothing (1 rank)
    sync_bn: bool = option(False, runtime=True, help=(
        "Under torchrun on GPUs: batch norm statistics over the effective batch (SyncBatchNorm) "
        "instead of each process's own."))
    model: str = option("pix2pix", choices=MODELS, help=(
        "Model family: pix2pix learns from paired chips; cyclegan from two unpaired collections "
        "(the chips' pairing, if any, is ignored). cyclegan defaults: --generator "
        f"{CYCLEGAN_DEFAULTS['generator']}, --norm {CYCLEGAN_DEFAULTS['norm']}, "
        f"{CYCLEGAN_DEFAULTS['gan_mode'].upper()}."))
    recipe: str = option("auto", choices=RECIPE_CHOICES, help=RECIPE_HELP)
    lambda_a: float | None = option(None, shown_default=cyclegan_default("lambda_a"), help=(
        "cyclegan: weight of the cycle L1 of A -> B -> A."))
    lambda_b: float | None = option(None, shown_default=cyclegan_default("lambda_b"), help=(
        "cyclegan: weight of the cycle L1 of B -> A -> B."))
    lambda_identity: float | None = option(None, shown_default=cyclegan_default(
        "lambda_identity"), help=("cyclegan: weight of the identity L1 (relative to the cycle "
                                  "weights); only when both domains have as many bands (else "
                                  "0)."))
    pool_size: int | None = option(None, shown_default=cyclegan_default("pool_size"), help=(
        "cyclegan: generated images each discriminator keeps to learn from."))

    def __post_init__(self) -> None:
        self._check_family()
        self._check_choices()
        self._check_numbers()
        self._apply_recipe()
        if self.resume and self.overwrite:
            raise GeoPix2PixError("--resume and --overwrite contradict each other; pass one")
        if self.class_weights not in (None, "none") and not self.categorical:
            raise GeoPix2PixError(f"--class-weights {self.class_weights} weighs the classes of a "
                                  "class map; pass --categorical too")
        if self.local_layers not in (None, LOCAL_DEFAULT):  # (3: see `refuse_unused`)
            self.refuse_unused(("local_layers",))
        low, high = LOCAL_LAYERS
        if self.local_layers is not None and not low <= self.local_layers <= high:
            raise GeoPix2PixError(f"--local-layers {self.local_layers}: the local generator "
                                  f"takes {low} to {high} layers")
        if self.pixel_loss not in (None, "l1") and self.categorical:
            raise GeoPix2PixError(f"--pixel-loss {self.pixel_loss} is a loss on values; a class "
                                  "map (--categorical) learns with cross-entropy: drop it")

    def refuse_unused(self, typed: Iterable[str]) -> None:
        """Refuse --local-layers among the options typed (their names) for another generator
        (`__post_init__` cannot tell a typed 3 from LOCAL_DEFAULT, which every run records)."""
        if "local_layers" in typed and self.generator not in (None, "local"):
            raise GeoPix2PixError(f"--local-layers is for --generator local, not "
                                  f"{self.generator}: drop it")

    def _check_family(self) -> None:
        """Refuse another family's options, then fill in this family's defaults."""
        check_choice(self, "model")
        foreign = CYCLEGAN_OPTIONS if self.model == "pix2pix" else PIX2PIX_OPTIONS
        own = FAMILY_DEFAULTS[self.model]
        other = "cyclegan" if self.model == "pix2pix" else "pix2pix"
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in foreign and value not in (field.default, own.get(field.name)):
                raise GeoPix2PixError(f"{flag(self, field.name)} is an option of --model "
                                      f"{other}, not of --model {self.model}: drop it")
        for name, value in own.items():
            if name not in RESOLVED_BY_RUN and getattr(self, name) is None:
                setattr(self, name, value)

    def _apply_recipe(self) -> None:
        """Pix2Pix: the options a run does not give, from its recipe (`settings.recipes`);
        ``auto`` waits for the chips (`with_recipe`, called by the trainer) unless the generator
        decides (another than the local one: paper, or shapes for a class map; the local one for a
        class map: classes)."""
        # (not a field: epochs given without a floor, warned of below the recipe's; not resumed)
        self.epochs_under_no_floor = self.min_steps is None and not self.resume and (
            self.epochs, self.decay_epochs) != (None, None)
        if self.model != "pix2pix":
            return
        if self.recipe in CLASS_RECIPES and not self.categorical:
            raise GeoPix2PixError(f"--recipe {self.recipe} trains a class map: pass --categorical "
                                  "too, or use --recipe residual or local for values")
        if self.recipe == "residual" and self.categorical:
            raise GeoPix2PixError("--recipe residual refines values on the squared error; for a "
                                  "class map (--categorical) use --recipe classes or shapes")
        if self.class_weights is None and not self.categorical:
            self.class_weights = "none"  # (values: no recipe weighs classes, auto need not wait)
        if self.min_steps is None and (self.epochs, self.decay_epochs, self.max_steps) != (
                None, None, None):
            self.min_steps = 0  # (a length given is trained as given: no recipe's floor)
        # (only the local generator has layers: given, they choose it)
        generator = "local" if self.generator is None and self.local_layers is not None \
            else self.generator
        name = auto_choice(self.categorical, None, generator) if self.recipe == "auto" \
            else self.recipe
        filled = self.recipe_values(name) if name is not None else {}
        for key, value in filled.items():
            setattr(self, key, value)
        self.filled_by_recipe = tuple(filled)  # (not a field: what the log names)

    def recipe_values(self, name: str) -> dict[str, Any]:
        """Recipe ``name``'s values of the options not given; its width and layers only with its
        own generator (another one, given, gets the paper's width)."""
        values = RECIPES[name]
        own_generator = self.generator in (None, values["generator"])
        filled = {}
        for key in RECIPE_OPTIONS:
            if getattr(self, key) is None:
                tied = key in ("ngf", "local_layers") and not own_generator
                filled[key] = RECIPES["paper"][key] if tied else values[key]
        if filled.get("local_layers", self.local_layers) is None:
            filled["local_layers"] = LOCAL_DEFAULT
        return filled

    @property
    def undecided(self) -> bool:
        """Whether ``--recipe auto`` still has to pick a recipe from the chips."""
        return any(getattr(self, key) is None for key in RECIPE_OPTIONS)

    def with_recipe(self, name: str) -> TrainConfig:
        """These options with recipe ``name``'s values where none is given (``auto``'s pick)."""
        picked = dataclasses.replace(self, **self.recipe_values(name))
        picked.epochs_under_no_floor = self.epochs_under_no_floor  # (what this run gave)
        return picked

    def _check_choices(self) -> None:
        for name in ("gan_mode", "norm", "augment", "class_weights", "residual", "pixel_loss",
                     "recipe"):
            if getattr(self, name) is not None:
                check_choice(self, name)

    def _check_numbers(self) -> None:
        positive = ("batch_size", "ngf", "local_layers", "ndf", "n_layers")
        for name in positive:
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise GeoPix2PixError(f"{flag(self, name)} must be at least 1")
        epochs = [value for value in (self.epochs, self.decay_epochs) if value is not None]
        if any(value < 0 for value in epochs) or (len(epochs) == 2 and sum(epochs) < 1):
            raise GeoPix2PixError("--epochs and --decay-epochs must be >= 0 and not both 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise GeoPix2PixError("--max-steps must be at least 1")
        if self.min_steps is not None and self.min_steps < 0:
            raise GeoPix2PixError("--min-steps must be 0 (no floor) or more")
        if self.min_steps and self.max_steps is not None:
            raise GeoPix2PixError("--max-steps sets the run's length, which --min-steps would "
                                  "stretch: give one")
        common.check_workers(self.workers, "0 loads in the main process")
        common.check_seed(self.seed)
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise GeoPix2PixError(f"--lr {self.lr}: use a learning rate above 0 (e.g. 2e-4)")
        if not 0 <= self.beta1 < 1:  # (a Python option: Adam's first beta)
            raise GeoPix2PixError(f"beta1={self.beta1}: use a decay from 0 to below 1 (e.g. 0.5)")
        if self.lr is not None and self.lr > (top := highest_lr(self.beta1)):
            raise GeoPix2PixError(f"--lr {self.lr:g}: use at most {top:g}, whose first Adam "
                                  "step still is a float32 (2e-4 is the usual rate)")
        for name in ("lambda_l1", "lambda_a", "lambda_b", "lambda_identity"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < math.inf:  # (NaN is neither)
                raise GeoPix2PixError(f"{flag(self, name)} {value}: use 0 or more "
                                      "(a finite number)")
        if self.pool_size is not None and self.pool_size < 0:
            raise GeoPix2PixError(f"--pool-size {self.pool_size}: use 0 (no history) or more")
        if self.gan_warmup is not None and not 0 <= self.gan_warmup <= 1:
            raise GeoPix2PixError(f"--gan-warmup {self.gan_warmup}: use a share of the steps "
                                  "from 0 (adversarial from the start) to 1 (never)")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise GeoPix2PixError(f"--ema {self.ema}: use a decay from 0 (off) to below 1, "
                                  "e.g. 0.999")
        if self.val_every is not None and self.val_every < 1:
            raise GeoPix2PixError(f"--val-every {self.val_every}: use at least 1 step")
        if self.samples < 0:
            raise GeoPix2PixError(f"samples={self.samples}: use 0 or more")

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """Build from keyword options named like the CLI's; unknown names are an error."""
        nullable = {f.name for f in dataclasses.fields(cls) if f.default is None}
        given = {k: v for k, v in options.items()
                 if v is not None or k in nullable}  # None elsewhere: the default
        return from_keywords(cls, given, "training")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_options(self) -> dict[str, Any]:
        """The options a resumed run must share with the run that wrote the checkpoint."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_OPTIONS}


# May differ between a run and its --resume: they change speed or output, not what is learned.
RUNTIME_OPTIONS = runtime_names(TrainConfig)
