"""End-to-end tests of the ``galdeblend`` command line on tiny inputs.

The inputs are made here: a few simulated HSC cutouts of 32x32 pixels
(:func:`galdeblend.simulate.simulate_dataset`) and an untrained tiny prior
(:func:`galdeblend.learn.new_priors` on a 16x16 frame). Most commands run in-process through
:func:`galdeblend.cli.main`; the real entry point (``python -m galdeblend``) is exercised by a
subprocess, and so is ``learn``, which must survive a SIGKILL.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from safetensors.numpy import load_file

import galdeblend
import galdeblend.cli
from galdeblend.cli import main
from galdeblend.errors import DataWarning, InputError
from galdeblend.io import read_cutouts, read_posterior
from galdeblend.learn import new_priors
from galdeblend.priors import Priors, default_ensemble, default_priors_path, load_ensemble
from galdeblend.scene import PriorFrame
from galdeblend.simulate import simulate_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
BANDS = ("g", "r", "i", "z", "y")
TINY_FRAME = PriorFrame((5, 16, 16), 0.1, BANDS, 0.3)
LEARN_OPTIONS = (
    "--laps",
    "2",
    "--gaussian-laps",
    "1",
    "--train-steps",
    "30",
    "--batch-size",
    "8",
    "--stamp",
    "16",
    "--pixel-scale",
    "0.1",
    "--psf-fwhm",
    "0.3",
    "--seed",
    "3",
    "-q",
)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    """An untrained tiny prior set (galaxy U-Net on a (5, 16, 16) frame, Gaussian sky)."""
    directory = tmp_path_factory.mktemp("tiny_prior")
    new_priors(TINY_FRAME, channels=(8, 16), attention_levels=(1,)).save(directory)
    return directory


@pytest.fixture(scope="module")
def sims(tmp_path_factory) -> dict[str, list[Path]]:
    """Three 32x32 HSC blends and two blank-sky cutouts, by kind (``"blend"``, ``"sky"``)."""
    directory = tmp_path_factory.mktemp("sims")
    manifest = simulate_dataset(
        directory, surveys=("hsc",), n_blends=3, n_sky=2, seed=11, stamp_arcsec=5.4, progress=False
    )
    files: dict[str, list[Path]] = {"blend": [], "sky": []}
    for scene in manifest["scenes"]:
        files[scene["kind"]].append(directory / scene["cutouts"]["hsc"])
    assert fits.getdata(files["blend"][0], "IMAGE").shape == (5, 32, 32)
    return files


def fast_run(
    prior: Path, out: Path, *cutouts: Path | str, extra: tuple[str, ...] = ()
) -> list[str]:
    """Arguments of a quick ``galdeblend run`` (2 samples, 2 sampler steps)."""
    return [
        "run",
        *map(str, cutouts),
        "--prior",
        str(prior),
        "--samples",
        "2",
        "--steps",
        "2",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def posterior_path(out: Path, cutout: Path) -> Path:
    return out / f"{cutout.stem}_posterior.fits"


def subprocess_env() -> dict[str, str]:
    """One thread, and the galdeblend of this checkout first on the path."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def check_posterior_file(path: Path, cutout: Path, n_samples: int) -> list[int]:
    """Assert the documented layout of a posterior FITS; returns the source ids."""
    observation = read_cutouts(cutout)[0]
    with fits.open(path) as hdul:
        primary = hdul["PRIMARY"].header
        assert hdul[0].data is None
        assert primary["GDBVERS"] == galdeblend.__version__
        assert primary["NOBS"] == 1 and primary["INPUT0"] == str(cutout)
        sources = hdul["SOURCES"].data
        ids = [int(i) for i in sources["ID"]]
        assert primary["NSRC"] == len(ids)
        kinds = [k.strip() for k in sources["KIND"]]
        assert "galaxy" in kinds and "sky" in kinds
        for source_id, kind in zip(ids, kinds):
            samples = hdul[f"SRC{source_id}_SAMPLES"].data
            mean = hdul[f"SRC{source_id}_MEAN"].data
            std = hdul[f"SRC{source_id}_STD"].data
            assert samples.shape[0] == n_samples
            assert hdul[f"SRC{source_id}_SAMPLES"].header["NSAMPLE"] == n_samples
            assert mean.shape == std.shape == samples.shape[1:]
            if kind == "galaxy":
                assert mean.shape == TINY_FRAME.shape
            tolerance = {"rtol": 1e-6, "atol": 1e-9 * np.abs(samples).max()}
            np.testing.assert_allclose(mean, samples.mean(0), **tolerance)
            np.testing.assert_allclose(std, samples.std(0, ddof=1), **tolerance)
        data = hdul["OBS0_DATA"].data
        model = hdul["OBS0_MODEL"].data
        residual = hdul["OBS0_RESIDUAL"].data
        mask = hdul["OBS0_MASK"].data.astype(bool)
        np.testing.assert_array_equal(data, observation.data)
        np.testing.assert_array_equal(mask, observation.mask)
        assert np.isfinite(model).all() and np.abs(model).max() > 0
        np.testing.assert_allclose(
            residual, np.where(mask, 0.0, data - model), rtol=1e-6, atol=1e-6 * np.abs(data).max()
        )
    return ids


