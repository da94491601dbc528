"""How much of the EM start's structure below the operators' resolution survives Gaussian laps.

Learns the galaxy prior's Gaussian laps (no diffusion lap) on the default-priors recipe's
fields (HSC + HST ACS F814W, data_recipes/default_priors.py) from one of two starts, and
prints after each lap, per band, the outskirts texture of 256 exact samples (the pixel
standard deviation beyond 1" of the centre over the sample's brightest pixel, in full and
high-pass: benchmarks/prior_shapes.py):

- ``white``: the recipe's default ``N(0, I)``;
- ``smooth``: :func:`galdeblend.learn.smooth_start` on ``--start-fwhm``.

    python benchmarks/em_start.py --start smooth --start-fwhm 0.5 --rank 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from prior_shapes import outskirts_texture

from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.learn import learn, new_priors, smooth_start
from galdeblend.scene import PriorFrame

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_recipes"))
import default_priors as recipe  # noqa: E402


def report(galaxy: GaussianPrior, bands, pixel_scale: float, label: str) -> None:
    x = galaxy.sample(256, seed=0).double().numpy()
    for name, high_pass in (("pixel std", False), ("high-pass std", True)):
        texture = outskirts_texture(x, pixel_scale, high_pass=high_pass)
        print(
            f"{label:<24}{name:<15}" + " ".join(f"{b} {t:.3f}" for b, t in zip(bands, texture)),
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", choices=("white", "smooth"), default="smooth")
    parser.add_argument("--start-fwhm", type=float, default=0.5, help="arcsec (smooth start)")
    parser.add_argument("--rank", type=int, default=16, help="rank of the Gaussian laps")
    parser.add_argument("--laps", type=int, default=3)
    parser.add_argument("--fields", type=int, default=32)
    parser.add_argument("--blank", type=int, default=4)
    args = parser.parse_args(argv)

    frame = PriorFrame((len(recipe.BANDS), 40, 40), 0.06, recipe.BANDS, 0.07)
    fields = recipe.simulate_fields(args.fields, seed=0, blank=False, stamp_arcsec=4.0)
    blank = recipe.simulate_fields(args.blank, seed=100_000, blank=True, stamp_arcsec=4.0)
    priors = new_priors(frame, channels=(16, 32, 64), attention_levels=(2,), seed=0)
    if args.start == "smooth":
        start = smooth_start(priors, args.start_fwhm)
    else:
        schedule = priors["galaxy"].schedule
        start = GaussianPrior(
            torch.zeros(frame.shape),
            1.0,
            sigma_min=schedule.sigma_min,
            sigma_max=schedule.sigma_max,
        )
    print(f"{args.start} start, Gaussian laps of rank {args.rank}, {args.fields} fields")
    report(start, frame.bands, frame.pixel_scale, "start")
    t0 = time.time()
    for lap in range(1, args.laps + 1):
        priors = learn(
            fields,
            blank=blank,
            priors=priors,
            laps=0,
            gaussian_laps=1,
            gaussian_rank=args.rank,
            start=start if lap == 1 else None,
            sampling={"steps": 16, "sampler": "ddim", "cg_iterations": 1, "batch_size": 64},
            seed=lap,
            device="cpu",
            progress=False,
        )
        report(
            priors["galaxy"],
            frame.bands,
            frame.pixel_scale,
            f"lap {lap} ({time.time() - t0:.0f} s)",
        )


if __name__ == "__main__":
    main()
