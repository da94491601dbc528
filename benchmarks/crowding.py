"""Crowded blends against simulated truth: galaxy flux scales, and coverage by neighbour light.

For the blends of a folder written by ``galdeblend simulate`` (HSC + HST cutouts with truth
files), prints

1. the flux scale of every detected galaxy matched to a true one within 0.4"
   (:func:`galdeblend.scene.place_instances`: the brightest data pixel within 0.5"), as a
   ratio to the same rule applied to the data with the other galaxies' true images
   subtracted, per band, median and 84th percentile over the galaxies of blends of one or
   two and of three or more galaxies: how much the neighbours' light inflates the scale;
2. given the report folder of ``galdeblend validate`` on those blends (``--report``), the
   aperture flux coverage and median absolute flux error in units of the aperture noise of
   galdeblend's matched galaxies, split by the light of the other galaxies inside each
   galaxy's aperture (true model-frame images, band ``--band``), and by how much of it lies
   outside those galaxies' own prior stamps.

    python benchmarks/crowding.py sims/ --report report/
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs.utils import proj_plane_pixel_scales

from galdeblend.io import read_cutouts
from galdeblend.priors import Priors
from galdeblend.scene import detect_sources, place_instances
from galdeblend.simulate import read_truth

SURVEYS = ("hsc", "hst")


def galaxy_scales(observations, frame, positions) -> np.ndarray:
    """``(K, C)`` flux scales of galaxies at ``positions``, as ``galdeblend run`` sets them."""
    instances = place_instances(observations, frame, positions=positions)
    return np.array([i.scale for i in instances if i.kind == "galaxy"])


def scale_ratios(simdir: Path, frame) -> dict[str, list[np.ndarray]]:
    """Per matched galaxy ``(C,)`` ratios, keyed by blend crowding."""
    ratios: dict[str, list[np.ndarray]] = {}
    for truth_path in sorted(simdir.glob("blend_*_truth.fits")):
        stem = str(truth_path)[: -len("_truth.fits")]
        observations = read_cutouts([f"{stem}_{s}.fits" for s in SURVEYS])
        truth = read_truth(truth_path)
        true_positions = SkyCoord(truth.galaxies["ra"], truth.galaxies["dec"], unit="deg")
        found = detect_sources(observations)
        if len(found) == 0:
            continue
        scales = galaxy_scales(observations, frame, found)
        crowding = "1-2 galaxies" if len(truth.galaxies) <= 2 else "3+ galaxies"
        for k, position in enumerate(found):
            separation = position.separation(true_positions).arcsec
            j = int(np.argmin(separation))
            if separation[j] > 0.4:
                continue
            alone = [
                dataclasses.replace(
                    o, data=o.data - truth.survey_galaxies[s].sum(0) + truth.survey_galaxies[s][j]
                )
                for o, s in zip(observations, SURVEYS)
            ]
            reference = galaxy_scales(alone, frame, found[k : k + 1])[0]
            ratios.setdefault(crowding, []).append(scales[k] / reference)
    return ratios


def neighbour_light(simdir: Path, blend: str, band: int, stamp_arcsec: float, aperture: float):
    """Per true galaxy: the other galaxies' light in its aperture, in total and from outside
    their own stamps, as fractions of its own aperture flux ``(K,), (K,)``."""
    truth = read_truth(simdir / f"{blend}_truth.fits")
    pixel = proj_plane_pixel_scales(truth.model_wcs.celestial)[0] * 3600
    K, _, H, W = truth.model.shape
    yy, xx = np.mgrid[:H, :W]
    x, y = np.asarray(truth.galaxies["x_model"]), np.asarray(truth.galaxies["y_model"])
    half = stamp_arcsec / 2
    stamps = [
        (np.abs(xx - x[j]) * pixel <= half) & (np.abs(yy - y[j]) * pixel <= half) for j in range(K)
    ]
    total, outside = np.zeros(K), np.zeros(K)
    for k in range(K):
        inside = np.hypot(xx - x[k], yy - y[k]) * pixel <= aperture
        own = truth.model[k, band][inside].sum()
        for j in range(K):
            if j != k:
                total[k] += truth.model[j, band][inside].sum() / own
                outside[k] += truth.model[j, band][inside & ~stamps[j]].sum() / own
    return total, outside


def coverage_by_neighbour_light(simdir: Path, report: Path, band: int, stamp_arcsec: float):
    galaxies = Table.read(report / "galaxies.csv")
    galaxies = galaxies[galaxies["method"] == "galdeblend"]
    galaxies = galaxies[np.asarray(galaxies["matched"]).astype(str) == "True"]
    light = {
        b: neighbour_light(simdir, b, band, stamp_arcsec, 0.75) for b in set(galaxies["blend"])
    }
    total = np.array([light[b][0][t] for b, t in zip(galaxies["blend"], galaxies["truth_id"])])
    outside = np.array([light[b][1][t] for b, t in zip(galaxies["blend"], galaxies["truth_id"])])
    z = np.abs(np.asarray(galaxies["flux_error"], float)) / np.asarray(
        galaxies["flux_noise"], float
    )
    groups = {
        "under 1%": total < 0.01,
        "1% or more, under 1% from outside their stamps": (total >= 0.01) & (outside < 0.01),
        "1-10% from outside their stamps": (outside >= 0.01) & (outside < 0.1),
        "10% or more from outside their stamps": outside >= 0.1,
    }
    print(f"\nneighbours' light in the 0.75\" aperture (truth band {band})")
    print(f"{'':48s} | pairs | coverage 68/95 | median |error|/noise")
    for name, selected in groups.items():
        inside = [
            np.mean(np.asarray(galaxies[f"inside_{level}"][selected]).astype(str) == "True")
            for level in ("0.68", "0.95")
        ]
        error = np.median(z[selected])
        print(f"{name:48s} | {selected.sum():5d} | {inside[0]:.2f} / {inside[1]:.2f} | {error:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("simdir", type=Path)
    parser.add_argument("--report", type=Path, help="report folder of galdeblend validate")
    parser.add_argument("--priors", default=None, help="prior set (default: the shipped one)")
    parser.add_argument("--band", type=int, default=2, help="truth model band of the light split")
    args = parser.parse_args()
    frame = Priors.load(args.priors).galaxy_frame
    bands = " ".join(f"{b:>5s}" for b in frame.bands)
    print(f"flux scale / scale with the other galaxies' true light removed   bands: {bands}")
    for name, values in sorted(scale_ratios(args.simdir, frame).items()):
        values = np.array(values)
        median = " ".join(f"{v:5.2f}" for v in np.median(values, 0))
        high = " ".join(f"{v:5.2f}" for v in np.percentile(values, 84, 0))
        print(f"{name:12s} ({len(values):2d}) median {median}  84th {high}")
    if args.report is not None:
        stamp_arcsec = frame.shape[-1] * frame.pixel_scale
        coverage_by_neighbour_light(args.simdir, args.report, args.band, stamp_arcsec)


if __name__ == "__main__":
    main()
