"""The ``galdeblend`` command: run, learn, simulate, info, validate.

Exit status 0 only when every cutout succeeded; a failing cutout is reported with
its file and the reason, and the others go on.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from galdeblend.allocator import retain_freed_memory
from galdeblend.errors import GaldeblendError, InputError

__all__ = ["main"]

log = logging.getLogger("galdeblend")

RUN_EXAMPLES = """examples:
  galdeblend run --example --out results/
  galdeblend run hsc_*.fits --samples 32 --out results/
  galdeblend run cut.fits --catalog targets.ecsv --prior my_priors/ --em-laps 2
  galdeblend run hsc_*.fits --prior my_priors/ --prior my_other_priors/ --out results/
"""
LEARN_EXAMPLES = """examples:
  galdeblend learn sims/blend_*_hsc.fits --blank sims/sky_*_hsc.fits --out my_priors/ --laps 4
  galdeblend learn sims/blend_*.fits --out my_priors/ --resume
  torchrun --nproc-per-node 4 -m galdeblend learn sims/blend_*.fits --out my_priors/
"""
SIMULATE_EXAMPLES = """examples:
  galdeblend simulate sims/ --survey hsc --survey hst --n-blends 50 --n-sky 10 --seed 1
"""
VALIDATE_EXAMPLES = """examples:
  galdeblend validate sims/ results/ --out report/
  galdeblend validate sims/ results/ --prior my_priors/ --prior-samples 256
"""
INFO_EXAMPLES = """examples:
  galdeblend info
  galdeblend info my_priors/
