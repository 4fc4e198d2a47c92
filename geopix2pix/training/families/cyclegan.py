"""The CycleGAN family (Zhu et al. 2017): two generators and two unconditional PatchGANs learn
A -> B and B -> A from two unpaired collections, held together by cycle consistency.

Domain A is the chips' source side, B their target side; each item pairs an A chip with a B
chip drawn independently (`ChipDataset(unpaired=True)`), so a paired chips folder trains it with its
pairing ignored. The networks, losses, pools and step are `models.resnet_generator`,
`cyclegan_losses`, `image_pool` and `cyclegan_step` (the reference's defaults); this module
wires them into the run. The run writes model.safetensors (A -> B) and model-ba.safetensors
(B -> A), each a complete model file of its direction carrying its output domain's train mean
as its one baseline (`cyclegan_baselines`, kept in baselines.json); model-best is picked by
the validation cycle L1 of both directions, plus the A -> B L1 when the val chips are paired.
The history pools are each rank's own and travel in the checkpoint per rank.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geopix2pix.chips.dataset import ChipDataset, chip_ids
from geopix2pix.chips.domains import DOMAINS
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import GeneratorSpec, build_discriminator, build_generator, save_model
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.models.run_files import RUN_MODELS
from geopix2pix.models.schema import SchemaError
from geopix2pix.raster.render import cycle_row
from geopix2pix.runtime import distributed
from geopix2pix.settings.export import TARGET_SCALINGS
from geopix2pix.settings.families import BETA2, PIX2PIX_OPTIONS

from .. import cyclegan_baselines
from ..baselines import BASELINES
from ..cyclegan_losses import LAMBDA_IDENTITY, CycleWeights, identity_applies, masked
from ..cyclegan_step import CycleGANStep, cyclegan_optimizers
from ..data import UNPAIRED_GROUPS, augment_batch
from ..device import maybe_compile
from ..image_pool import ImagePool, check_pool_state
from ..losses import masked_l1
from ..networks import check_discriminator_depth, unfit_for_chips
from ..samples import write_rows
from ..validate import evaluating
from .base import ModelExport, ModelFamily, Reduce, RunContext

EXPORTS = tuple(ModelExport(*names, direction) for direction, names in RUN_MODELS.items())
LOSSES = ("loss_G_A", "loss_G_B", "loss_cycle_A", "loss_cycle_B", "loss_idt_A", "loss_idt_B",
          "loss_D_A", "loss_D_B")


class CycleGAN(ModelFamily):
    """CycleGAN on the two sides of a chips folder (A: source, B: target)."""

    name = "cyclegan"
    needs_pairs = False
    EXPORTS = EXPORTS
    GENERATORS = ("g_a", "g_b")
    FILES = (BASELINES,)  # each direction's output-domain train mean (`cyclegan_baselines`)
    UNRECORDED = PIX2PIX_OPTIONS  # the other family's options
    loss_names = LOSSES
    metrics_columns = ("epoch", "step", "lr", *LOSSES, "val_cycle_a", "val_cycle_b", "val_l1",
                       "images_per_second", "epoch_seconds")

    def __init__(self, run: RunContext) -> None:
        super().__init__(run)
        self.config, self.info, self.setup = run.config, run.info, run.setup
        self.bands = {"a": len(run.info.source.bands), "b": len(run.info.target.bands)}
        self._check_scalings()
        self.weights = CycleWeights(self.config.lambda_a, self.config.lambda_b,
                                    self._lambda_identity())
        self.pools: dict[str, ImagePool] = {}

    def _check_scalings(self) -> None:
        """Each generator writes its domain's values back: both sides' scaling must invert.
        (And no pretrained encoder: both generators start from scratch.)"""
        if self.config.encoder_weights:
            raise GeoPix2PixError(f"--encoder-weights {self.config.encoder_weights}: --model "
                                  "cyclegan trains its generators from scratch; drop it")
        mode = self.info.source.scaling.mode
        if mode not in TARGET_SCALINGS:
            raise GeoPix2PixError(
                f"--model cyclegan: {self.run.chips_dir} scales its source chips with {mode}, "
                "which the B -> A model cannot write back; re-export with --source-scaling "
                f"{' or '.join(TARGET_SCALINGS)}")

    def _lambda_identity(self) -> float:
        """The identity weight: asked for, or the reference's 0.5, and 0 (said in the log)
        when the domains' band counts differ, where it cannot apply."""
        asked = self.config.lambda_identity
        if identity_applies(LAMBDA_IDENTITY if asked is None else asked, self.bands["a"],
                            self.bands["b"]):
            return LAMBDA_IDENTITY if asked is None else asked
        if asked:
            raise GeoPix2PixError(
                f"--lambda-identity {asked}: the identity loss needs domains of as many bands "
                f"(A has {self.bands['a']}, B {self.bands['b']}); drop --lambda-identity")
        return 0.0

    # --- set-up -------------------------------------------------------------------------------
    def _spec(self, bands_in: int, bands_out: int) -> GeneratorSpec:
        config = self.config
        return GeneratorSpec(config.generator, bands_in, bands_out, self.info.chip_size,
                             ngf=config.ngf, norm=config.norm, dropout=False,
                             layers=config.local_layers)

    def build_networks(self) -> None:
        config, (a, b) = self.config, self.bands.values()
        check_discriminator_depth(self.info.chip_size, config.n_layers)
        with unfit_for_chips(config.generator, self.info.chip_size):
            self.specs = {"a_to_b": self._spec(a, b), "b_to_a": self._spec(b, a)}
            # (the reference's names: G_A translates A -> B and is judged by D_A)
            self.nets = {"g_a": build_generator(self.specs["a_to_b"]),
                         "g_b": build_generator(self.specs["b_to_a"]),
                         "d_a": build_discriminator(b, config.ndf, config.n_layers, config.norm),
                         "d_b": build_discriminator(a, config.ndf, config.n_layers, config.norm)}

    def datasets(self) -> tuple[Any, Any]:
        """Train items: one chip of each domain, drawn independently (a paired folder's pairing
        ignored). Val items: a paired folder's pairs (also scored A -> B, see `validate`); an
        unpaired folder's chips of each domain in turn, of the one domain that has val chips
        when the other has none (said in the log), none when neither has."""
        chips, seed = self.run.chips_dir, self.config.seed
        # (augmented in `train_step`, by step: in the loader, the global generator's draws
        # depended on --workers and were not those of an uninterrupted run after --resume)
        self.train_set = ChipDataset(chips, "train", unpaired=True, seed=seed)
        self.val_missing = [] if self.info.paired else \
            [d for d in DOMAINS if not chip_ids(chips, "val", d)]
        if self.info.paired:
            self.val_set = ChipDataset(chips, "val")
        elif len(self.val_missing) < len(DOMAINS):
            self.val_set = ChipDataset(chips, "val", unpaired=True, draw_targets=False)
        else:
            self.val_set = []
        return self.train_set, self.val_set

    def describe(self) -> list[str]:
        lines = []
        if not self.weights.lambda_identity and self.config.lambda_identity is None:
            lines.append(f"identity loss off: domain A has {self.bands['a']} band(s), B "
                         f"{self.bands['b']}")
        if len(self.val_missing) == 1:
            missing = self.val_missing[0]
            scored = "val_cycle_a (A -> B -> A)" if missing == "target" else \
                "val_cycle_b (B -> A -> B)"
            lines.append(f"warning: the {missing} domain has no val chips: validation scores "
                         f"the other domain's cycle alone, {scored}, and model-best is picked "
                         "by it; re-export with a smaller --split-block or more rasters of that "
                         "domain to score both")
        return lines

    def sync_batch_norm(self) -> None:
        self.nets = {k: distributed.sync_batch_norm(m, self.setup.device)
                     for k, m in self.nets.items()}

    def set_up(self) -> None:
        """The train means (computed, or read back on --resume), networks on the device, the
        reference's Adam pair, each rank's pools and the step."""
        config, device = self.config, self.setup.device
        self.baselines = cyclegan_baselines.for_run(self)
        self.nets = {k: self.setup.prepare(m) for k, m in self.nets.items()}
        opt_g, opt_d = cyclegan_optimizers(*self.nets.values(), lr=config.lr,
                                           betas=(config.beta1, BETA2))
        self.pools = {side: ImagePool(config.pool_size, config.seed * 2 + i + 1_000 * self.run.rank,
                                      self.bands[side])
                      for i, side in enumerate(("b", "a"))}  # fakes of B (for D_A), of A
        wrapped = [maybe_compile(distributed.wrap(m, device), config.compile)
                   for m in self.nets.values()]
        plain = self.run.world > 1
        self.step_fn = CycleGANStep(
            *wrapped, opt_g, opt_d, self.setup, self.pools["b"], self.pools["a"], self.weights,
            config.gan_mode,
            adversary_a=maybe_compile(self.nets["d_a"], config.compile) if plain else None,
            adversary_b=maybe_compile(self.nets["d_b"], config.compile) if plain else None)

    # --- checkpoint ---------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return dict(self.nets)

    def rank_state(self) -> dict[str, Any]:
        return {f"pool_{side}": pool.state_dict() for side, pool in self.pools.items()}

    def check_rank_state(self, state: Any, where: str) -> None:
        if not isinstance(state, dict):
            raise SchemaError(where, "is not a mapping")
        for side, pool in self.pools.items():
            check_pool_state(state.get(f"pool_{side}"), pool.pool_size,
                             f"{where}.pool_{side}", self.bands[side], self.info.chip_size)

    def load_rank_state(self, state: dict[str, Any]) -> None:
        for side, pool in self.pools.items():
            pool.load_state_dict(state[f"pool_{side}"])

    # --- training -----------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        super().begin_epoch(epoch)
        self.train_set.set_epoch(epoch)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        to_device = self.setup.to_device
        batch = augment_batch(batch, self.config.augment, self.config.seed + self.rank, step,
                              UNPAIRED_GROUPS)
        losses = self.step_fn(to_device(batch["source"]), to_device(batch["source_valid"]),
                              to_device(batch["target"]), to_device(batch["target_valid"]))
        return dict(zip(LOSSES, (losses.G_A, losses.G_B, losses.cycle_A, losses.cycle_B,
                                 losses.idt_A, losses.idt_B, losses.D_A, losses.D_B)))

    def postfix(self, losses: dict[str, torch.Tensor]) -> dict[str, str]:
        return {name[5:]: f"{float(losses[name]):.3f}"
                for name in ("loss_G_A", "loss_G_B", "loss_cycle_A", "loss_cycle_B",
                             "loss_D_A", "loss_D_B")}

    # --- validation and model-best ------------------------------------------------------------
    def before_validation(self) -> None:
        distributed.average_running_stats(*self.nets.values())

    @torch.no_grad()
    def validate(self, loader, reduce: Reduce | None) -> dict[str, float]:
        """``val_cycle_a``/``val_cycle_b``: the masked L1 of A -> B -> A and B -> A -> B, and
        ``val_l1`` of A -> B to the paired B, each over the val chips' valid pixels."""
        g_a, g_b = self.nets["g_a"], self.nets["g_b"]
        sums = torch.zeros(3, dtype=torch.float64)  # cycle A, cycle B, A -> B (paired chips)
        counts = torch.zeros(3, dtype=torch.float64)  # their valid pixels
        with evaluating(g_a, g_b):
            for batch in loader:
                real_a, valid_a, real_b, valid_b, pair = (
                    None if v is None else self.setup.to_device(v) for v in sides(batch))
                terms = []  # (index, prediction, truth, validity); a domain without val: none
                live_a, live_b = (None if v is None else _holding(v) for v in (valid_a, valid_b))
                with self.setup.autocast():
                    if live_a is not None and live_a.any():
                        fake_b = masked(g_a(real_a[live_a]), valid_a[live_a])
                        terms.append((0, g_b(fake_b), real_a[live_a], valid_a[live_a]))
                        if pair is not None:  # a paired chip: A -> B against its own B
                            terms.append((2, fake_b, real_b[live_a], pair[live_a]))
                    if live_b is not None and live_b.any():
                        real, valid = real_b[live_b], valid_b[live_b]
                        terms.append((1, g_a(masked(g_b(real), valid)), real, valid))
                for index, pred, truth, valid in terms:
                    count = float(valid.sum())
                    sums[index] += float(masked_l1(pred.float(), truth, valid)) * count
                    counts[index] += count
        packed = torch.cat([sums, counts])
        if reduce is not None:
            packed = reduce(packed.to(self.setup.device)).cpu()
        names = ("val_cycle_a", "val_cycle_b", "val_l1")
        return {name: float(packed[i] / packed[i + 3]) for i, name in enumerate(names)
                if packed[i + 3] > 0}

    def score(self, scores: dict[str, float], losses: dict[str, float]) -> float:
        """Both directions' validation cycle L1 and the A -> B L1 (paired val chips); the
        train cycle losses without val chips."""
        if not scores:
            return losses["loss_cycle_A"] + losses["loss_cycle_B"]
        return sum(scores.values())

    def best_losses(self, losses: dict[str, float]) -> dict[str, float]:
        return {k: losses[k] for k in ("loss_cycle_A", "loss_cycle_B")}

    # --- outputs ------------------------------------------------------------------------------
    def write_model(self, export: ModelExport, path: Path, validation: dict[str, float],
                    progress: dict[str, int]) -> None:
        """The generator of ``export.direction`` with metadata of its input and output domain
        (B -> A: the target side as its source), ``family``, ``direction`` and its baselines
        (the output domain's train mean)."""
        metadata = ModelMetadata.of_training(self.info, self.recorded_options(), progress["epoch"],
                                             progress["step"], validation,
                                             baselines=self.baselines[export.direction])
        metadata = self._on_input_grid(metadata.of_family(self.name, export.direction),
                                       export.direction)
        generator = self.nets["g_a" if export.direction == "a_to_b" else "g_b"]
        save_model(path, generator, self.specs[export.direction], metadata.to_dict(), own=True)

    def _on_input_grid(self, metadata: ModelMetadata, direction: str) -> ModelMetadata:
        """The CRS and pixel size of the direction's input domain (an unpaired export's first
        raster of that domain; a paired folder has one grid): B -> A takes B's scenes."""
        domain = "source" if direction == "a_to_b" else "target"
        first = next((r for r in self.info.rasters if r.get("domain") == domain), None)
        if first is None:
            return metadata
        ground = first.get("ground_pixel_size")
        return dataclasses.replace(metadata, crs=first["crs"],
                                   pixel_size=tuple(map(float, first["pixel_size"])),
                                   ground_pixel_size=tuple(map(float, ground)) if ground else None)

    def sample_batch(self, count: int) -> dict[str, torch.Tensor] | None:
        """The fixed chips samples/ shows: of unpaired chips, each domain's first `count` val
        chips, each once (its train chips where it has no val chip); of paired ones, the first
        val pairs (`Family.sample_batch`)."""
        if self.info.paired:
            return super().sample_batch(count)
        batch = {}
        for domain in DOMAINS:
            dataset = self.val_set if self.val_set and domain not in self.val_missing \
                else self.train_set
            chips = [dataset.domain_chip(domain, i)
                     for i in range(min(count, len(dataset.domain_ids[domain])))]
            batch[domain] = torch.stack([tensor for tensor, _ in chips])
            batch[f"{domain}_valid"] = torch.stack([valid for _, valid in chips])
        return batch

    @torch.no_grad()
    def draw_samples(self, path: Path, batch: dict[str, torch.Tensor]) -> None:
        """A | A -> B | A -> B -> A for each chip, then B | B -> A | B -> A -> B, each row
        blank where its own raster is invalid (paired chips too)."""
        nets = (self.nets["g_a"], self.nets["g_b"])
        rows = []
        real_a, valid_a, real_b, valid_b = (batch[key] for key in (
            "source", "source_valid", "target", "target_valid"))
        with evaluating(*nets):
            for real, valid, there, back in ((real_a, valid_a, *nets),
                                             (real_b, valid_b, *nets[::-1])):
                with self.setup.autocast():
                    fake = there(self.setup.to_device(real))
                    rec = back(fake)
                for r, f, c, v in zip(real, fake.float().cpu(), rec.float().cpu(), valid):
                    rows.append(cycle_row(r.float().numpy(), f.numpy(), c.numpy(),
                                          v[0].numpy()))
        write_rows(path, rows)

    def criterion_without_val(self) -> str:
        return "the train cycle losses"

    def summary(self, best: dict[str, Any]) -> tuple[dict[str, dict[str, float]], str | None]:
        scores = cyclegan_baselines.score_on_pairs(self)
        return scores, cyclegan_baselines.report(self, best, scores)

    def release(self) -> None:
        step_fn = getattr(self, "step_fn", None)
        if step_fn is not None:
            step_fn.g_a = step_fn.g_b = step_fn.d_a = step_fn.d_b = None
            step_fn.adversary_a = step_fn.adversary_b = None


def _holding(valid: torch.Tensor) -> torch.Tensor:
    """Which items of a val batch hold a valid pixel: the other items teach the scores nothing
    (the smaller domain's chips, repeated to the larger one's count, hold none the second time:
    `ChipDataset._unpaired_item`), so they are not run through the generators."""
    return valid.flatten(1).any(1)


def sides(batch: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    """(A, A's validity, B, B's validity, the pair's validity or None) of a batch of paired
    chips (scored where both are valid: the pair's validity for both) or of unpaired ones (each
    its own)."""
    if "valid" in batch:  # B zero where the pair is invalid, as its validation always saw it
        valid = batch["valid"]
        return batch["source"], valid, torch.where(valid, batch["target"], 0), valid, valid
    return (batch.get("source"), batch.get("source_valid"), batch.get("target"),
            batch.get("target_valid"), None)
