"""`geopix2pix demo`'s options (`DemoOptions`) and the sizes of a demo run (`DemoSettings`),
torch-free so that `geopix2pix demo --help` starts fast."""

from __future__ import annotations

from dataclasses import dataclass, replace

from geopix2pix.settings import common
from geopix2pix.settings.declare import option

TASKS = ("dsm2image", "sar2optical", "sat2map")
DEMO_FOLDER = "geopix2pix-demo"  # where a demo writes by default (-o)


@dataclass
class DemoSettings:
    """Sizes of a demo run. The defaults take about two minutes on a 2-core CPU."""

    n_train: int = 2
    train_size: int = 768
    heldout_size: int = 512
    chip_size: int = 64
    stride: int = 32
    split_block: int = 256  # side of the spatial blocks given whole to train or val
    ngf: int = 16  # CycleGAN's (--unpaired); Pix2Pix takes its recipe's width
    ndf: int = 16
    batch_size: int = 8
    max_steps: int = 800
    device: str = "auto"
    workers: int | None = None

    @classmethod
    def small(cls) -> DemoSettings:
        """A run of a few dozen seconds, for tests and a first look."""
        return cls(n_train=1, train_size=256, heldout_size=192, split_block=128, max_steps=150)


_SIZES = DemoSettings()


@dataclass(frozen=True)
class DemoOptions:
    """The options of `geopix2pix demo`: `run_demo`'s (a test keeps its defaults the same) and
    the `DemoSettings` they change (`settings`)."""

    task: str = option("dsm2image", choices=TASKS, help=(
        "dsm2image: elevation -> shaded relief; sar2optical: speckled SAR backscatter (dB) -> "
        "optical RGB; sat2map: satellite-like image -> cartographic map."))
    unpaired: bool = option(False, help=(
        "sar2optical only: train CycleGAN on the SAR of one training scene and the optical "
        "image of another (no pixel paired), instead of Pix2Pix on pairs."))
    seed: int = common.seed("Seed of the generated landscapes, the chip split and the training.")
    max_steps: int | None = option(None, flag="--steps", help=(
        f"Training steps (batches of {_SIZES.batch_size} chips of {_SIZES.chip_size} x "
        f"{_SIZES.chip_size} pixels), at least 1."),
        shown_default=f"{_SIZES.max_steps}, or {DemoSettings.small().max_steps} with --quick")
    quick: bool = option(False, help=(
        f"Smaller scenes and {DemoSettings.small().max_steps} steps: a run of about 20 seconds "
        "(a few times longer with --unpaired) that shows every step (the model learns less)."))
    device: str = common.device("auto uses CUDA when present, else the CPU.")
    overwrite: bool = common.overwrite(
        "Replace the outputs of an earlier demo in the output folder (a folder holding anything "
        "else is refused).")
    progress: bool = common.progress("No progress bars; print only the summary.")

    def settings(self) -> DemoSettings:
        """The sizes of the run: the small ones with --quick, with --device and --steps (when
        given) over them."""
        settings = replace(DemoSettings.small() if self.quick else DemoSettings(),
                           device=self.device)
        if self.max_steps is not None:  # given: over --quick's too
            settings = replace(settings, max_steps=self.max_steps)
        return settings