"""

SAMPLER_KEYS = {
    "steps",
    "sampler",
    "corrections",
    "tau",
    "cg_iterations",
    "batch_size",
    "log_prob_steps",
    "amplitude_width",
}


def _example_cutouts() -> list[tuple[str, dict]]:
    """The packaged example field: (path, read options) per cutout."""
    root = Path(str(resources.files("galdeblend") / "data" / "example"))
    spec = json.loads((root / "example.json").read_text())
    cutouts = []
    for field in spec["fields"]:
        for c in field["cutouts"]:
            options = {k: v for k, v in c.items() if k != "file"}
            if "psf" in options:
                options["psf"] = str(root / options["psf"])
            cutouts.append((str(root / c["file"]), options))
    return cutouts


def _read(cutouts: list[tuple[str, dict]], failures: list[tuple[str, str]]):
    """Read every cutout; a bad one is reported and skipped."""
    from galdeblend.io import read_cutouts

    observations = []
    for path, options in cutouts:
        try:
            observations.extend(read_cutouts(path, **options))
        except (InputError, OSError) as err:
            failures.append((path, str(err)))
            log.error("%s: %s", path, err)
    return observations


def _fields(observations):
    from galdeblend.scene import group_fields

    return [[observations[i] for i in group] for group in group_fields(observations)]


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot read the configuration ({err})") from err
    if not isinstance(config, dict):
        raise InputError(f"{path}: the configuration must be a mapping of settings")
    for key in ("em", "detection"):
        if not isinstance(config.get(key, {}), dict):
            raise InputError(f"{path}: '{key}' must be a mapping of options")
    from galdeblend.scene import detection_options

    try:
        detection_options(config.get("detection", {}))
    except InputError as err:
        raise InputError(f"{path}: {err}") from err
    known = SAMPLER_KEYS | {"samples", "em", "detection"}
    unknown = set(config) - known
    if unknown:
        raise InputError(f"{path}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return config


def _summary_rows(name: str, result) -> list[dict]:
    from galdeblend.metrics import chi2_per_pixel

    chi2 = [
        chi2_per_pixel(o.data, m, o.variance, o.mask)
        for o, m in zip(result.observations, result.models)
    ]
    rows = []
    for inst in result.instances:
        mean, std = inst.flux()
        row = {
            "field": name,
            "id": inst.id,
            "kind": inst.kind,
            "ra": inst.center.ra.deg if inst.center is not None else np.nan,
            "dec": inst.center.dec.deg if inst.center is not None else np.nan,
            "log_prob": inst.log_prob,
            "chi2_per_pixel": ";".join(f"{c:.3f}" for c in chi2),
        }
        for band, f, s in zip(inst.frame.bands, mean, std):
            row[f"flux_{band}"] = f
            row[f"flux_err_{band}"] = s
        rows.append(row)
    return rows


def cmd_run(args) -> int:
    import torch

    from galdeblend.deblend import deblend
    from galdeblend.io import write_posterior
    from galdeblend.learn import learn
    from galdeblend.plotting import summary_figure
    from galdeblend.priors import default_ensemble, load_ensemble

    config = _load_config(args.config)
    cutouts = [(p, {}) for p in args.cutouts] + (_example_cutouts() if args.example else [])
    if not cutouts:
        raise InputError("run: give CUTOUTS or --example")
    failures: list[tuple[str, str]] = []
    observations = _read(cutouts, failures)
    fields = _fields(observations) if observations else []
    priors = load_ensemble(args.prior or default_ensemble())
    if args.em_laps > 0 and fields:
        log.info(
            "refining %d prior set(s) by %d EM lap(s) each on %d field(s)",
            len(priors),
            args.em_laps,
            len(fields),
        )
        priors = [
            learn(
                fields,
                priors=prior_set,
                laps=args.em_laps,
                gaussian_laps=0,
                seed=args.seed,
                progress=not args.quiet,
                **config.get("em", {}),
            )
            for prior_set in priors
        ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = {k: v for k, v in config.items() if k in SAMPLER_KEYS}
    if args.steps is not None:
        sampler["steps"] = args.steps
    if args.batch_size is not None:
        sampler["batch_size"] = args.batch_size
    if args.amplitude_width is not None:
        sampler["amplitude_width"] = args.amplitude_width
    n_samples = args.samples if args.samples is not None else config.get("samples", 16)
    rows: list[dict] = []
    written = 0
    for k, field in enumerate(fields):
        name = Path(field[0].source).stem
        target = out / f"{name}_posterior.fits"
        try:
            if target.exists() and not args.overwrite:
                raise InputError(f"{target} exists; pass --overwrite to replace it")
            result = deblend(
                field,
                priors,
                catalog=args.catalog,
                n_samples=n_samples,
                seed=args.seed + k,
                device=args.device,
                fast=args.fast,
                detection=config.get("detection"),
                progress=not args.quiet,
                **sampler,
            )
            if args.prior:
                result.provenance["priors"] = " + ".join(args.prior)
            write_posterior(result, target, overwrite=args.overwrite)
            summary_figure(result, out / f"{name}_summary.png")
            rows.extend(_summary_rows(name, result))
            written += 1
            log.info("%s: %d galaxies -> %s", name, len(result.galaxies), target)
        except (GaldeblendError, ValueError, RuntimeError, torch.linalg.LinAlgError) as err:
            sources = ", ".join(o.source for o in field)
            failures.append((sources, str(err)))
            log.error("%s: %s", sources, err)
    if rows:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with open(out / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, restval="")
            writer.writeheader()
            writer.writerows(rows)
    for source, reason in failures:
        print(f"FAILED {source}: {reason}", file=sys.stderr)
    print(f"{written} field(s) written to {out}, {len(failures)} failure(s)")
    return 1 if failures else 0


def cmd_learn(args) -> int:
    from galdeblend import distributed
    from galdeblend.learn import learn
    from galdeblend.priors import Priors
    from galdeblend.scene import PriorFrame

    if args.cg_iterations < 1:
        raise InputError(f"learn: --cg-iterations must be at least 1, got {args.cg_iterations}")
    device = distributed.init_from_env()  # under torchrun: join the other ranks
    if args.device is not None:
        device = args.device  # "cuda": the current GPU, this rank's under torchrun
    failures: list[tuple[str, str]] = []
    fields = _fields(_read([(p, {}) for p in args.cutouts], failures))
    blank_obs = _read([(p, {}) for p in args.blank], failures)
    blank = _fields(blank_obs) if blank_obs else []
    if failures:
        for source, reason in failures:
            print(f"FAILED {source}: {reason}", file=sys.stderr)
        raise InputError(f"learn: {len(failures)} cutout(s) could not be read")
    out = Path(args.out)
    priors = Priors.load(args.init) if args.init else None
    frame = None
    if priors is None:
        bands = (
            tuple(b.strip() for b in args.bands.split(","))
            if args.bands
            else tuple(dict.fromkeys(b for f in fields for o in f for b in o.bands))
        )
        frame = PriorFrame(
            (len(bands), args.stamp, args.stamp), args.pixel_scale, bands, args.psf_fwhm
        )
    train = {"steps": args.train_steps, "batch_size": args.batch_size, "augment": args.augment}
    learned = learn(
        fields,
        blank=blank,
        priors=priors,
        galaxy_frame=frame,
        laps=args.laps,
        gaussian_laps=args.gaussian_laps,
        algorithm=args.algorithm,
        checkpoint_dir=out / "checkpoints",
        resume=args.resume,
        train=train,
        sampling={"cg_iterations": args.cg_iterations},
        seed=args.seed,
        progress=not args.quiet,
        device=device,
    )
    if distributed.is_main():
        learned.save(out)
        print(f"priors written to {out}")
    distributed.barrier()  # the ranks close their process group together
    return 0


def cmd_simulate(args) -> int:
    from galdeblend.simulate import simulate_dataset

    manifest = simulate_dataset(
        args.outdir,
        surveys=tuple(args.survey or ["hsc"]),
        n_blends=args.n_blends,
        n_sky=args.n_sky,
        seed=args.seed,
        galaxy_type=args.galaxy_type,
        progress=not args.quiet,
    )
    print(f"wrote {args.n_blends} blend(s) and {args.n_sky} blank field(s) to {args.outdir}")
    cutouts = " ".join(str(Path(args.outdir) / f"blend_*_{s}.fits") for s in args.survey or ["hsc"])
    print(f"deblend them with: galdeblend run {cutouts} --out results/")
    return 0 if manifest else 1


def cmd_info(args) -> int:
    from galdeblend.priors import SHIPPED, Priors

    if args.prior is not None:
        print(Priors.load(args.prior).describe())
        return 0
    blocks = [
        f"shipped set {name!r} ({k + 1} of {len(SHIPPED)} of the default ensemble)\n"
        + Priors.load(name).describe()
        for k, name in enumerate(SHIPPED)
    ]
    print("\n\n".join(blocks))
    return 0


def cmd_validate(args) -> int:
    from galdeblend.validate import markdown_table, validate

    table = validate(
        args.simdir,
        args.resultsdir,
        outdir=args.out,
        match_radius_arcsec=args.match_radius,
        aperture_arcsec=args.aperture,
        priors=args.prior,
        prior_samples=args.prior_samples,
    )
    print(markdown_table(table), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galdeblend",
        description="Deblend galaxies in survey cutouts "
        "with diffusion priors learned from the observations (DDPRISM).",
        epilog="examples:\n"
        + "".join(
            e.removeprefix("examples:\n")
            for e in (
                RUN_EXAMPLES,
                LEARN_EXAMPLES,
                SIMULATE_EXAMPLES,
                INFO_EXAMPLES,
                VALIDATE_EXAMPLES,
            )
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bars or log messages"
    )
    # -q is also accepted after the subcommand; SUPPRESS keeps a -q given before it
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars or log messages",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    run = sub.add_parser(
        "run",
        parents=[quiet],
        help="deblend cutouts",
        epilog=RUN_EXAMPLES,
        formatter_class=fmt,
        description="Detect the galaxies, sample the posterior of every galaxy and of the sky, "
        "and write one posterior FITS, a summary PNG per field and summary.csv.",
    )
    run.add_argument(
        "cutouts", nargs="*", help="FITS cutouts (observations of one field are deblended together)"
    )
    run.add_argument(
        "--example", action="store_true", help="also deblend the packaged HSC + HST example field"
    )
    run.add_argument(
        "--prior",
        action="append",
        help="prior directory, or the name of a set shipped with galdeblend (default, v16, "
        "deep16); give it several times for an ensemble that shares the samples among the "
        "sets (default: the ensemble of the three shipped sets)",
    )
    run.add_argument(
        "--catalog", help="galaxy positions (a table with RA and Dec), instead of detection"
    )
    run.add_argument("--samples", type=int, help="posterior samples per source (default 16)")
    run.add_argument("--steps", type=int, help="sampler steps (default 64)")
    run.add_argument(
        "--em-laps",
        type=int,
        default=0,
        help="refine each prior set by K EM laps on these cutouts",
    )
    run.add_argument("--out", default="results", help="output directory (default: results)")
    run.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    run.add_argument(
        "--batch-size",
        type=int,
        help="posterior samples denoised at once; lower it to bound memory (default 16)",
    )
    run.add_argument(
        "--fast", action="store_true", help="bfloat16 and channels-last networks (for GPUs)"
    )
    run.add_argument(
        "--amplitude-width",
        type=float,
        help="prior width of the per-band flux redrawn from the data after sampling "
        "(default 1; inf: flat; 0: keep the diffusion samples' fluxes)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--config", help="YAML file with sampler settings (steps, sampler, tau, ...)")
    run.add_argument("--overwrite", action="store_true", help="replace existing output files")
    run.set_defaults(func=cmd_run)

    learn = sub.add_parser(
        "learn",
        parents=[quiet],
        help="learn priors from cutouts by EM",
        epilog=LEARN_EXAMPLES,
        formatter_class=fmt,
        description="Learn galaxy and sky priors from the cutouts alone; every lap is "
        "checkpointed, --resume continues a killed run. Under torchrun the processes share "
        "each lap's work.",
    )
    learn.add_argument("cutouts", nargs="+", help="FITS cutouts with galaxies")
    learn.add_argument("--blank", nargs="*", default=[], help="blank-sky FITS cutouts")
    learn.add_argument("--out", required=True, help="prior directory to write")
    learn.add_argument("--laps", type=int, default=4, help="diffusion EM laps (default 4)")
    learn.add_argument(
        "--gaussian-laps", type=int, default=3, help="Gaussian initialization laps (default 3)"
    )
    learn.add_argument("--algorithm", choices=["joint", "sequential"], default="joint")
    learn.add_argument(
        "--resume",
        action="store_true",
        help="continue after the last complete lap (a larger --laps extends a finished run)",
    )
    learn.add_argument(
        "--init",
        help="start from this prior directory, or shipped set (default, v16, deep16), "
        "instead of new priors",
    )
    learn.add_argument(
        "--bands", help="bands of the galaxy prior, comma separated (default: all observed)"
    )
    learn.add_argument(
        "--pixel-scale", type=float, default=0.05, help="arcsec per model pixel (default 0.05)"
    )
    learn.add_argument(
        "--stamp", type=int, default=48, help="galaxy stamp side in model pixels (default 48)"
    )
    learn.add_argument(
        "--psf-fwhm", type=float, default=0.07, help="model PSF FWHM in arcsec (default 0.07)"
    )
    learn.add_argument(
        "--train-steps", type=int, default=500, help="optimizer steps per lap (default 500)"
    )
    learn.add_argument("--batch-size", type=int, default=32)
    learn.add_argument(
        "--augment",
        action="store_true",
        help="train each M-step on the 8 flips and quarter turns of the posterior samples "
        "(galaxies have no preferred orientation)",
    )
    learn.add_argument(
        "--cg-iterations",
        type=int,
        default=1,
        help="conjugate-gradient iterations of each E-step's posterior denoiser (default 1, "
        "the paper's; with 1 a lap leaves the galaxies as round as it found them, with 3 it "
        "makes them more elongated, a lap taking 1.5 times as long: docs/validation.rst)",
    )
    learn.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="default: cuda when available (under torchrun: this rank's GPU)",
    )
    learn.add_argument("--seed", type=int, default=0)
    learn.set_defaults(func=cmd_learn)

    simulate = sub.add_parser(
        "simulate",
        parents=[quiet],
        help="simulate blends with truth (galsim)",
        epilog=SIMULATE_EXAMPLES,
        formatter_class=fmt,
    )
    simulate.add_argument("outdir")
    simulate.add_argument(
        "--survey", action="append", help="survey preset (repeat: hsc, hst, lsst, euclid)"
    )
    simulate.add_argument("--n-blends", type=int, default=10)
    simulate.add_argument("--n-sky", type=int, default=5)
    simulate.add_argument("--galaxy-type", choices=["parametric", "real"], default="parametric")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.set_defaults(func=cmd_simulate)

    info = sub.add_parser(
        "info",
        parents=[quiet],
        help="describe a prior directory",
        epilog=INFO_EXAMPLES,
        formatter_class=fmt,
    )
    info.add_argument(
        "prior",
        nargs="?",
        help="prior directory or shipped set name (default: every shipped set)",
    )
    info.set_defaults(func=cmd_info)

    validate = sub.add_parser(
        "validate",
        parents=[quiet],
        help="score posteriors of simulated blends against the truth and baselines",
        epilog=VALIDATE_EXAMPLES,
        formatter_class=fmt,
        description="Match true galaxies to posterior galaxies and to the sources of the "
        "photutils, SEP and (where installed) scarlet2 baselines; test the galaxy prior "
        "against the true galaxies with PQMass; print a method x metric table and write a "
        "report folder (CSV, Markdown, PNG).",
    )
    validate.add_argument("simdir", help="folder written by galdeblend simulate")
    validate.add_argument("resultsdir", help="folder written by galdeblend run on its cutouts")
    validate.add_argument("--out", help="report folder (default: RESULTSDIR/validation)")
    validate.add_argument(
        "--match-radius", type=float, default=0.4, help="match radius in arcsec (default 0.4)"
    )
    validate.add_argument(
        "--aperture",
        type=float,
        default=0.75,
        help="radius in arcsec of the photometry aperture at each true position (default 0.75)",
    )
    validate.add_argument(
        "--prior",
        help="prior directory or shipped set whose galaxy prior PQMass tests against the "
        "true galaxies (default: the shipped set 'default', v12x)",
    )
    validate.add_argument(
        "--prior-samples",
        type=int,
        default=64,
        help="galaxy-prior samples for PQMass (default 64; 0 skips the prior test)",
    )
    validate.set_defaults(func=cmd_validate)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, ``galdeblend: Category: message`` (without Python's source
    line, which means nothing to a user of the command)."""
    print(f"galdeblend: {category.__name__}: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    retain_freed_memory()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if args.quiet:
            warnings.simplefilter("ignore")
        try:
            return args.func(args)
        except GaldeblendError as err:
            print(f"galdeblend {args.command}: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
