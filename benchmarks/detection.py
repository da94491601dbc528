"""Galaxy detection against simulated truth: completeness and unmatched detections.

Simulates ``--fields`` HSC (g, r, i, z, y) + HST F814W fields of parametric galaxies with
residual background gradients (:func:`galdeblend.simulate.simulate_scene`), or reads the
blends of folders written by ``galdeblend simulate`` (``--simdir``, repeatable), runs
:func:`galdeblend.scene.detect_sources` on each, pairs detections with true galaxies within
``--radius`` arcsec (:func:`galdeblend.baselines.segmentation.match_sources`) and prints the
numbers of true galaxies, matched galaxies, fields with every galaxy matched and unmatched
detections, the distance of each unmatched detection to its nearest true galaxy, and the
median and 84th percentile of the matched galaxies' offsets from their true centres.
``--option NAME=VALUE`` (repeatable) sets an option of ``detect_sources``.

    python benchmarks/detection.py --fields 40 --seed 5000000
    python benchmarks/detection.py --simdir sims/seed2028 --simdir sims/seed2029
    python benchmarks/detection.py --simdir sims/seed2028 --option min_snr=5
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord

from galdeblend.baselines.segmentation import match_sources
from galdeblend.io import Observation, read_cutouts
from galdeblend.scene import detect_sources, detection_defaults, detection_options
from galdeblend.simulate import read_truth, simulate_scene


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fields", type=int, default=40)
    parser.add_argument("--seed", type=int, default=5_000_000)
    parser.add_argument("--radius", type=float, default=0.4, help="match radius, arcsec")
    parser.add_argument(
        "--simdir", action="append", type=Path, help="folder written by galdeblend simulate"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a detect_sources option (a number), repeatable",
    )
    args = parser.parse_args()
    # Names checked as deblend checks them; each value takes the type of its default.
    options = detection_options(dict(o.split("=", 1) for o in args.option))
    defaults = detection_defaults()
    options = {name: type(defaults[name])(value) for name, value in options.items()}
    warnings.simplefilter("ignore")
    n_fields = n_true = n_matched = n_complete = 0
    unmatched, offsets = [], []
    start = time.time()
    fields = _simdir_fields(args.simdir) if args.simdir else _simulated_fields(args)
    for observations, truth in fields:
        found = detect_sources(observations, **options)
        origin = observations[0].wcs.celestial.pixel_to_world(0, 0)
        true_xy, found_xy = _offsets(truth, origin), _offsets(found, origin)
        detected, true_index = match_sources(found_xy, true_xy, args.radius)
        offsets += np.hypot(*(found_xy[detected] - true_xy[true_index]).T).tolist()
        n_fields += 1
        n_true += len(truth)
        n_matched += len(detected)
        n_complete += len(detected) == len(truth)
        for j in sorted(set(range(len(found))) - set(detected.tolist())):
            unmatched.append(float(truth.separation(found[j]).arcsec.min()))
    print(f"options: {options or 'defaults'}")
    print(
        f"{n_fields} fields, {n_true} true galaxies: {n_matched} matched within "
        f'{args.radius}" ({n_matched / n_true:.1%}), every galaxy matched in {n_complete} '
        f"fields, {len(unmatched)} unmatched detections ({time.time() - start:.0f} s)"
    )
    if offsets:
        median, p84 = np.percentile(offsets, [50, 84])
        print(f'offsets of the matched galaxies: median {median:.3f}", 84th percentile {p84:.3f}"')
    if unmatched:
        print('unmatched: distance to the nearest true galaxy ("):', np.round(unmatched, 2))


def _simulated_fields(args: argparse.Namespace) -> Iterator[tuple[list[Observation], SkyCoord]]:
    """HSC + HST fields of parametric galaxies, seeds ``args.seed`` onwards."""
    for i in range(args.fields):
        scene = simulate_scene(("hsc", "hst"), seed=args.seed + i, stamp_arcsec=4.0)
        truth = SkyCoord(scene.sky_coords[:, 0], scene.sky_coords[:, 1], unit="deg")
        yield scene.observations(), truth


def _simdir_fields(simdirs: list[Path]) -> Iterator[tuple[list[Observation], SkyCoord]]:
    """The blends of ``galdeblend simulate`` folders (their ``manifest.json``): all cutouts
    of a blend, its true galaxy positions."""
    for simdir in simdirs:
        for scene in json.loads((simdir / "manifest.json").read_text())["scenes"]:
            if scene["kind"] != "blend":
                continue
            cutouts = [str(simdir / name) for name in scene["cutouts"].values()]
            galaxies = read_truth(simdir / scene["truth"]).galaxies
            yield read_cutouts(cutouts), SkyCoord(galaxies["ra"], galaxies["dec"], unit="deg")


def _offsets(coords: SkyCoord, origin: SkyCoord) -> np.ndarray:
    """``(N, 2)`` east and north offsets in arcsec of ``coords`` from ``origin``."""
    east, north = origin.spherical_offsets_to(coords)
    return np.stack([east.arcsec, north.arcsec], axis=-1).reshape(-1, 2)


if __name__ == "__main__":
    main()
