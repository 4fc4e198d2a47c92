"""Benchmark: training images per second of geopix2pix's train step vs a plain PyTorch step.

With ``--model pix2pix`` (default) both train the paper's default model (unet_256 G + 70x70
PatchGAN D, 3 -> 3 bands, batch norm) on random 256x256 chips, measured in the same run on the
current device:
- reference: a minimal fp32 Pix2Pix step (no AMP, contiguous layout, plain L1 and BCE);
- geopix2pix: `geopix2pix.training.step.Pix2PixStep` with the device setup `train` uses
  (bf16/fp16 autocast, channels_last, cudnn benchmark on CUDA; masked losses everywhere).
With ``--model cyclegan`` both train CycleGAN's defaults (two resnet_9blocks G, two 70x70
PatchGAN D, instance norm, 3 -> 3 bands so with identity loss, pools of 50): the reference's
``optimize_parameters`` written plainly (`reference_cyclegan_fn`, fp32) against
`geopix2pix.training.cyclegan_step.CycleGANStep`; an "image" is one A and one B chip.
Prints images/s for each batch size, the ratio to the reference and, on a GPU with pix2pix, the
achieved model FLOP/s (one 256x256 G+D train step is about 87 GFLOP per image).

    python tools/bench_train.py                       # CPU: about two minutes
    python tools/bench_train.py --device cuda --steps 50 --compile
    python tools/bench_train.py --model cyclegan --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import itertools
import random
import time

import torch
from torch import nn

from geopix2pix.models import GeneratorSpec, build_discriminator, build_generator
from geopix2pix.models.resnet_generator import RESNET_DEFAULTS
from geopix2pix.training.cyclegan_step import CycleGANStep, cyclegan_optimizers
from geopix2pix.training.device import DeviceSetup, maybe_compile, resolve_device
from geopix2pix.training.image_pool import ImagePool
from geopix2pix.training.step import Pix2PixStep

GFLOP_PER_IMAGE = 87.0


def _networks(chip: int, ngf: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    generator = build_generator(GeneratorSpec("unet", 3, 3, chip, ngf=ngf))
    return generator, build_discriminator(6, ngf)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_step_fn(device: torch.device, chip: int, ngf: int):
    """A minimal plain-PyTorch fp32 Pix2Pix train step."""
    gen, disc = (m.to(device) for m in _networks(chip, ngf))
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce, l1 = nn.BCEWithLogitsLoss(), nn.L1Loss()

    def step(source, target, valid):
        fake = gen(source)
        for p in disc.parameters():
            p.requires_grad_(True)
        opt_d.zero_grad()
        real_logits = disc(torch.cat([source, target], 1))
        fake_logits = disc(torch.cat([source, fake.detach()], 1))
        loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits))
                        + bce(fake_logits, torch.zeros_like(fake_logits)))
        loss_d.backward()
        opt_d.step()
        for p in disc.parameters():
            p.requires_grad_(False)
        opt_g.zero_grad()
        logits = disc(torch.cat([source, fake], 1))
        loss_g = bce(logits, torch.ones_like(logits)) + 100 * l1(fake, target)
        loss_g.backward()
        opt_g.step()

    return step, (lambda t: t.to(device))


def ours_step_fn(setup: DeviceSetup, chip: int, ngf: int, compile_: bool):
    gen, disc = (setup.prepare(m) for m in _networks(chip, ngf))
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step = Pix2PixStep(maybe_compile(gen, compile_), maybe_compile(disc, compile_), opt_g, opt_d,
                       setup, "vanilla", 100.0)
    return step, setup.to_device


def _cyclegan_networks(chip: int, ngf: int, seed: int = 0) -> list[nn.Module]:
    """G_A, G_B, D_A, D_B of CycleGAN's defaults, 3 -> 3 bands."""
    torch.manual_seed(seed)
    spec = GeneratorSpec("resnet_9blocks", 3, 3, chip, ngf=ngf, **RESNET_DEFAULTS)
    return [build_generator(spec), build_generator(spec),
            build_discriminator(3, ngf, 3, "instance"), build_discriminator(3, ngf, 3, "instance")]


class ReferencePool:
    """The reference's ImagePool (util/image_pool.py), Python's global RNG and all."""

    def __init__(self, size: int = 50) -> None:
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image)
            elif random.uniform(0, 1) > 0.5:
                index = random.randint(0, self.size - 1)
                self.images[index], image = image, self.images[index].clone()
            out.append(image)
        return torch.cat(out, 0)


