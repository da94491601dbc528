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

Each is measured plainly (fp32) and, with faster variants, with the networks in bf16
autocast, channels-last and ``torch.compile`` (``--compile-mode``; see
:meth:`galdeblend.engine.DiffusionPrior.accelerate`). The FLOPs are counted once per
configuration, on the plain fp32 networks; "first s" is the first call, which holds any
compilation.

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
    "bf16+channels-last+compile": dict(bf16=True, channels_last=True, compile="default"),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int,
    warmup: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """``(seconds per call of fn, seconds of the first call)``.

    The first call is ``warmup`` (default ``fn``); it holds any compilation.
    """
    start = time.perf_counter()
    (warmup or fn)()
    synchronize(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats, first


def peak_rate(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matrix product in ``dtype``."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds, _ = timed(lambda: a @ b, device, repeats=10 if device.type == "cuda" else 3)
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


def training_step(config: Config, device: torch.device, variant: dict, batch: int):
    """``train(n)``: ``n`` denoiser training steps of ``batch`` images."""
    prior = galaxy_prior(config, device, variant)
    data = torch.randn(batch * 4, 1, config.size, config.size, device=device)
    denoiser = prior.denoiser.requires_grad_(True).train()

    def train(n: int):
        train_denoiser(denoiser, prior.schedule, data, steps=n, batch_size=batch, progress=False)

    return train


def posterior_sampling(config: Config, device: torch.device, variant: dict, batch: int):
    """``run(steps)``: one posterior sample of ``batch`` galaxy + sky observations."""
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

    return run


def flops_per_item(config: Config, device: torch.device) -> tuple[float, float]:
    """FLOPs of one training image and of one posterior sample (``steps`` steps).

    Counted on the plain fp32 networks at batch 2: the count depends neither on the batch
    nor on the fast paths. The sampling count grows linearly with the steps and is
    extrapolated from 2 and 4 steps.
    """
    batch = 2
    prior = galaxy_prior(config, device, {})
    denoiser = prior.denoiser.requires_grad_(True).train()
    x = torch.randn(batch, 1, config.size, config.size, device=device)
    sigma = torch.ones(batch, device=device)
    train = counted_flops(lambda: denoiser.loss(x, sigma).mean().backward()) / batch
    run = posterior_sampling(config, device, {}, batch)
    f2, f4 = counted_flops(lambda: run(2)), counted_flops(lambda: run(4))
    sample = (f2 + (f4 - f2) / 2 * (config.steps - 2)) / batch
    return train, sample


def measure(start: Callable[[], object], run: Callable[[], object], items: int, device) -> tuple:
    """``(items/s of run, first-call s, peak GB)``; ``None`` for the rate if out of memory."""
    reset_peak_memory(device)
    try:
        seconds, first = timed(run, device, repeats=1, warmup=start)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None, None, peak_memory_gb(device)
    return items / seconds, first, peak_memory_gb(device)


def training_row(config: Config, device: torch.device, variant: dict, batch: int) -> tuple:
    """``(batch, images/s, first-call s, peak GB)`` of denoiser training."""
    train = training_step(config, device, variant, batch)
    steps = 20 if device.type == "cuda" else 4
    return (batch, *measure(lambda: train(2), lambda: train(steps), batch * steps, device))


def sampling_row(config: Config, device: torch.device, variant: dict, batch: int) -> tuple:
    """``(batch, posterior samples/s, first-call s, peak GB)`` of posterior sampling."""
    run = posterior_sampling(config, device, variant, batch)
    return (batch, *measure(lambda: run(2), lambda: run(config.steps), batch, device))


def report(title: str, rows, flops: float, peak: float, unit: str) -> None:
    floor = flops / peak
    print(f"  {title}: {flops / 1e9:.2f} GFLOP per item, floor {1e3 * floor:.2f} ms per item")
    print(f"    {'batch':>6} {unit:>14} {'achieved':>9} {'first s':>8} {'peak GB':>8}")
    for batch, rate, first, memory in rows:
        if rate is None:
            print(f"    {batch:>6} {'out of memory':>14} {'':>9} {'':>8} {memory:>8.2f}")
            continue
        print(
            f"    {batch:>6} {rate:>14.3f} {100 * floor * rate:>8.1f}% {first:>8.1f} {memory:>8.2f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--batch-sizes", nargs="+", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile-mode",
        help="torch.compile mode of the compiled variant (default: default; e.g. "
        "reduce-overhead for CUDA graphs, max-autotune: minutes of tuning per shape)",
    )
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
        train_flops, sample_flops = flops_per_item(config, device)
        for variant_name in variants:
            variant = dict(VARIANTS[variant_name])
            if "compile" in variant and args.compile_mode:
                variant["compile"] = args.compile_mode
            peak = peaks[torch.bfloat16 if variant.get("bf16") else torch.float32]
            print(
                f"{config_name} ({config.size}x{config.size}, channels {config.channels}), "
                f"{variant_name}, floor at {peak / 1e12:.3f} TFLOP/s:"
            )
            rows = [training_row(config, device, variant, b) for b in batch_sizes]
            report("training", rows, train_flops, peak, "images/s")
            rows = [sampling_row(config, device, variant, b) for b in batch_sizes]
            title = f"posterior sampling ({config.steps} PC steps, galaxy + sky)"
            report(title, rows, sample_flops, peak, "samples/s")
            best = max((rate for _, rate, _, _ in rows if rate is not None), default=None)
            if best is not None:
                print(
                    f"    fastest: {1 / best:.3f} s per posterior sample "
                    f"({PAPER_SECONDS_PER_SAMPLE * best:.2g}x as fast as the paper's "
                    f"{PAPER_SECONDS_PER_SAMPLE} s on an H100)"
                )


if __name__ == "__main__":
    main()
