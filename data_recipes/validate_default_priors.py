"""Validate a prior set on held-out simulated HSC + HST fields and record the figures.

Each held-out field (seeds disjoint from the training recipe's) is deblended with the
priors; every true galaxy is matched to the nearest galaxy instance (within 0.4") and its
posterior flux per band is compared with the true flux of its noiseless image. The
median fractional flux error, the fraction of true fluxes inside the 68% and 95%
posterior intervals (galdeblend.metrics.inside_intervals, from the probability integral
transform), the detection completeness and the residual chi^2 per pixel are printed and
written into ``priors.json`` under ``metadata.validation``.

    python data_recipes/validate_default_priors.py --priors galdeblend/data/priors/default
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord

from galdeblend.allocator import retain_freed_memory
from galdeblend.deblend import deblend
from galdeblend.metrics import chi2_per_pixel, inside_intervals, summarize
from galdeblend.priors import Priors
from galdeblend.scene import detection_defaults
from galdeblend.simulate import simulate_scene

SURVEY_OF_BAND = {"g": "hsc", "r": "hsc", "i": "hsc", "z": "hsc", "y": "hsc", "F814W": "hst"}


def main() -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--priors", default="galdeblend/data/priors/default")
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument(
        "--cg-iterations",
        type=int,
        default=inspect.signature(deblend).parameters["cg_iterations"].default,
        help="CG iterations per posterior step (default: deblend's)",
    )
    parser.add_argument(
        "--amplitude-width",
        type=float,
        default=inspect.signature(deblend).parameters["amplitude_width"].default,
        help="prior width of the amplitude step (default: deblend's; 0: no amplitude step)",
    )
    parser.add_argument("--stamp-arcsec", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1_000_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    priors = Priors.load(args.priors)
    bands = priors.galaxy_frame.bands
    errors = {b: [] for b in bands}
    inside = {0.68: [], 0.95: []}
    chi2, found, total = [], 0, 0
    start = time.time()
    for i in range(args.fields):
        scene = simulate_scene(("hsc", "hst"), seed=args.seed + i, stamp_arcsec=args.stamp_arcsec)
        result = deblend(
            scene.observations(),
            priors,
            n_samples=args.samples,
            steps=args.steps,
            cg_iterations=args.cg_iterations,
            amplitude_width=args.amplitude_width,
            seed=i,
            progress=False,
            log_prob_steps=0,
        )
        chi2 += [
            chi2_per_pixel(o.data, m, o.variance, o.mask)
            for o, m in zip(result.observations, result.models)
        ]
        galaxies = result.galaxies
        total += len(scene.galaxies)
        if not galaxies:
            continue
        centers = SkyCoord([g.center for g in galaxies])
        for k, (ra, dec) in enumerate(scene.sky_coords):
            sep = centers.separation(SkyCoord(ra, dec, unit="deg")).arcsec
            j = int(np.argmin(sep))
            if sep[j] > 0.4:
                continue
            found += 1
            fluxes = galaxies[j].samples.sum(axis=(2, 3))  # (n_samples, C)
            for c, band in enumerate(bands):
                frame = scene.surveys[SURVEY_OF_BAND[band]]
                true = frame.galaxies[k, frame.bands.index(band)].sum()
                errors[band].append((fluxes[:, c].mean() - true) / true)
                within = inside_intervals(
                    fluxes[:, c], np.asarray(true), tuple(inside), seed=len(errors[band])
                )
                for level, hit in zip(inside, within, strict=True):
                    inside[level].append(bool(hit))
    validation = {
        "held_out_fields": args.fields,
        "seed": args.seed,
        "samples": args.samples,
        "steps": args.steps,
        "cg_iterations": args.cg_iterations,
        "amplitude_width": args.amplitude_width,
        "detection": detection_defaults(),
        "completeness": found / max(total, 1),
        "median_abs_flux_error": {
            b: float(np.median(np.abs(e))) if e else None for b, e in errors.items()
        },
        "flux_error_68": {
            b: [summarize(e).low, summarize(e).high] if e else None for b, e in errors.items()
        },
        "flux_coverage": {str(k): float(np.mean(v)) if v else None for k, v in inside.items()},
        "chi2_per_pixel_median": float(np.median(chi2)),
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(validation, indent=2))
    path = Path(args.priors) / "priors.json"
    header = json.loads(path.read_text())
    header["metadata"]["validation"] = validation
    path.write_text(json.dumps(header, indent=2))


if __name__ == "__main__":
    main()
