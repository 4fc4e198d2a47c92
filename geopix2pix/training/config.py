"""`TrainConfig`: every option of `geopix2pix train`, its default, and its validation.

The field names are the CLI's option names (``--batch-size`` -> ``batch_size``), so the Python API
``train(chips_dir, out_dir, **options)`` and the command take the same options; `TrainKeywords`
names them with their types for type checkers and IDEs (``**options: Unpack[TrainKeywords]``).
Options fall in two groups: those that shape the result (a resumed run must use the same ones, see
``RESULT_OPTIONS``) and runtime options that may change between a run and its resumption.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models.unet import NORMS
from geopix2pix.options import check_types

from . import distributed

GAN_MODES = ("vanilla", "lsgan")
CLASS_WEIGHTS = ("none", "balanced")
AUGMENTS = ("none", "flip", "d4")
RESIDUALS = ("none", "linear")
MODELS = ("pix2pix", "cyclegan")  # the model families (`families.FAMILIES`)
# options of one family only: given to another, they are refused (`_check_family`)
CYCLEGAN_OPTIONS = ("lambda_a", "lambda_b", "lambda_identity", "pool_size")
PIX2PIX_OPTIONS = ("lambda_l1", "gan_mode", "gan_warmup", "ema", "categorical",
                   "class_weights", "residual")
# defaults that depend on the family (None in `TrainConfig`: the family's)
FAMILY_DEFAULTS = {"pix2pix": {"generator": "unet", "norm": "batch", "gan_mode": "vanilla",
                               "lambda_l1": 100.0},
                   "cyclegan": {"generator": "resnet_9blocks", "norm": "instance",
                                "gan_mode": "lsgan", "lambda_a": 10.0, "lambda_b": 10.0,
                                "pool_size": 50}}
# May differ between a run and its --resume: they change speed or output, not what is learned.
# sync_bn is one too: a run may resume on another number of ranks, where it means nothing (1 rank).
# encoder_weights too: a resumed run takes its weights from the checkpoint, not from that file.
# val_every too: when to validate and write files, not what is learned.
OPTIONS = "train.json"  # a run's options, in its folder
RUNTIME_OPTIONS = ("workers", "device", "amp", "compile", "resume", "overwrite", "quiet",
                   "sync_bn", "encoder_weights", "val_every")


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
    epochs: int
    decay_epochs: int
    max_steps: int | None
    lr: float
    beta1: float
    lambda_l1: float | None
    gan_mode: str | None
    gan_warmup: float
    ema: float
    val_every: int | None
    generator: str | None
    encoder_weights: str | None
    ngf: int
    ndf: int
    n_layers: int
    norm: str | None
    augment: str
    categorical: bool
    class_weights: str
    residual: str
    samples: int
    overwrite: bool
    quiet: bool
    sync_bn: bool
    model: str
    lambda_a: float | None
    lambda_b: float | None
    lambda_identity: float | None
    pool_size: int | None


@dataclass
class TrainConfig:
    """Options of a training run (see `geopix2pix train --help` for what each one does)."""

    batch_size: int = 8  # per rank (process) under torchrun; effective = batch_size * ranks
    workers: int | None = None
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    seed: int = 0
    resume: bool = False
    epochs: int = 100
    decay_epochs: int = 100
    max_steps: int | None = None
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_l1: float | None = None  # None: the family's default (FAMILY_DEFAULTS)
    gan_mode: str | None = None
    gan_warmup: float = 0.0  # share of the steps with G on its pixel loss alone (D idle)
    ema: float = 0.0  # decay of the generator's weight average (0: off); see ema.py
    val_every: int | None = None  # steps between validations; None: a tenth of the run
    generator: str | None = None
    encoder_weights: str | None = None
    ngf: int = 64
    ndf: int = 64
    n_layers: int = 3
    norm: str | None = None
    augment: str = "none"
    categorical: bool = False  # a class map: one score per class, cross-entropy (classes.py)
    class_weights: str = "none"  # "balanced": rare classes weigh more in the cross-entropy
    residual: str = "none"  # "linear": G learns the target minus the linear baseline
    samples: int = 4
    overwrite: bool = False
    quiet: bool = False
    sync_bn: bool = False
    model: str = "pix2pix"  # the model family (`families`)
    lambda_a: float | None = None  # cyclegan: weight of the A -> B -> A cycle L1
    lambda_b: float | None = None  # cyclegan: weight of the B -> A -> B cycle L1
    lambda_identity: float | None = None  # cyclegan: identity L1 (None: 0.5, 0 when it cannot)
    pool_size: int | None = None  # cyclegan: generated images each discriminator remembers

    def __post_init__(self) -> None:
        self._check_family()
        self._check_choices()
        self._check_numbers()
        if self.resume and self.overwrite:
            raise GeoPix2PixError("--resume and --overwrite contradict each other; pass one")
        if self.class_weights != "none" and not self.categorical:
            raise GeoPix2PixError(f"--class-weights {self.class_weights} weighs the classes of a "
                                  "class map; pass --categorical too")
        if self.residual != "none" and self.categorical:
            raise GeoPix2PixError(f"--residual {self.residual} adds a linear map to values; a "
                                  "class map (--categorical) has none: drop --residual")

    def _check_family(self) -> None:
        """Refuse another family's options, then fill in this family's defaults."""
        if self.model not in MODELS:
            raise GeoPix2PixError(f"--model {self.model}: use one of {', '.join(MODELS)}")
        defaults = dataclasses.fields(self)
        foreign = CYCLEGAN_OPTIONS if self.model == "pix2pix" else PIX2PIX_OPTIONS
        own = FAMILY_DEFAULTS[self.model]
        for field in defaults:
            value = getattr(self, field.name)
            if field.name in foreign and value not in (field.default, own.get(field.name)):
                raise GeoPix2PixError(
                    f"--{field.name.replace('_', '-')} is an option of --model "
                    f"{'cyclegan' if self.model == 'pix2pix' else 'pix2pix'}, not of --model "
                    f"{self.model}: drop it")
        for name, value in FAMILY_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def _check_choices(self) -> None:
        for name, choices in (("gan_mode", GAN_MODES), ("norm", NORMS),
                              ("augment", AUGMENTS), ("class_weights", CLASS_WEIGHTS),
                              ("residual", RESIDUALS)):
            value = getattr(self, name)
            if value not in choices:
                raise GeoPix2PixError(f"--{name.replace('_', '-')} {value}: use one of "
                                      f"{', '.join(choices)}")

    def _check_numbers(self) -> None:
        positive = ("batch_size", "ngf", "ndf", "n_layers")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise GeoPix2PixError(f"--{name.replace('_', '-')} must be at least 1")
        if self.epochs < 0 or self.decay_epochs < 0 or self.epochs + self.decay_epochs < 1:
            raise GeoPix2PixError("--epochs and --decay-epochs must be >= 0 and not both 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise GeoPix2PixError("--max-steps must be at least 1")
        if self.workers is not None and self.workers < 0:
            raise GeoPix2PixError("--workers must be 0 (load in the main process) or more")
        if not self.lr > 0:
            raise GeoPix2PixError(f"--lr {self.lr}: use a learning rate above 0 (e.g. 2e-4)")
        for name in ("lambda_l1", "lambda_a", "lambda_b", "lambda_identity"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise GeoPix2PixError(f"--{name.replace('_', '-')} {value}: use 0 or more")
        if self.pool_size is not None and self.pool_size < 0:
            raise GeoPix2PixError(f"--pool-size {self.pool_size}: use 0 (no history) or more")
        if not 0 <= self.gan_warmup <= 1:
            raise GeoPix2PixError(f"--gan-warmup {self.gan_warmup}: use a share of the steps "
                                  "from 0 (adversarial from the start) to 1 (never)")
        if not 0 <= self.ema < 1:
            raise GeoPix2PixError(f"--ema {self.ema}: use a decay from 0 (off) to below 1, "
                                  "e.g. 0.999")
        if self.val_every is not None and self.val_every < 1:
            raise GeoPix2PixError(f"--val-every {self.val_every}: use at least 1 step")
        if self.samples < 0:
            raise GeoPix2PixError(f"samples={self.samples}: use 0 or more")

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """Build from keyword options named like the CLI's; unknown names are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise GeoPix2PixError(f"unknown training option(s): {', '.join(unknown)}; "
                                  f"valid: {', '.join(sorted(known))}")
        given = {k: v for k, v in options.items() if v is not None or k in (
            "workers", "max_steps", "encoder_weights")}  # None elsewhere: the default
        return cls(**check_types(given, cls))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_options(self) -> dict[str, Any]:
        """The options a resumed run must share with the run that wrote the checkpoint."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_OPTIONS}


def saved_options(run_dir: Path, given: dict[str, Any]) -> dict[str, Any]:
    """--resume: the options the run in `run_dir` was started with (its train.json), those
    `given` over them, so resuming needs no option repeated (one that shapes the result, given
    differently from the checkpoint's, is then refused; a runtime one such as --workers or
    --device may change). Options this version does not know are dropped; the batch size per
    rank is the run's chips per step over this run's ranks."""
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"resume", "overwrite", "quiet"}
    try:
        saved = json.loads((run_dir / OPTIONS).read_text())
        options = {k: v for k, v in saved["options"].items() if k in known}
        effective = int(saved["effective_batch_size"])
    except (OSError, ValueError, KeyError, TypeError):  # none: the checkpoint's check decides
        return given
    family = options.get("model", "pix2pix")
    if given.get("model", family) != family:
        raise GeoPix2PixError(f"--resume: {run_dir} trains a {family} model, not "
                              f"{given['model']}; resume it with --model {family} or start a "
                              "new run")
    world = distributed.env().world_size
    if effective % world == 0:
        options["batch_size"] = effective // world
    return {**options, **given}
