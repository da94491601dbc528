"""Training and posterior-sampling speed against the floor set by the device's peak rate.

For each configuration it prints, on whatever device is present:

- the peak rate of the device, measured in the same run by large fp32 and bf16 matrix
  products (TFLOP/s);
- denoiser training throughput (images/s) at several batch sizes, the FLOPs per image
  of a training step (forward and backward, counted by ``torch.utils.flop_counter``),
  the floor (FLOPs / peak) and the achieved fraction of it, and the peak memory;
- posterior sampling throughput (posterior samples/s) with a galaxy and a sky source, the
  FLOPs per posterior sample, its floor and the achieved fraction, and the peak memory.

Configurations:

- ``default``: 64x64, one band, galaxy + sky, the default U-Net (channels 32-64-128,
  attention at the lowest level), 64 predictor-corrector steps, 1 CG iteration; the
  galaxy is seen through a per-observation PSF convolution, the sky (8x8) through
  bilinear interpolation;
- ``paper``: the galaxy configuration of DDPRISM (arXiv:2510.05205): 128x128, U-Net
  channels 64-128-256-256-512 with attention at the three lowest levels, 64 steps
  (GPU only).

Each is measured plainly (fp32) and, with ``--fast`` variants, with the networks in
bf16 autocast, channels-last and ``torch.compile`` (see
:meth:`galdeblend.engine.DiffusionPrior.accelerate`).

    python benchmarks/speed.py                     # everything the device allows
    python benchmarks/speed.py --configs default --batch-sizes 4 16
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from galdeblend.allocator import retain_freed_memory
from galdeblend.diffusion.training import train_denoiser
from galdeblend.engine import DiffusionPrior, GaussianPrior, UNet, sample_posterior
from galdeblend.operators import Convolve, Interpolate

SKY_GRID = 8
PSF_SIDE = 25
PAPER_SECONDS_PER_SAMPLE = 1.5  # DDPRISM's galaxy posterior sample on an H100 (its Sec. 5)


@dataclass(frozen=True)
class Config:
    size: int
    channels: tuple[int, ...]
    attention_levels: tuple[int, ...]
    steps: int = 64
    cg_iterations: int = 1


CONFIGS = {
    "default": Config(64, (32, 64, 128), (2,)),
    "paper": Config(128, (64, 128, 256, 256, 512), (2, 3, 4)),
}
VARIANTS = {
    "fp32": {},
    "bf16": dict(bf16=True),
    "bf16+channels-last+compile": dict(bf16=True, channels_last=True, compile="max-autotune"),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int,
    warmup: Callable[[], object] | None = None,
) -> float:
    """Seconds per call of ``fn``, after one call of ``warmup`` (default ``fn``)."""
    (warmup or fn)()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def peak_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matrix product in ``dtype``."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, repeats=10 if device.type == "cuda" else 3)
    return 2 * n**3 / seconds


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated GPU memory, or the peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB else
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products, convolutions and attention run by ``fn``.

    Uses the counting mode of :class:`torch.utils.flop_counter.FlopCounterMode` without
    its module tracker, whose hooks do not support ``torch.autograd.grad`` (used by the
    posterior's vector-Jacobian products). FFTs are not counted.
    """
    counter = FlopCounterMode(display=False)
    with _FlopCounterMode(counter):
        fn()
    return counter.get_total_flops()


def galaxy_prior(config: Config, device: torch.device, variant: dict) -> DiffusionPrior:
    torch.manual_seed(0)
    backbone = UNet(1, channels=config.channels, attention_levels=config.attention_levels)
    prior = DiffusionPrior(
        backbone, shape=(1, config.size, config.size), sigma_min=1e-2, sigma_max=30.0
    ).to(device)
    return prior.eval().requires_grad_(False).accelerate(**variant)


