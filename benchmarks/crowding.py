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
   outside those galaxies' own prior stamps; then split by the fraction of each galaxy's
   own light inside its prior stamp, and, for the galaxies whose stamp holds 97% of it and
   whose neighbours' stamps hold theirs (under 1% from outside), by the neighbours' light.

    python benchmarks/crowding.py sims/ --report report/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.wcs.utils import proj_plane_pixel_scales

from galdeblend.baselines.segmentation import match_sources
from galdeblend.io import read_cutouts
from galdeblend.metrics import aperture_flux
from galdeblend.priors import Priors
from galdeblend.scene import detect_sources, place_instances
from galdeblend.simulate import SceneTruth, read_truth
from galdeblend.validate import APERTURE_ARCSEC

MATCH_ARCSEC = 0.4


def blend_scenes(simdir: Path) -> Iterator[tuple[dict, SceneTruth]]:
    """The blends of a ``galdeblend simulate`` folder: its ``manifest.json`` entry, truth."""
    for scene in json.loads((simdir / "manifest.json").read_text())["scenes"]:
        if scene["kind"] == "blend":
            yield scene, read_truth(simdir / scene["truth"])


def galaxy_scales(observations, frame, positions) -> np.ndarray:
    """``(K, C)`` flux scales of galaxies at ``positions``, as ``galdeblend run`` sets them."""
    instances = place_instances(observations, frame, positions=positions)
    return np.array([i.scale for i in instances if i.kind == "galaxy"])


def scale_ratios(simdir: Path, frame) -> dict[str, list[np.ndarray]]:
    """Per matched galaxy ``(C,)`` ratios, keyed by blend crowding."""
    ratios: dict[str, list[np.ndarray]] = {}
    for scene, truth in blend_scenes(simdir):
        surveys = list(scene["cutouts"])
        obs = read_cutouts([str(simdir / scene["cutouts"][s]) for s in surveys])
        observations = dict(zip(surveys, obs))
        found = detect_sources(obs)
        if len(found) == 0:
            continue
        scales = galaxy_scales(obs, frame, found)
        # Matched as validate matches: in the first survey's pixels, within 0.4".
        survey, first = next(iter(observations.items()))
        true_xy = np.stack([truth.galaxies[f"x_{survey}"], truth.galaxies[f"y_{survey}"]], 1)
        found_xy = np.array(first.wcs.celestial.world_to_pixel(found)).T
        crowding = "1-2 galaxies" if len(truth.galaxies) <= 2 else "3+ galaxies"
        for k, j in zip(*match_sources(found_xy, true_xy, MATCH_ARCSEC / first.pixel_scale)):
            alone = [
                dataclasses.replace(
                    o, data=o.data - truth.survey_galaxies[s].sum(0) + truth.survey_galaxies[s][j]
                )
                for s, o in observations.items()
            ]
            reference = galaxy_scales(alone, frame, found[k : k + 1])[0]
            ratios.setdefault(crowding, []).append(scales[k] / reference)
    return ratios


def stamp_light(truth: SceneTruth, band: int, stamp_arcsec: float):
    """Per true galaxy ``(K,), (K,), (K,)``: the other galaxies' light in its photometry
    aperture, in total and from outside their own stamps, as fractions of its own aperture
    flux; and the fraction of its own light inside its stamp (centred on it)."""
    pixel = proj_plane_pixel_scales(truth.model_wcs.celestial)[0] * 3600
    H, W = truth.model.shape[-2:]
    yy, xx = np.mgrid[:H, :W]
    xy = np.stack([truth.galaxies["x_model"], truth.galaxies["y_model"]], 1)
    half = stamp_arcsec / 2 / pixel
    images = truth.model[:, band]
    outside = images * (
        (np.abs(xx - xy[:, :1, None]) > half) | (np.abs(yy - xy[:, 1:, None]) > half)
    )
    radius = APERTURE_ARCSEC / pixel
    # [j, k]: galaxy j's light in galaxy k's aperture
    light = np.array([aperture_flux(image, xy, radius)[:, 0] for image in images])
    light_outside = np.array([aperture_flux(image, xy, radius)[:, 0] for image in outside])
    own = np.diag(light).copy()
    np.fill_diagonal(light, 0.0)
    np.fill_diagonal(light_outside, 0.0)
    own_inside = 1.0 - outside.sum((1, 2)) / images.sum((1, 2))
    return light.sum(0) / own, light_outside.sum(0) / own, own_inside


def is_true(column) -> np.ndarray:
    """A boolean column of a ``galdeblend validate`` CSV (read back as text or bool)."""
    return np.asarray(column).astype(str) == "True"


def coverage_by_neighbour_light(simdir: Path, report: Path, band: int, stamp_arcsec: float):
    galaxies = Table.read(report / "galaxies.csv")
    galaxies = galaxies[galaxies["method"] == "galdeblend"]
    galaxies = galaxies[is_true(galaxies["matched"])]
    light = {
        scene["name"]: np.stack(stamp_light(truth, band, stamp_arcsec))
        for scene, truth in blend_scenes(simdir)
    }
    total, outside, own = np.array(
        [light[b][:, t] for b, t in zip(galaxies["blend"], galaxies["truth_id"])]
    ).T
    z = np.abs(np.asarray(galaxies["flux_error"], float)) / np.asarray(
        galaxies["flux_noise"], float
    )
    print_groups(
        f"neighbours' light in the {APERTURE_ARCSEC}\" aperture (truth band {band})",
        {
            "under 1%": total < 0.01,
            "1% or more, under 1% from outside their stamps": (total >= 0.01) & (outside < 0.01),
            "1-10% from outside their stamps": (outside >= 0.01) & (outside < 0.1),
            "10% or more from outside their stamps": outside >= 0.1,
        },
        galaxies,
        z,
    )
    held = (own > 0.97) & (outside < 0.01)
    print_groups(
        f"the galaxy's own light inside its {stamp_arcsec:.2f}\" stamp",
        {
            "under 90%": own <= 0.9,
            "90-97%": (own > 0.9) & (own <= 0.97),
            "over 97%": own > 0.97,
            "over 97%, neighbours' under 1% from outside": held,
            "- of which neighbours' light under 10%": held & (total < 0.1),
            "- of which neighbours' light 10% or more": held & (total >= 0.1),
        },
        galaxies,
        z,
    )


def print_groups(title: str, groups: dict[str, np.ndarray], galaxies: Table, z: np.ndarray):
    """Pairs, aperture flux coverage at 68/95% and median |error| / noise of each group."""
    print(f"\n{title}")
    print(f"{'':48s} | pairs | coverage 68/95 | median |error|/noise")
    for name, selected in groups.items():
        inside = [
            np.mean(is_true(galaxies[f"inside_{level}"][selected])) for level in ("0.68", "0.95")
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
