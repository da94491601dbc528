"""Galaxy-prior samples against the true galaxies of simulated blends: shapes and texture.

For the blends of a folder written by ``galdeblend simulate`` and a prior set, prints, for
the true galaxies (:func:`galdeblend.validate.truth_stamps`: noiseless, resampled onto the
prior's frame with its PSF) and for unconditional samples of the galaxy prior, the 10th,
25th, 50th, 75th and 90th percentiles of

1. the adaptive-moment ellipticity ``|e|`` and size ``sigma`` (galsim.hsm,
   :func:`galdeblend.metrics.shape_moments`) in band ``--band``;
2. the fraction of the stamp's summed light beyond 0.3", 0.6" and 0.9" of its centre in that
   band;

and per band the median over galaxies of the standard deviation of the pixels beyond 1" of
the centre, as a fraction of the galaxy's brightest pixel: the texture of the stamp's
outskirts, which is nil for the true galaxies; the same after subtracting the stamp smoothed
by a Gaussian of 2 pixels standard deviation (high-pass), which keeps only the structure on
the scale of a few pixels.

With ``--seeing FWHM`` (arcsec) both sets are first convolved with a Gaussian that takes the
prior frame's PSF to that FWHM (for example 0.61", HSC's i band), so the figures are those of
the galaxies as that survey sees them: what its data constrain.

    python benchmarks/prior_shapes.py sims/ --prior galdeblend/data/priors/default [--seeing 0.61]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from galdeblend.diffusion.samplers import sample_prior
from galdeblend.metrics import shape_moments
from galdeblend.priors import Priors
from galdeblend.simulate import read_truth
from galdeblend.validate import PRIOR_STEPS, truth_stamps, widen_psf

PERCENTILES = (10, 25, 50, 75, 90)
RADII = (0.3, 0.6, 0.9)  # arcsec
OUTSKIRTS = 1.0  # arcsec
HIGH_PASS = 2.0  # pixels


def radius(shape: tuple[int, ...], pixel_scale: float) -> np.ndarray:
    """Distance in arcsec of each pixel of the last two axes of ``shape`` from the centre."""
    H, W = shape[-2:]
    yy, xx = np.mgrid[:H, :W]
    return np.hypot(yy - (H - 1) / 2, xx - (W - 1) / 2) * pixel_scale


def outskirts_texture(
    stamps: np.ndarray, pixel_scale: float, *, high_pass: bool = False
) -> np.ndarray:
    """Per band ``(C,)``: the median over stamps ``(N, C, H, W)`` of the standard deviation of
    the pixels beyond ``OUTSKIRTS`` of the centre over the stamp's brightest pixel; with
    ``high_pass``, of the stamp minus its Gaussian smoothing by ``HIGH_PASS`` pixels."""
    r = radius(stamps.shape, pixel_scale)
    peak = stamps.max((-2, -1))
    if high_pass:
        stamps = stamps - gaussian_filter(stamps, (0, 0, HIGH_PASS, HIGH_PASS))
    return np.median(stamps[..., r > OUTSKIRTS].std(-1) / peak, axis=0)


def see(stamps: np.ndarray, fwhm: float, frame_fwhm: float, pixel_scale: float) -> np.ndarray:
    """Stamps ``(N, C, H, W)`` at a PSF of ``frame_fwhm`` convolved to ``fwhm`` (arcsec)
    (:func:`galdeblend.validate.widen_psf`)."""
    if fwhm <= frame_fwhm:
        raise SystemExit(f"--seeing {fwhm} must exceed the prior frame's PSF FWHM {frame_fwhm}")
    return widen_psf(stamps, frame_fwhm, fwhm, pixel_scale)


def describe(stamps: np.ndarray, bands: list[str], band: str, pixel_scale: float) -> list[str]:
    """Lines of figures for galaxy stamps ``(N, C, H, W)``, centred, in ``bands``."""
    r = radius(stamps.shape, pixel_scale)
    image = stamps[:, bands.index(band)]
    moments = shape_moments(image, pixel_scale=pixel_scale)
    total = image.sum((-2, -1))
    rows = {
        "|e|": np.hypot(moments.e1, moments.e2)[moments.ok],
        'sigma (")': moments.sigma[moments.ok],
        **{f'light beyond {R}"': image[:, r > R].sum(-1) / total for R in RADII},
    }
    lines = [
        f"  {name:<20}" + "".join(f"{v:9.3f}" for v in np.percentile(values, PERCENTILES))
        for name, values in rows.items()
    ]
    for label, high_pass in (("pixel std", False), ("high-pass std", True)):
        texture = outskirts_texture(stamps, pixel_scale, high_pass=high_pass)
        lines.append(
            f'  {label} beyond {OUTSKIRTS}" / peak: '
            + ", ".join(f"{b} {t:.4f}" for b, t in zip(bands, texture, strict=True))
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("simdir", type=Path)
    parser.add_argument("--prior", required=True, help="prior set directory")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=PRIOR_STEPS)
    parser.add_argument("--band", default="i", help="band of the shapes and light profiles")
    parser.add_argument(
        "--seeing", type=float, default=0.0, help="convolve both sets to this PSF FWHM (arcsec)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    priors = Priors.load(args.prior)
    frame = priors.galaxy_frame
    manifest = json.loads((args.simdir / "manifest.json").read_text())
    truths = [
        read_truth(args.simdir / scene["truth"])
        for scene in manifest["scenes"]
        if scene["kind"] == "blend"
    ]
    samples = sample_prior(priors["galaxy"], args.samples, steps=args.steps, seed=args.seed)
    sets = {
        f"true galaxies ({sum(len(t.galaxies) for t in truths)})": truth_stamps(truths, frame),
        f"prior samples ({args.samples}, {args.steps} steps)": samples.double().numpy(),
    }
    if args.seeing:
        sets = {
            name: see(stamps, args.seeing, frame.psf_fwhm, frame.pixel_scale)
            for name, stamps in sets.items()
        }
    bands = list(frame.bands)
    seeing = f', seen at {args.seeing}" FWHM' if args.seeing else ""
    print(f"band {args.band}{seeing}; percentiles " + ", ".join(map(str, PERCENTILES)))
    for name, stamps in sets.items():
        print(name)
        print("\n".join(describe(stamps, bands, args.band, frame.pixel_scale)))


if __name__ == "__main__":
    main()
