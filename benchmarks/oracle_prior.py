"""An oracle galaxy prior, trained on the true galaxies: the EM prior's share of the errors.

The shipped priors are learned by EM from noisy blends alone. To tell how much of the
deblending error (and of the too-narrow posterior intervals of crowded blends) comes from
that prior not being the simulated population, and how much from the rest of the pipeline
(detection, flux scales, sampler, amplitude step), this script trains the galaxy prior's
network on the *true* galaxies of simulated fields instead. It is a diagnostic, never a
prior to ship.

The fields are the recipe's (``data_recipes/default_priors.py``: HSC + HST, 4" stamps,
seeds from ``--seed``). Each true galaxy (:func:`galdeblend.validate.truth_stamps`: noiseless,
in the prior frame centred on it, with the prior's PSF) is put in the units the deblender
gives it, its flux scale per band measured from the noisy data at its true position
(:func:`galdeblend.scene.place_instances`), with the 8 flips and quarter turns of the stamp
(the prior frame's PSF is round). The galaxy network of ``--init`` is trained on them
(warm-started); its sky prior is kept. Deblend with ``galdeblend run --prior OUT``.

    python benchmarks/oracle_prior.py --init galdeblend/data/priors/default --out oracle
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from astropy.coordinates import SkyCoord

from galdeblend.io.simulation_fits import scene_truth
from galdeblend.priors import Priors
from galdeblend.scene import PriorFrame, place_instances
from galdeblend.simulate import get_survey, simulate_scene
from galdeblend.validate import truth_stamps

SURVEYS = ("hsc", "hst")


def true_galaxies(scene, frame: PriorFrame) -> tuple[np.ndarray, np.ndarray]:
    """The scene's true galaxies in prior units ``(K, C, H, W)`` and the fraction of each
    band's survey-frame light that the scaled stamps hold ``(K, C)`` (1 when nothing
    falls outside the stamp)."""
    truth = scene_truth(scene)
    stamps = truth_stamps([truth], frame)  # nJy per prior pixel
    # The survey observing each prior band (truth_stamps has checked that one does).
    observed = [
        (name, get_survey(name).band(band))
        for band in frame.bands
        for name in SURVEYS
        if band in get_survey(name).band_names
    ]
    stamps = stamps * np.array([get_survey(n).adu_per_njy(b) for n, b in observed])[:, None, None]
    positions = SkyCoord(scene.sky_coords[:, 0], scene.sky_coords[:, 1], unit="deg")
    galaxies = [
        inst
        for inst in place_instances(scene.observations(), frame, positions=positions)
        if inst.kind == "galaxy"
    ]
    scale = np.stack([inst.scale for inst in galaxies])  # (K, C)
    survey_flux = np.stack(
        [
            truth.survey_galaxies[n][:, get_survey(n).bands.index(b)].sum((-2, -1))
            for n, b in observed
        ],
        axis=1,
    )  # (K, C) ADU
    return stamps / scale[:, :, None, None], stamps.sum((-2, -1)) / survey_flux


def dihedral(x: np.ndarray) -> np.ndarray:
    """The 8 flips and quarter turns of stamps ``(N, C, H, W)``: ``(8 N, C, H, W)``."""
    turns = [np.rot90(x, k, axes=(-2, -1)) for k in range(4)]
    return np.concatenate(turns + [t[..., ::-1] for t in turns])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--init", default="galdeblend/data/priors/default")
    parser.add_argument("--out", required=True)
    parser.add_argument("--fields", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)

    start = time.time()
    priors = Priors.load(args.init)
    frame = priors.galaxy_frame
    x, held = [], []
    for i in range(args.fields):
        scene = simulate_scene(SURVEYS, seed=args.seed + i, stamp_arcsec=4.0)
        x_k, held_k = true_galaxies(scene, frame)
        x.append(x_k)
        held.append(held_k)
    x, held = np.concatenate(x), np.concatenate(held)
    t_data = time.time() - start
    print(
        f"{len(x)} true galaxies from {args.fields} fields ({t_data:.0f} s); "
        f"light in the stamp / in the survey, percentiles 10/50/90 per band: "
        + ", ".join(
            f"{b} {' '.join(f'{v:.3f}' for v in np.percentile(held[:, c], (10, 50, 90)))}"
            for c, b in enumerate(frame.bands)
        )
    )
    peak = x.max((-2, -1))
    print(
        "peak in prior units, percentiles 10/50/90 per band: "
        + ", ".join(
            f"{b} {' '.join(f'{v:.2f}' for v in np.percentile(peak[:, c], (10, 50, 90)))}"
            for c, b in enumerate(frame.bands)
        )
    )
    samples = torch.from_numpy(np.ascontiguousarray(dihedral(x))).float()
    galaxy = priors["galaxy"].fit(
        samples, steps=args.steps, batch_size=32, lr=2e-3, seed=args.seed, progress=True
    )
    metadata = {k: v for k, v in priors.metadata.items() if k != "validation"}
    oracle = Priors(
        {"galaxy": galaxy, "sky": priors["sky"]},
        frame,
        {
            **metadata,
            "name": f"oracle from {args.init}",
            "recipe": "benchmarks/oracle_prior.py",
            "oracle": {
                "learned_from": "the true galaxies (a diagnostic; never ship it)",
                "fields": args.fields,
                "galaxies": len(x),
                "seed": args.seed,
                "steps": args.steps,
                "init": args.init,
            },
        },
    )
    oracle.save(args.out)
    print(f"oracle priors written to {args.out} in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