def reference_cyclegan_fn(device: torch.device, chip: int, ngf: int):
    """The reference's CycleGANModel.optimize_parameters, plain fp32 (LSGAN, lambdas 10,
    identity 0.5)."""
    g_a, g_b, d_a, d_b = (m.to(device) for m in _cyclegan_networks(chip, ngf))
    opt_g = torch.optim.Adam(itertools.chain(g_a.parameters(), g_b.parameters()), lr=2e-4,
                             betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(itertools.chain(d_a.parameters(), d_b.parameters()), lr=2e-4,
                             betas=(0.5, 0.999))
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    pool_a, pool_b = ReferencePool(), ReferencePool()

    def gan(logits, real):
        return mse(logits, torch.full_like(logits, 1.0 if real else 0.0))

    def d_basic(disc, real, fake):
        loss = 0.5 * (gan(disc(real), True) + gan(disc(fake.detach()), False))
        loss.backward()

    def step(real_a, real_b, valid):
        fake_b, fake_a = g_a(real_a), g_b(real_b)
        rec_a, rec_b = g_b(fake_b), g_a(fake_a)
        for p in itertools.chain(d_a.parameters(), d_b.parameters()):
            p.requires_grad_(False)
        opt_g.zero_grad()
        loss_idt = l1(g_a(real_b), real_b) * 10 * 0.5 + l1(g_b(real_a), real_a) * 10 * 0.5
        loss_g = (gan(d_a(fake_b), True) + gan(d_b(fake_a), True) + l1(rec_a, real_a) * 10
                  + l1(rec_b, real_b) * 10 + loss_idt)
        loss_g.backward()
        opt_g.step()
        for p in itertools.chain(d_a.parameters(), d_b.parameters()):
            p.requires_grad_(True)
        opt_d.zero_grad()
        d_basic(d_a, real_b, pool_b.query(fake_b))
        d_basic(d_b, real_a, pool_a.query(fake_a))
        opt_d.step()

    return step, (lambda t: t.to(device))


def ours_cyclegan_fn(setup: DeviceSetup, chip: int, ngf: int, compile_: bool):
    g_a, g_b, d_a, d_b = (setup.prepare(m) for m in _cyclegan_networks(chip, ngf))
    opt_g, opt_d = cyclegan_optimizers(g_a, g_b, d_a, d_b)
    g_a, g_b, d_a, d_b = (maybe_compile(m, compile_) for m in (g_a, g_b, d_a, d_b))
    step = CycleGANStep(g_a, g_b, d_a, d_b, opt_g, opt_d, setup, ImagePool(seed=1),
                        ImagePool(seed=2))
    return (lambda real_a, real_b, valid: step(real_a, valid, real_b, valid)), setup.to_device


STEPS = {"pix2pix": (reference_step_fn, ours_step_fn),
         "cyclegan": (reference_cyclegan_fn, ours_cyclegan_fn)}


def measure(step, to_device, device, batch: int, chip: int, steps: int, warmup: int) -> float:
    """Images per second over ``steps`` timed steps after ``warmup`` untimed ones."""
    torch.manual_seed(1)
    source = to_device(torch.rand(batch, 3, chip, chip) * 2 - 1)
    target = to_device(torch.rand(batch, 3, chip, chip) * 2 - 1)
    valid = to_device(torch.ones(batch, 1, chip, chip, dtype=torch.bool))
    for _ in range(warmup):
        step(source, target, valid)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(source, target, valid)
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pix2pix", choices=sorted(STEPS))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated (default 1,8)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per measurement (default: 3 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default: 1 on CPU, 10 on CUDA)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating measurements of each step; the best counts")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--no-amp", action="store_true", help="our step in fp32 too")
    parser.add_argument("--compile", action="store_true", help="torch.compile our G and D")
    args = parser.parse_args()

    setup = resolve_device(args.device, amp=not args.no_amp)
    device = setup.device
    cuda = setup.is_cuda
    steps = args.steps or (30 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    print(f"{args.model} on device: {setup.describe()}; torch {torch.__version__}; threads "
          f"{torch.get_num_threads()}; chip {args.chip}, ngf {args.ngf}, {steps} timed steps")
    reference_fn, our_fn = STEPS[args.model]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        ref_fn = reference_fn(device, args.chip, args.ngf)
        ours_fn = our_fn(setup, args.chip, args.ngf, args.compile)
        ref = ours = 0.0
        for _ in range(args.rounds):  # alternate, keep the best: fair on a shared machine
            ref = max(ref, measure(*ref_fn, device, batch, args.chip, steps, warmup))
            ours = max(ours, measure(*ours_fn, device, batch, args.chip, steps, warmup))
        line = (f"batch {batch}: reference fp32 {ref:8.2f} img/s | geopix2pix {ours:8.2f} img/s"
                f" | ratio {ours / ref:5.2f}x")
        if cuda and args.model == "pix2pix":
            scale = (args.chip / 256) ** 2 * (args.ngf / 64) ** 2
            flops = GFLOP_PER_IMAGE * scale
            line += (f" | model TFLOP/s: reference {ref * flops / 1e3:6.1f}, "
                     f"geopix2pix {ours * flops / 1e3:6.1f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
