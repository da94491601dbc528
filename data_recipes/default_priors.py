r"""Build the default galaxy and sky priors shipped with galdeblend.

The priors are learned by EM (DDPRISM) from simulated, noisy, blended HSC (g, r, i, z, y)
+ HST ACS F814W observations of parametric galaxies (galdeblend.simulate), never from the
truth. The settings, data, timings and validation figures are recorded in priors.json
beside the weights.

Three sets ship, and deblend together as an ensemble by default (docs/method.rst): v12x,
v16x and deep16x, the sets v12, v16 and deep16 below each continued for two laps with the
flux scale that fits the other galaxies with extended profiles (galdeblend.scene). v12,
v16 and deep16 were learned, and shipped in these directories, with the earlier scale that
fitted the other galaxies as point sources; git history keeps them and the code that
rebuilds them:

    python data_recipes/default_priors.py --init v12/ --gaussian-laps 0 --laps 2 --augment \
        --name galdeblend-default-hsc-hst-v12x --out galdeblend/data/priors/default
    python data_recipes/default_priors.py --init v16/ --gaussian-laps 0 --laps 2 --augment \
        --cg-iterations 3 --name galdeblend-hsc-hst-v16x --out galdeblend/data/priors/v16
    python data_recipes/default_priors.py --init deep16/ --gaussian-laps 0 --laps 2 \
        --augment --depth 16 --cg-iterations 3 --name galdeblend-hsc-hst-deep16x \
        --out galdeblend/data/priors/deep16

(22.3, 28.0 and 28.8 minutes, peak 6.9, 6.9 and 7.3 GB; docs/validation.rst). The
defaults build v6; v12 continues it for two laps with --augment:

    python data_recipes/default_priors.py --out v6/
    python data_recipes/default_priors.py --init v6/ --gaussian-laps 0 --laps 2 --augment \
        --name galdeblend-default-hsc-hst-v12 --out v12/

v16 continues v12 for 1 + 5 laps with three CG iterations per E-step
(--cg-iterations 3; 53.4 minutes, laps of 7.8-8.7 minutes, peak 6.9 GB), which makes the
galaxies less round (docs/validation.rst); it was built as trial-v16, the name changed when
it shipped:

    python data_recipes/default_priors.py --init v12/ --gaussian-laps 0 --laps 1 --augment \
        --cg-iterations 3 --out v15b/
    python data_recipes/default_priors.py --init v15b/ --gaussian-laps 0 --laps 5 --augment \
        --cg-iterations 3 --name galdeblend-hsc-hst-v16 --out v16/

deep16 continues v12 for two laps on fields observed 16 times as long
(--depth: every band's exposure time and number of exposures; 16.2 minutes, peak 7.3 GB),
which gives the galaxies their outer light and true sizes (docs/validation.rst); built as
trial-deep16:

    python data_recipes/default_priors.py --init v12/ \
        --gaussian-laps 0 --laps 2 --augment --depth 16 --cg-iterations 3 \
        --name galdeblend-hsc-hst-deep16 --out deep16/

A trial set, stamp56, grows v12's galaxy stamp to 56 x 56 pixels (3.36"; grow_stamp) and
continues it for four laps on the larger stamp (9.7 minutes a lap), since the light of
large galaxies beyond a 2.4" stamp goes to their neighbours; stamp56-deep continues that
for two laps on fields 16 times deeper (19.0 minutes, peak 8.1 GB). Neither is an
improvement on v12 (docs/validation.rst):

    python data_recipes/default_priors.py --init v12/ \
        --frame 56 --gaussian-laps 0 --laps 4 --augment --cg-iterations 3 \
        --name trial-stamp56 --out stamp56/ --checkpoints stamp56_ck/
    python data_recipes/default_priors.py --init stamp56/ --gaussian-laps 0 --laps 2 \
        --augment --depth 16 --cg-iterations 3 --name trial-stamp56-deep --out stamp56-deep/

On 2 CPU cores v6 (a 40 x 40 galaxy stamp, 2.4"; 3 Gaussian + 10 diffusion
laps; one preconditioned CG iteration per E-step, the defaults here) took 95.0 minutes,
peak 7.1 GB, diffusion laps of 8.5-9.4 minutes (the time taken is printed and recorded);
the previous set, v3 (32 x 32, one unpreconditioned iteration), took 49.8 minutes.
It runs on the GPU when there is one (--device). An E-step closer to the deblending
sampler, ``--sampler pc --sampler-steps 32 --cg-iterations 3``, costs about 4.8 times as
much (twice the steps, each about 2.4 times the cost; docs/validation.rst).
With --checkpoints, --resume continues a killed run, or extends a finished one with a
larger --laps.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import time

import numpy as np
import torch

from galdeblend.allocator import retain_freed_memory
from galdeblend.errors import InputError
from galdeblend.learn import learn, new_priors, smooth_start
from galdeblend.priors import Priors
from galdeblend.scene import PriorFrame
from galdeblend.simulate import simulate_scene
from galdeblend.simulate.surveys import Survey, get_survey

SURVEYS = ("hsc", "hst")
BANDS = ("g", "r", "i", "z", "y", "F814W")


def deeper(name: str, depth: float) -> Survey:
    """The survey preset ``name`` with ``depth`` times its exposure time and exposures."""
    survey = get_survey(name)
    bands = tuple(
        dataclasses.replace(
            b, exposure_time=b.exposure_time * depth, n_exposures=round(b.n_exposures * depth)
        )
        for b in survey.bands
    )
    return dataclasses.replace(survey, bands=bands)


def grow_stamp(priors: Priors, side: int) -> Priors:
    """``priors`` with a galaxy stamp of ``side`` x ``side`` model pixels (the same pixel
    scale, bands and PSF) and a copy of the same galaxy network, which is convolutional and
    so runs on the larger stamp as it is; EM laps then teach it the larger stamp's
    outskirts. The UNet must divide ``side`` by its downsampling factor (an
    :class:`~galdeblend.errors.InputError` otherwise)."""
    frame = priors.galaxy_frame
    if side < frame.shape[-1]:
        raise InputError(
            f"the galaxy stamp can grow, not shrink: {side} < {frame.shape[-1]} pixels"
        )
    galaxy = copy.deepcopy(priors["galaxy"])
    galaxy.denoiser.shape = (frame.shape[0], side, side)
    with torch.no_grad():  # the backbone checks that it can run on this stamp
        galaxy.denoiser(torch.zeros(1, *galaxy.shape), torch.ones(1))
    grown = dataclasses.replace(frame, shape=galaxy.shape)
    return Priors({**priors.kinds, "galaxy": galaxy}, grown, dict(priors.metadata))


def simulate_fields(n: int, *, seed: int, blank: bool, stamp_arcsec: float, depth: float = 1.0):
    """Observations of ``n`` simulated fields (each a list: HSC, HST)."""
    surveys = [deeper(s, depth) for s in SURVEYS]
    return [
        simulate_scene(
            surveys, seed=seed + i, blank=blank, stamp_arcsec=stamp_arcsec
        ).observations()
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="galdeblend/data/priors/default")
    parser.add_argument("--fields", type=int, default=128)
    parser.add_argument("--blank", type=int, default=16)
    parser.add_argument("--stamp-arcsec", type=float, default=4.0)
    parser.add_argument(
        "--depth",
        type=float,
        default=1.0,
        help="the fields' exposure time and number of exposures in every band, times this "
        "(default 1: the survey presets' depth)",
    )
    parser.add_argument(
        "--frame",
        type=int,
        help="galaxy stamp side in model pixels (default 40; with --init, the set's, and a "
        "larger side grows its stamp: grow_stamp)",
    )
    parser.add_argument("--pixel-scale", type=float, default=0.06)
    parser.add_argument("--psf-fwhm", type=float, default=0.07)
    parser.add_argument("--channels", default="16,32,64")
    parser.add_argument("--gaussian-laps", type=int, default=3)
    parser.add_argument(
        "--gaussian-rank", type=int, default=16, help="rank of the Gaussian laps' covariances"
    )
    parser.add_argument(
        "--start-fwhm",
        type=float,
        default=0.0,
        help="start EM from a galaxy prior smooth on this scale (arcsec; "
        "galdeblend.learn.smooth_start) instead of N(0, I) (0)",
    )
    parser.add_argument("--laps", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument(
        "--augment",
        action="store_true",
        help="M-steps train on the 8 flips and quarter turns of the posterior samples",
    )
    parser.add_argument("--sampler", choices=("ddim", "pc"), default="ddim", help="E-step sampler")
    parser.add_argument("--sampler-steps", type=int, default=16)
    parser.add_argument(
        "--cg-iterations",
        type=int,
        default=1,
        help="CG iterations of the E-step sampler (with 1, as for the shipped sets, a lap "
        "leaves the galaxies as round as it found them; with 3 it makes them more elongated: "
        "docs/validation.rst)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--name", default="galdeblend-default-hsc-hst-v6", help="name recorded in priors.json"
    )
    parser.add_argument(
        "--checkpoints", default=None, help="checkpoint directory (resume with --resume)"
    )
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--init",
        help="continue from this prior set (its frame and networks; the pixel scale, PSF "
        "and channel options are then ignored) instead of new priors, e.g. with "
        "--gaussian-laps 0",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="where EM runs (default: cuda when available)"
    )
    args = parser.parse_args(argv)
    if args.laps < 1:
        parser.error("--laps must be at least 1: the recipe writes a diffusion galaxy prior")
    if args.depth <= 0:
        parser.error(f"--depth must be positive, not {args.depth}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    if args.init:
        priors = Priors.load(args.init)
        if args.frame is not None:
            try:
                priors = grow_stamp(priors, args.frame)
            except InputError as err:
                parser.error(f"--frame {args.frame}: {err}")
    else:
        side = args.frame or 40
        frame = PriorFrame((len(BANDS), side, side), args.pixel_scale, BANDS, args.psf_fwhm)
        channels = tuple(int(c) for c in args.channels.split(","))
        priors = new_priors(
            frame, channels=channels, attention_levels=(len(channels) - 1,), seed=args.seed
        )
    start = time.time()
    fields = simulate_fields(
        args.fields, seed=args.seed, blank=False, stamp_arcsec=args.stamp_arcsec, depth=args.depth
    )
    blank = simulate_fields(
        args.blank,
        seed=args.seed + 100_000,
        blank=True,
        stamp_arcsec=args.stamp_arcsec,
        depth=args.depth,
    )
    t_sim = time.time() - start
    train = {"steps": args.train_steps, "batch_size": 32, "lr": 2e-3, "augment": args.augment}
    sampling = {
        "steps": args.sampler_steps,
        "sampler": args.sampler,
        "cg_iterations": args.cg_iterations,
        "batch_size": 64,
    }
    galaxy_start = smooth_start(priors, args.start_fwhm) if args.start_fwhm > 0 else None
    learned = learn(
        fields,
        blank=blank,
        priors=priors,
        laps=args.laps,
        gaussian_laps=args.gaussian_laps,
        gaussian_rank=args.gaussian_rank,
        start=galaxy_start,
        train=train,
        sampling=sampling,
        checkpoint_dir=args.checkpoints,
        resume=args.resume,
        seed=args.seed,
        device=device,
    )
    elapsed = time.time() - start
    # Priors continued from --init carry that set's validation figures, which are not these
    # priors' (data_recipes/validate_default_priors.py measures them anew).
    learned.metadata.pop("validation", None)
    learned.metadata.update(
        {
            "name": args.name,
            "recipe": "data_recipes/default_priors.py",
            "data": {
                "simulation": (
                    "galdeblend.simulate.simulate_scene, parametric bulge + disk galaxies"
                ),
                "surveys": list(SURVEYS),
                "fields": args.fields,
                "blank_fields": args.blank,
                "stamp_arcsec": args.stamp_arcsec,
                "depth": args.depth,
                "seed": args.seed,
                "learned_from": "noisy blended observations only (never the truth)",
            },
            "settings": {
                "channels": list(learned["galaxy"].denoiser.backbone.config["channels"]),
                "train": train,
                "sampling": sampling,
                "laps": args.laps,
                "gaussian_laps": args.gaussian_laps,
                "gaussian_rank": args.gaussian_rank,
                "start_fwhm_arcsec": args.start_fwhm,
                "init": args.init,
                "sky_grid": learned["sky"].shape[-1],
            },
            "built_on": {
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "torch": torch.__version__,
                "seconds": round(elapsed, 1),
                "simulation_seconds": round(t_sim, 1),
            },
        }
    )
    learned.save(args.out)
    print(f"priors written to {args.out} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
