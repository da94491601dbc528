"""Two ranks under torchrun (gloo, CPU) give the E-step samples and the M-step of one process.

The main test runs this file with ``python -m torch.distributed.run --standalone
--nproc-per-node 2``: each rank runs :func:`worker`, rank 0 saves what the ranks computed, and
the test compares it with the same computations done in its own, single process. A slow test
runs ``galdeblend learn`` the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from galdeblend import distributed
from galdeblend import em as em_module
from galdeblend.diffusion.backbones import MLP
from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.diffusion.prior import DiffusionPrior
from galdeblend.em import View, _e_step, em
from galdeblend.operators import Matrix
from galdeblend.posterior import sample_posterior
from galdeblend.simulate import simulate_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64
# E-step: 9 chunks of at most 4 observations (5 of the 17 selected in view "a", 4 of view
# "a + b"); rank 0 samples chunks 0-3, rank 1 chunks 4-8, so the split falls inside view "a".
SAMPLING = {"steps": 4, "batch_size": 4}
CHUNK_SIZE = 17
# M-step: rank 0 takes 4 rows of each minibatch of 9, rank 1 the other 5.
TRAIN = {"steps": 5, "batch_size": 9}


def views() -> list[View]:
    """5-D sources seen through random 3x5 projections: "a" alone (23 observations) and
    "a + b" (14), with a per-observation noise variance."""
    g = torch.Generator().manual_seed(0)

    def view(n: int, sources: list[str], name: str) -> View:
        ops = [Matrix(torch.randn(n, 3, 5, generator=g, dtype=DT)) for _ in sources]
        x = [torch.randn(n, 5, generator=g, dtype=DT) for _ in sources]
        var = torch.linspace(0.01, 0.1, n, dtype=DT)[:, None].expand(n, 3)
        y = sum(A.forward(x_b) for A, x_b in zip(ops, x)) + var.sqrt() * torch.randn(
            n, 3, generator=g, dtype=DT
        )
        return View(y, var, sources, ops, name=name)

    return [view(23, ["a"], "a"), view(14, ["a", "b"], "a + b")]


def diffusion_priors() -> dict[str, DiffusionPrior]:
    torch.manual_seed(0)
    return {
        k: DiffusionPrior(
            MLP(5, hidden_features=16, hidden_layers=1, emb_features=8),
            sigma_min=1e-3,
            sigma_max=30.0,
        ).double()
        for k in "ab"
    }


def e_step_priors() -> dict:
    """A Gaussian for "a" and an (untrained) network for "b"."""
    return {
        "a": GaussianPrior(torch.ones(5, dtype=DT), 0.5, sigma_max=30.0),
        "b": diffusion_priors()["b"],
    }


def e_step() -> dict[str, torch.Tensor]:
    return _e_step(views(), e_step_priors(), chunk_size=CHUNK_SIZE, sampling=SAMPLING, seed=5)


def m_step(steps: int) -> dict[str, torch.Tensor]:
    """The weights after ``steps`` optimizer steps on fixed samples (40, 5)."""
    prior = diffusion_priors()["a"]
    samples = torch.randn(40, 5, generator=torch.Generator().manual_seed(1), dtype=DT)
    prior.fit(samples, **{**TRAIN, "steps": steps}, seed=2, progress=False)
    return prior.state_dict()


def learn(checkpoint_dir: Path, *, resume: bool = False) -> dict[str, dict]:
    """One Gaussian and one diffusion EM lap; the learned weights by kind."""
    learned = em(
        views(),
        diffusion_priors(),
        laps=1,
        gaussian_laps=1,
        gaussian_rank=1,
        train=TRAIN,
        sampling=SAMPLING,
        chunk_size=CHUNK_SIZE,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        seed=3,
        progress=False,
    )
    return {kind: prior.state_dict() for kind, prior in learned.items()}


def worker(out: Path) -> None:
    """One rank: the computations of the test; rank 0 saves them to ``out/two_ranks.pt``."""
    distributed.init_from_env()
    assert distributed.world_size() == 2
    saved_laps = []
    save_lap = em_module._save_lap

    def counting_save_lap(checkpoint_dir, lap, *args):
        saved_laps.append(lap)
        save_lap(checkpoint_dir, lap, *args)

    em_module._save_lap = counting_save_lap
    results = {
        "e_step": e_step(),
        "m_step_1": m_step(1),
        "m_step_3": m_step(3),
        "em": learn(out / "checkpoints"),
        "resumed": learn(out / "resumed", resume=True),
    }
    (out / f"saved_laps_{distributed.rank()}.json").write_text(json.dumps(saved_laps))
    if distributed.is_main():
        torch.save(results, out / "two_ranks.pt")
    distributed.barrier()  # as galdeblend learn does: the ranks close the group together


def run(command: list[str], ranks: int) -> subprocess.CompletedProcess:
    """``python COMMAND...`` in ``ranks`` processes started by torchrun (in one if 1)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, *(launcher if ranks > 1 else []), *command],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def assert_weights_close(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-9, atol=1e-12, msg=name)


