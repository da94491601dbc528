"""Copies of simulated blends whose galaxies end at the edge of a galaxy stamp.

Each true galaxy's light beyond the square of the prior's galaxy stamp about its true centre
(:func:`light_budget.beyond_stamps`: the light that no galaxy instance can hold) is taken out
of every cutout's image and out of the truth file (the survey images and the fine model
grid); the noise, masks and everything else stay as simulated. Deblending the copies with
``galdeblend run`` and scoring both sets with ``benchmarks/light_budget.py`` tells how much
of the deblending error that light causes.

    python benchmarks/trim_to_stamps.py sims/ trimmed/ [--prior DIR] [--blends blend_0000 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.io import fits
from light_budget import beyond_stamps, outside_squares

from galdeblend.io import read_cutouts
from galdeblend.priors import default_priors_path
from galdeblend.scene import PriorFrame
from galdeblend.simulate import read_truth


def trim_scene(scene: dict, simdir: Path, outdir: Path, half_side: float) -> dict[str, np.ndarray]:
    """Write the trimmed copies of one scene of ``simdir``'s manifest into ``outdir``; return
    the fraction of the galaxy light taken out of each survey's bands, ``{survey: (C,)}``."""
    truth = read_truth(simdir / scene["truth"])
    removed = {}
    with fits.open(simdir / scene["truth"]) as truth_hdus:
        for survey, name in scene["cutouts"].items():
            beyond = beyond_stamps(truth, read_cutouts(str(simdir / name))[0], survey, half_side)
            with fits.open(simdir / name) as cutout:
                cutout["IMAGE"].data = (cutout["IMAGE"].data - beyond.sum(axis=0)).astype(
                    cutout["IMAGE"].data.dtype
                )
                cutout.writeto(outdir / name, overwrite=True)
            truth_hdus[survey.upper()].data = truth.survey_galaxies[survey] - beyond
            total = truth.survey_galaxies[survey].sum(axis=(0, 2, 3))
            removed[survey] = beyond.sum(axis=(0, 2, 3)) / total
        inside = ~outside_squares(truth, half_side)
        truth_hdus["MODEL"].data = truth.model * inside[:, None]
        truth_hdus.writeto(outdir / scene["truth"], overwrite=True)
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("simdir", type=Path, help="folder written by galdeblend simulate")
    parser.add_argument("outdir", type=Path, help="folder for the trimmed copies")
    parser.add_argument("--prior", type=Path, default=default_priors_path(), help="prior set")
    parser.add_argument("--blends", nargs="*", help="scene names (default: every scene)")
    args = parser.parse_args()
    meta = json.loads((args.prior / "priors.json").read_text())
    frame = PriorFrame.from_dict(meta["galaxy_frame"])
    half_side = frame.shape[-1] * frame.pixel_scale / 2
    manifest = json.loads((args.simdir / "manifest.json").read_text())
    scenes = [s for s in manifest["scenes"] if not args.blends or s["name"] in args.blends]
    missing = set(args.blends or ()) - {s["name"] for s in scenes}
    if missing:
        raise SystemExit(f"{args.simdir / 'manifest.json'} has no scene(s) {sorted(missing)}")
    args.outdir.mkdir(parents=True, exist_ok=True)
    print(f'galaxy light beyond {2 * half_side:.2f}" squares about the true centres, taken out:')
    for scene in scenes:
        removed = trim_scene(scene, args.simdir, args.outdir, half_side)
        print(
            f"  {scene['name']}: "
            + ", ".join(f"{s} {np.round(100 * f, 1).tolist()}%" for s, f in removed.items())
        )
    manifest["scenes"] = scenes
    (args.outdir / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