def posterior_problem(config: Config, batch: int, device: torch.device):
    """``batch`` observations of galaxy (per-item PSF) + sky (interpolated 8x8) + noise."""
    g = torch.Generator().manual_seed(0)
    sigma = (2.0 + torch.rand(batch, 1, 1, 1, generator=g)) / 2.355  # FWHM 2-3 pixels
    r2 = (torch.arange(PSF_SIDE) - PSF_SIDE // 2).square()
    kernels = torch.exp(-(r2[:, None] + r2[None, :]) / (2 * sigma**2))
    kernels = kernels / kernels.sum(dim=(-2, -1), keepdim=True)  # (batch, 1, side, side)
    ops = [
        Convolve(kernels).to(device),
        Interpolate((SKY_GRID, SKY_GRID), (config.size, config.size)).to(device),
    ]
    y = torch.randn(batch, 1, config.size, config.size, generator=g).to(device)
    return y, ops


def training_row(config: Config, device: torch.device, variant: dict, batch: int) -> tuple:
    """``(batch, images/s, FLOPs per image, peak GB)`` of denoiser training."""
    prior = galaxy_prior(config, device, variant)
    data = torch.randn(batch * 4, 1, config.size, config.size, device=device)
    denoiser = prior.denoiser.requires_grad_(True).train()
    sigma = torch.ones(batch, device=device)
    flops = counted_flops(lambda: denoiser.loss(data[:batch], sigma).mean().backward()) / batch
    steps = 20 if device.type == "cuda" else 4

    def train(n: int):
        train_denoiser(denoiser, prior.schedule, data, steps=n, batch_size=batch, progress=False)

    reset_peak_memory(device)
    seconds = timed(lambda: train(steps), device, repeats=1, warmup=lambda: train(2)) / steps
    return batch, batch / seconds, flops, peak_memory_gb(device)


def sampling_row(config: Config, device: torch.device, variant: dict, batch: int) -> tuple:
    """``(batch, posterior samples/s, FLOPs per sample, peak GB)`` of posterior sampling."""
    prior = galaxy_prior(config, device, variant)
    sky = GaussianPrior(torch.zeros(1, SKY_GRID, SKY_GRID), 1.0, sigma_min=1e-2, sigma_max=30.0)
    y, ops = posterior_problem(config, batch, device)

    def run(steps: int):
        return sample_posterior(
            [prior, sky.to(device)],
            y,
            ops,
            0.01,
            steps=steps,
            cg_iterations=config.cg_iterations,
            batch_size=batch,
        )

    # FLOPs grow linearly with the steps: extrapolate the count from 2 and 4 steps.
    f2, f4 = counted_flops(lambda: run(2)), counted_flops(lambda: run(4))
    flops = (f2 + (f4 - f2) / 2 * (config.steps - 2)) / batch
    reset_peak_memory(device)
    seconds = timed(lambda: run(config.steps), device, repeats=1, warmup=lambda: run(2))
    return batch, batch / seconds, flops, peak_memory_gb(device)


def report(title: str, rows, peak: float, unit: str) -> None:
    print(f"  {title}")
    print(
        f"    {'batch':>6} {unit:>14} {'GFLOP/item':>11} {'floor ms':>9} {'achieved':>9} "
        f"{'peak GB':>8}"
    )
    for batch, rate, flops, memory in rows:
        floor = flops / peak
        achieved = floor * rate
        print(
            f"    {batch:>6} {rate:>14.3f} {flops / 1e9:>11.2f} {1e3 * floor:>9.2f} "
            f"{100 * achieved:>8.1f}% {memory:>8.2f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--batch-sizes", nargs="+", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    configs = args.configs or (list(CONFIGS) if gpu else ["default"])
    variants = args.variants or (list(VARIANTS) if gpu else ["fp32", "bf16"])
    batch_sizes = args.batch_sizes or ([16, 64, 256] if gpu else [4, 16])
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; python {sys.version.split()[0]}")
    peaks = {dtype: peak_rate(device, dtype) for dtype in (torch.float32, torch.bfloat16)}
    print("peak: " + ", ".join(f"{str(d)[6:]} {r / 1e12:.3f} TFLOP/s" for d, r in peaks.items()))
    for config_name in configs:
        config = CONFIGS[config_name]
        for variant_name in variants:
            variant = VARIANTS[variant_name]
            peak = peaks[torch.bfloat16 if variant.get("bf16") else torch.float32]
            print(
                f"{config_name} ({config.size}x{config.size}, channels {config.channels}), "
                f"{variant_name}, floor at {peak / 1e12:.3f} TFLOP/s:"
            )
            rows = [training_row(config, device, variant, b) for b in batch_sizes]
            report("training", rows, peak, "images/s")
            rows = [sampling_row(config, device, variant, b) for b in batch_sizes]
            report(
                f"posterior sampling ({config.steps} PC steps, galaxy + sky)",
                rows,
                peak,
                "samples/s",
            )
            best = max(rate for _, rate, _, _ in rows)
            print(
                f"    fastest: {1 / best:.3f} s per posterior sample "
                f"({PAPER_SECONDS_PER_SAMPLE * best:.2g}x as fast as the paper's "
                f"{PAPER_SECONDS_PER_SAMPLE} s on an H100)"
            )


if __name__ == "__main__":
    main()