def test_e_step_chunks_reproduce_one_sampler_call():
    """The E-step samples chunk by chunk what one call of the sampler on the view draws."""
    all_views = views()
    priors = e_step_priors()
    samples = _e_step(all_views, priors, chunk_size=None, sampling=SAMPLING, seed=5)
    expected = {"a": [], "b": []}
    for v, view in enumerate(all_views):
        drawn = sample_posterior(
            [priors[k] for k in view.sources],
            view.y,
            view.operators,
            view.noise_variance,
            seed=5 + 7 * v,
            **SAMPLING,
        )
        for kind, x in zip(view.sources, drawn):
            expected[kind].append(x[:, 0])
    for kind in "ab":
        assert torch.equal(samples[kind], torch.cat(expected[kind]))


def test_two_ranks_give_the_single_process_results(tmp_path):
    one = {
        "e_step": e_step(),
        "m_step_1": m_step(1),
        "m_step_3": m_step(3),
        "em": learn(tmp_path / "one"),
    }
    # a run killed after its first lap, for the two ranks to resume
    shutil.copytree(tmp_path / "one", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "lap_0001")

    run([__file__, str(tmp_path)], ranks=2)
    two = torch.load(tmp_path / "two_ranks.pt")

    assert one["e_step"]["a"].shape == (CHUNK_SIZE + 14, 5)
    for kind in "ab":
        assert torch.equal(two["e_step"][kind], one["e_step"][kind])
    initial = diffusion_priors()["a"].state_dict()
    assert all(not torch.equal(one["m_step_3"][k], w) for k, w in initial.items())  # it trained
    for key in ("m_step_1", "m_step_3"):
        assert_weights_close(two[key], one[key])
    for kind in "ab":
        assert_weights_close(two["em"][kind], one["em"][kind])
        assert_weights_close(two["resumed"][kind], one["em"][kind])
    # rank 0 alone wrote the checkpoints: laps 0 and 1, then lap 1 of the resumed run
    assert json.loads((tmp_path / "saved_laps_0.json").read_text()) == [0, 1, 1]
    assert json.loads((tmp_path / "saved_laps_1.json").read_text()) == []
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["lap_0000", "lap_0001"]


@pytest.mark.slow
def test_learn_command_with_two_ranks(tmp_path):
    """``torchrun --nproc-per-node 2 -m galdeblend learn`` writes the prior set of one process."""
    manifest = simulate_dataset(
        tmp_path, surveys=("hsc",), n_blends=3, n_sky=2, seed=11, stamp_arcsec=5.4, progress=False
    )
    cutouts = {"blend": [], "sky": []}
    for scene in manifest["scenes"]:
        cutouts[scene["kind"]].append(str(tmp_path / scene["cutouts"]["hsc"]))
    learn = ["-m", "galdeblend", "learn", *cutouts["blend"], "--blank", *cutouts["sky"]]
    learn += ["--laps", "1", "--gaussian-laps", "1", "--train-steps", "10", "--batch-size", "8"]
    learn += ["--stamp", "16", "--pixel-scale", "0.1", "--psf-fwhm", "0.3", "--seed", "3"]
    run([*learn, "--out", str(tmp_path / "one"), "-q"], ranks=1)
    two = run([*learn, "--out", str(tmp_path / "two"), "-q"], ranks=2)

    assert two.stdout.count("priors written to") == 1  # by rank 0
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["lap_0000", "lap_0001"]
    header = json.loads((tmp_path / "one" / "priors.json").read_text())
    assert json.loads((tmp_path / "two" / "priors.json").read_text()) == header
    for kind in ("galaxy", "sky"):
        one_weights = load_file(tmp_path / "one" / kind / "weights.safetensors")
        two_weights = load_file(tmp_path / "two" / kind / "weights.safetensors")
        for name, tensor in one_weights.items():  # float32: rounding after 10 Adam steps
            torch.testing.assert_close(two_weights[name], tensor, rtol=0, atol=1e-4, msg=name)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