def read_summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_posterior_summary_png_and_table(tiny_prior, sims, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(fast_run(tiny_prior, out, *sims["blend"])) == 0
    assert f"{len(sims['blend'])} field(s) written" in capsys.readouterr().out
    rows = read_summary(out)
    for cutout in sims["blend"]:
        ids = check_posterior_file(posterior_path(out, cutout), cutout, n_samples=2)
        assert (out / f"{cutout.stem}_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        field_rows = [r for r in rows if r["field"] == cutout.stem]
        assert [int(r["id"]) for r in field_rows] == ids
        galaxy_fluxes = [
            float(r[f"flux_{b}"]) for r in field_rows if r["kind"] == "galaxy" for b in BANDS
        ]
        assert galaxy_fluxes and np.isfinite(galaxy_fluxes).all()
    assert {r["field"] for r in rows} == {c.stem for c in sims["blend"]}
    expected = [
        f"{c.stem}_{suffix}" for c in sims["blend"] for suffix in ("posterior.fits", "summary.png")
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, "summary.csv"])


def test_entry_point_runs_as_a_module(tiny_prior, sims, tmp_path):
    out = tmp_path / "out"
    cutout = sims["blend"][0]
    done = subprocess.run(
        [sys.executable, "-m", "galdeblend", *fast_run(tiny_prior, out, cutout)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "1 field(s) written" in done.stdout and "0 failure(s)" in done.stdout
    check_posterior_file(posterior_path(out, cutout), cutout, n_samples=2)


def test_second_run_refuses_without_overwrite(tiny_prior, sims, tmp_path, capsys):
    out = tmp_path / "out"
    cutout = sims["blend"][1]
    target = posterior_path(out, cutout)
    assert main(fast_run(tiny_prior, out, cutout)) == 0
    first = target.read_bytes()
    capsys.readouterr()

    assert main(fast_run(tiny_prior, out, cutout, extra=("--seed", "1"))) != 0
    err = capsys.readouterr().err
    assert str(target) in err and "--overwrite" in err
    assert target.read_bytes() == first

    assert main(fast_run(tiny_prior, out, cutout, extra=("--seed", "1", "--overwrite"))) == 0
    with fits.open(target) as hdul:
        assert json.loads(hdul[0].header["PROVJSON"])["seed"] == 1
        new_samples = hdul["SRC0_SAMPLES"].data
    with fits.open(io.BytesIO(first)) as hdul:
        assert not np.array_equal(hdul["SRC0_SAMPLES"].data, new_samples)
    check_posterior_file(target, cutout, n_samples=2)


def test_run_with_two_prior_sets_pools_their_samples(tiny_prior, sims, tmp_path, caplog):
    """``--prior`` twice: the posterior holds the first set's samples of a run with it alone,
    then the second's, and names both sets; ``--em-laps`` refines each set."""
    other = tmp_path / "other_prior"
    new_priors(TINY_FRAME, channels=(8, 16), attention_levels=(1,), seed=5).save(other)
    cutout = sims["blend"][0]
    keep = ("--amplitude-width", "0", "--seed", "2")
    pooled, alone = tmp_path / "pooled", tmp_path / "alone"
    argv = fast_run(tiny_prior, pooled, cutout, extra=("--prior", str(other), *keep))
    argv[argv.index("--samples") + 1] = "3"
    assert main(argv) == 0
    assert main(fast_run(tiny_prior, alone, cutout, extra=keep)) == 0
    ids = check_posterior_file(posterior_path(pooled, cutout), cutout, n_samples=3)
    with (
        fits.open(posterior_path(pooled, cutout)) as both,
        fits.open(posterior_path(alone, cutout)) as first,
    ):
        provenance = json.loads(both[0].header["PROVJSON"])
        assert provenance["priors"] == f"{tiny_prior} + {other}"
        assert provenance["ensemble_samples"] == [2, 1]
        for i in ids:
            samples = both[f"SRC{i}_SAMPLES"].data
            np.testing.assert_array_equal(samples[:2], first[f"SRC{i}_SAMPLES"].data)
            assert not np.allclose(samples[2], samples[0])

    config = tmp_path / "em.yaml"
    config.write_text("em:\n  train: {steps: 2, batch_size: 2}\n  sampling: {steps: 2}\n")
    refine = fast_run(tiny_prior, tmp_path / "em", cutout, extra=("--prior", str(other), *keep))
    with caplog.at_level(logging.INFO, logger="galdeblend"):
        assert main([*refine, "--em-laps", "1", "--config", str(config)]) == 0
    assert "refining 2 prior set(s) by 1 EM lap(s) each" in caplog.text
    with (
        fits.open(posterior_path(tmp_path / "em", cutout)) as refined,
        fits.open(posterior_path(alone, cutout)) as first,
    ):
        assert not np.allclose(refined["SRC0_SAMPLES"].data[:2], first["SRC0_SAMPLES"].data)


def test_corrupt_fits_fails_alone(tiny_prior, sims, tmp_path, capsys):
    bad = tmp_path / "bad.fits"
    bad.write_text("this is a text file, not FITS\n")
    out = tmp_path / "out"
    good = sims["blend"][:2]
    assert main(fast_run(tiny_prior, out, good[0], bad, good[1])) != 0
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "bad.fits" in failed[0]
    assert "2 field(s) written" in captured.out and "1 failure(s)" in captured.out
    for cutout in good:
        check_posterior_file(posterior_path(out, cutout), cutout, n_samples=2)
    assert {r["field"] for r in read_summary(out)} == {c.stem for c in good}
    assert not list(out.glob("bad*"))


def test_config_file_sets_sampler_options(tiny_prior, sims, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("steps: 2\nsamples: 3\ndetection:\n  max_sources: 0\n")
    out = tmp_path / "out"
    cutout = sims["blend"][2]
    assert (
        main(
            [
                "run",
                str(cutout),
                "--prior",
                str(tiny_prior),
                "--config",
                str(config),
                "--batch-size",
                "2",
                "--fast",
                "--amplitude-width",
                "0.5",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    with fits.open(posterior_path(out, cutout)) as hdul:
        provenance = json.loads(hdul[0].header["PROVJSON"])
    assert provenance["steps"] == 2 and provenance["n_samples"] == 3 and provenance["fast"]
    assert provenance["amplitude_width"] == 0.5
    # The detection settings reach detect_sources: this blend has one galaxy detected by
    # default (the other tests), none with max_sources 0.
    assert provenance["detection"] == {"max_sources": 0}
    result = read_posterior(posterior_path(out, cutout))
    assert len(result.galaxies) == 0
    assert {s.kind for s in result.instances} == {"sky"}
    assert all(s.samples.shape[0] == 3 for s in result.instances)


@pytest.mark.parametrize(
    ("text", "named"),
    [("steps: 2\nstepz: 4\n", "stepz"), ("detection:\n  max_source: 3\n", "max_source")],
)
def test_config_file_unknown_key_is_named(tiny_prior, sims, tmp_path, capsys, text, named):
    config = tmp_path / "cfg.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                str(sims["blend"][0]),
                "--prior",
                str(tiny_prior),
                "--config",
                str(config),
                "--out",
                str(out),
                "-q",
            ]
        )
        != 0
    )
    err = capsys.readouterr().err
    assert named in err and str(config) in err
    assert not out.exists()


def test_info_describes_the_prior(tiny_prior, capsys):
    assert main(["info", str(tiny_prior)]) == 0
    text = capsys.readouterr().out
    assert "16x16 px" in text and '0.1"/px' in text and "bands g, r, i, z, y" in text
    assert "galaxy: DiffusionPrior (UNet), shape (5, 16, 16)" in text
    assert "sky: GaussianPrior" in text


def test_info_shortens_long_lists_and_rounds_floats(tmp_path, capsys):
    """The shipped set records its 288 training inputs and full-precision figures: info
    shows a list's first two entries, a count of the rest and the last, and 4 digits."""
    priors = new_priors(TINY_FRAME, channels=(8, 16), attention_levels=(1,))
    priors.metadata = {
        "training": {"inputs": [f"scene {i}" for i in range(100)], "laps": [1, 2, 3]},
        "validation": {"coverage": 0.123456789},
    }
    priors.save(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert '"inputs": ["scene 0", "scene 1", "... 97 more", "scene 99"]' in text
    assert "scene 50" not in text
    assert '"laps": [1, 2, 3]' in text and '"coverage": 0.1235}' in text


def test_info_on_a_folder_without_priors_fails(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) != 0
    assert f"{tmp_path}: not a galdeblend prior set" in capsys.readouterr().err


@pytest.mark.parametrize("quiet", [False, True])
def test_warnings_are_one_line_each(monkeypatch, capsys, quiet):
    def warn(args):
        warnings.warn("Cut_HSC.fits: the PSF looks truncated", DataWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(galdeblend.cli, "cmd_info", warn)
    assert main(["info", *(["-q"] if quiet else [])]) == 0
    expected = "" if quiet else "galdeblend: DataWarning: Cut_HSC.fits: the PSF looks truncated\n"
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize("command", [[], ["run"], ["learn"], ["simulate"], ["info"]])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    for name in command or ["run", "learn", "simulate", "info"]:
        assert f"  galdeblend {name}" in text


def test_quiet_flag_before_or_after_the_command():
    from galdeblend.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["-q", "info"]).quiet
    assert parser.parse_args(["info", "-q"]).quiet
    assert not parser.parse_args(["info"]).quiet


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    """Poll until ``path`` exists; fail if the process ends first or time runs out."""
    end = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(
                f"learn ended (status {process.returncode}) before {path} appeared: "
                f"{process.stderr.read()}"
            )
        if time.monotonic() > end:
            process.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def prior_tensors(directory: Path) -> dict[str, dict[str, np.ndarray]]:
    return {kind: load_file(directory / kind / "weights.safetensors") for kind in ("galaxy", "sky")}


def test_learn_killed_mid_lap_resumes_to_the_same_priors(sims, tmp_path):
    inputs = [*map(str, sims["blend"]), "--blank", *map(str, sims["sky"])]
    command = [sys.executable, "-m", "galdeblend", "learn", *inputs, *LEARN_OPTIONS]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    lap0 = killed / "checkpoints" / "lap_0000"
    options = {
        "env": subprocess_env(),
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
    }
    # the uninterrupted reference runs alongside the killed run and its resumption
    reference = subprocess.Popen([*command, "--out", str(straight)], **options)
    try:
        victim = subprocess.Popen([*command, "--out", str(killed)], **options)
        try:
            wait_for(lap0 / "state.json", victim, timeout=300)
            time.sleep(0.5)  # into lap 1: an E-step and 30 training steps
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=30)
        finally:
            victim.kill()
        assert victim.returncode == -signal.SIGKILL
        assert not (killed / "priors.json").exists()
        assert not (killed / "checkpoints" / "lap_0001").exists(), "killed too late: lap 1 finished"
        lap0_inode = lap0.stat().st_ino

        resumed = subprocess.run(
            [*command, "--out", str(killed), "--resume"],
            capture_output=True,
            **{k: options[k] for k in ("env", "text")},
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr
        _, stderr = reference.communicate(timeout=600)
        assert reference.returncode == 0, stderr
    finally:
        reference.kill()

    assert lap0.stat().st_ino == lap0_inode  # the resumed run started after lap 0
    laps = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert laps == ["lap_0000", "lap_0001", "lap_0002"]
    expected, got = prior_tensors(straight), prior_tensors(killed)
    for kind in ("galaxy", "sky"):
        assert sorted(got[kind]) == sorted(expected[kind])
        for name, tensor in expected[kind].items():
            assert got[kind][name].dtype == tensor.dtype
            assert got[kind][name].tobytes() == tensor.tobytes(), f"{kind} {name} differs"
    # both runs started from these weights and trained them
    untrained = new_priors(TINY_FRAME, seed=3)["galaxy"].tensors()
    assert any(not np.array_equal(untrained[k].numpy(), v) for k, v in got["galaxy"].items())
    header = json.loads((killed / "priors.json").read_text())
    assert header["metadata"]["training"]["laps"] == 2
    assert header == json.loads((straight / "priors.json").read_text())


def test_learn_augment_and_cg_iterations_reach_the_laps(sims, tmp_path, capsys):
    """``--augment`` and ``--cg-iterations`` are recorded with the settings and the priors
    train; fewer than one CG iteration is refused."""
    out = tmp_path / "augmented"
    options = list(LEARN_OPTIONS)
    options[options.index("--laps") + 1] = "1"  # one Gaussian lap, then one diffusion lap
    inputs = [*map(str, sims["blend"]), "--blank", *map(str, sims["sky"])]
    argv = ["learn", *inputs, *options, "--augment", "--out", str(out)]
    assert main([*argv, "--cg-iterations", "2"]) == 0
    header = json.loads((out / "priors.json").read_text())
    assert header["metadata"]["training"]["train"] == {
        "steps": 30, "batch_size": 8, "augment": True
    }  # fmt: skip
    assert header["metadata"]["training"]["sampling"]["cg_iterations"] == 2
    assert main([*argv, "--cg-iterations", "0"]) != 0
    assert "--cg-iterations must be at least 1, got 0" in capsys.readouterr().err
    untrained = new_priors(TINY_FRAME, seed=3)["galaxy"].tensors()
    learned = prior_tensors(out)["galaxy"]
    assert any(not np.array_equal(untrained[k].numpy(), v) for k, v in learned.items())


def check_example_run(out: Path, *prior: str) -> dict:
    """Run the packaged HSC + HST example quickly; returns the provenance of its posterior."""
    args = ["run", "--example", *prior, "--samples", "2", "--steps", "2", "--out", str(out), "-q"]
    assert main(args) == 0
    assert (out / "summary.csv").is_file()
    posteriors = list(out.glob("*_posterior.fits"))
    assert [p.name for p in posteriors] == ["Cut_HSC_posterior.fits"]
    with fits.open(posteriors[0]) as hdul:
        header = hdul[0].header
        assert header["NOBS"] == 2  # HSC and HST observations of one field
        assert [Path(header[f"INPUT{i}"]).name for i in (0, 1)] == ["Cut_HSC.fits", "Cut_HST.fits"]
        assert hdul["OBS0_DATA"].header["BAND1"] == "g"
        assert hdul["OBS1_DATA"].header["BAND1"] == "F814W"
        return json.loads(header["PROVJSON"])


def test_run_example_with_a_tiny_prior(tmp_path):
    prior = tmp_path / "prior"
    frame = PriorFrame((6, 16, 16), 0.05, (*BANDS, "F814W"), 0.07)  # model PSF narrower than HST's
    new_priors(frame, channels=(8, 16), attention_levels=(1,)).save(prior)
    assert check_example_run(tmp_path / "out", "--prior", str(prior))["priors"] == str(prior)


@pytest.mark.skipif(
    not (default_priors_path() / "priors.json").is_file(),
    reason=f"the shipped default priors are not built yet (no "
    f"{default_priors_path() / 'priors.json'}; run data_recipes/default_priors.py)",
)
def test_the_shipped_sets_make_the_default_ensemble(capsys):
    sets = load_ensemble(default_ensemble())
    names = [s.name for s in sets]
    assert len(set(names)) == 3 and names[0] == Priors.load().name
    assert [Priors.load(n).name for n in ("default", "v16", "deep16")] == names
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.count("shipped set") == 3 and all(f"name: {n}" in out for n in names)
    with pytest.raises(InputError, match=r"no shipped prior set 'v99'.*'deep16'"):
        default_priors_path("v99")


def test_a_directory_named_like_a_shipped_set_is_read_first(tmp_path, monkeypatch):
    new_priors(TINY_FRAME, channels=(8, 16), attention_levels=(1,)).save(tmp_path / "v16")
    monkeypatch.chdir(tmp_path)
    assert Priors.load("v16").galaxy_frame == TINY_FRAME
    assert Priors.load("deep16").galaxy_frame != TINY_FRAME


@pytest.mark.skipif(
    not (default_priors_path() / "priors.json").is_file(),
    reason=f"the shipped default priors are not built yet (no "
    f"{default_priors_path() / 'priors.json'}; run data_recipes/default_priors.py)",
)
def test_run_example_with_shipped_priors(tmp_path):
    """Without --prior, the three shipped sets deblend as an ensemble."""
    provenance = check_example_run(tmp_path / "out")
    names = [Priors.load(name).name for name in ("default", "v16", "deep16")]
    assert provenance["priors"] == " + ".join(names)
    assert provenance["ensemble_samples"] == [1, 1, 0]


def test_a_truth_file_given_as_cutout_is_named_as_such(sims):
    truth = sims["blend"][0].with_name(sims["blend"][0].name.replace("_hsc.fits", "_truth.fits"))
    assert truth.exists()
    with pytest.raises(InputError, match="simulation truth file, not a cutout"):
        read_cutouts(truth)


@pytest.mark.parametrize("slash", ["", "/"])
def test_simulate_prints_a_run_command_that_matches_its_files(tmp_path, capsys, slash):
    outdir = f"{tmp_path / 'sims'}{slash}"
    assert main(["simulate", outdir, "--n-blends", "1", "--n-sky", "0", "--seed", "2", "-q"]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    patterns = hint.split("galdeblend run ")[1].split(" --out")[0].split()
    assert "//" not in hint
    assert [sorted(glob.glob(p)) for p in patterns] == [
        [str(tmp_path / "sims" / "blend_0000_hsc.fits")]
    ]
