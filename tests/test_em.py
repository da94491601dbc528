"""EM: Gaussian EM on a contrastive toy, joint and sequential plans, kill-and-resume."""

import shutil

import pytest
import torch

from galdeblend.em import lap_plan
from galdeblend.engine import MLP, DiffusionPrior, GaussianPrior, View, em
from galdeblend.errors import InputError
from galdeblend.operators import Matrix

DT = torch.float64


def contrastive_toy(N=1500, seed=0):
    """View 1 sees source a; view 2 sees a + b; each through random 3x4 projections."""
    g = torch.Generator().manual_seed(seed)
    truth = {
        "a": GaussianPrior(
            torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=DT),
            0.05,
            torch.tensor([[1.0], [0.5], [-0.5], [0.2]], dtype=DT),
            sigma_max=30.0,
        ),
        "b": GaussianPrior(
            torch.tensor([-0.5, 0.0, 1.0, 2.0], dtype=DT),
            0.05,
            torch.tensor([[0.0], [0.8], [0.3], [-0.6]], dtype=DT),
            sigma_max=30.0,
        ),
    }

    def projections():
        M = torch.randn(N, 3, 4, generator=g, dtype=DT)
        return Matrix(M / M.norm(dim=2, keepdim=True))

    var = 1e-3
    A1, A2, B2 = projections(), projections(), projections()
    xa1 = truth["a"].sample(N, generator=g)
    xa2, xb2 = truth["a"].sample(N, generator=g), truth["b"].sample(N, generator=g)
    noise = lambda: var**0.5 * torch.randn(N, 3, generator=g, dtype=DT)  # noqa: E731
    views = [
        View(A1.forward(xa1) + noise(), var, ["a"], [A1], name="a only"),
        View(A2.forward(xa2) + B2.forward(xb2) + noise(), var, ["a", "b"], [A2, B2], name="a + b"),
    ]
    return truth, views


def rel_err(A, B):
    return float(torch.linalg.norm(A - B) / torch.linalg.norm(B))


@pytest.mark.parametrize("algorithm", ["joint", "sequential"])
def test_gaussian_em_recovers_both_sources(algorithm):
    truth, views = contrastive_toy()
    priors = {k: GaussianPrior(torch.zeros(4, dtype=DT), 1.0, sigma_max=30.0) for k in "ab"}
    learned = em(
        views,
        priors,
        laps=0,
        gaussian_laps=24,
        algorithm=algorithm,
        gaussian_rank=1,
        sampling=dict(steps=32, sampler="ddim", cg_iterations=3, batch_size=1500),
        progress=False,
    )
    for k in "ab":
        assert torch.linalg.norm(learned[k].mean - truth[k].mean) < 0.1
        assert rel_err(learned[k].covariance(), truth[k].covariance()) < 0.15


@pytest.mark.parametrize("start_variance", [1.0, 0.01])
def test_unobserved_coordinates_keep_the_start_variance(start_variance):
    """The posterior is the prior wherever no operator reaches, so a Gaussian lap hands the
    start's variance on to the learned prior there (why a smooth start avoids a texture)."""
    g = torch.Generator().manual_seed(0)
    N = 1000
    A = Matrix(torch.eye(4, dtype=DT)[:2])  # sees coordinates 0 and 1 only
    y = A.forward(torch.randn(N, 4, generator=g, dtype=DT))
    y = y + 0.03 * torch.randn(N, 2, generator=g, dtype=DT)
    start = GaussianPrior(
        torch.zeros(4, dtype=DT),
        torch.tensor([1.0, 1.0, start_variance, start_variance], dtype=DT),
        sigma_max=30.0,
    )
    learned = em(
        [View(y, 0.03**2, ["a"], [A])],
        {"a": diffusion_priors()["a"]},
        laps=0,
        gaussian_laps=1,
        init={"a": start},
        gaussian_rank=0,
        sampling=dict(steps=64, sampler="pc", cg_iterations=3, batch_size=N),
        progress=False,
    )["a"]
    torch.testing.assert_close(learned.cov_diag[2:], start.cov_diag[2:], rtol=0.12, atol=0)
    torch.testing.assert_close(learned.cov_diag[:2], torch.ones(2, dtype=DT), rtol=0.12, atol=0)


def test_gaussian_rank_per_kind():
    _, views = contrastive_toy(N=200)
    priors = {k: GaussianPrior(torch.zeros(4, dtype=DT), 1.0, sigma_max=30.0) for k in "ab"}
    options = dict(laps=0, gaussian_laps=1, sampling=dict(steps=4), progress=False)
    learned = em(views, priors, gaussian_rank={"a": 2, "b": 1}, **options)
    assert (learned["a"].rank, learned["b"].rank) == (2, 1)
    with pytest.raises(InputError, match=r"no rank for the kinds \['b'\]"):
        em(views, priors, gaussian_rank={"a": 2}, **options)


def test_lap_plans():
    assert lap_plan(["a", "b"], laps=1, gaussian_laps=2, algorithm="joint", order=None) == [
        (("a", "b"), "gaussian"),
        (("a", "b"), "gaussian"),
        (("a", "b"), "diffusion"),
    ]
    assert lap_plan(
        ["a", "b"], laps=1, gaussian_laps=1, algorithm="sequential", order=["b", "a"]
    ) == [(("b",), "gaussian"), (("b",), "diffusion"), (("a",), "gaussian"), (("a",), "diffusion")]
    with pytest.raises(InputError, match="algorithm: must be"):
        lap_plan(["a"], laps=1, gaussian_laps=1, algorithm="gibbs", order=None)


def diffusion_priors():
    torch.manual_seed(0)
    return {
        k: DiffusionPrior(
            MLP(4, hidden_features=32, hidden_layers=1, emb_features=16),
            sigma_min=1e-3,
            sigma_max=30.0,
        ).double()
        for k in "ab"
    }


def test_killed_run_resumes_to_the_same_priors(tmp_path):
    _, views = contrastive_toy(N=300)
    full = run(views, tmp_path / "full")
    laps = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert laps == ["lap_0000", "lap_0001", "lap_0002", "lap_0003"]
    # A kill during lap 3 leaves laps 0-2 complete and a partial lap 3 behind.
    shutil.copytree(tmp_path / "full", tmp_path / "killed")
    shutil.rmtree(tmp_path / "killed" / "lap_0003")
    (tmp_path / "killed" / ".lap_0003.partial").mkdir()
    resumed = run(views, tmp_path / "killed", resume=True)
    for k in "ab":
        for (name, a), b in zip(full[k].state_dict().items(), resumed[k].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def run(views, checkpoint_dir, resume=False, laps=2):
    return em(
        views,
        diffusion_priors(),
        laps=laps,
        gaussian_laps=2,
        gaussian_rank=1,
        train=dict(steps=30, batch_size=64),
        sampling=dict(steps=8, batch_size=256),
        chunk_size=200,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        seed=3,
        progress=False,
    )


def test_finished_run_extends_to_the_longer_plan(tmp_path):
    """A finished 2 + 1 lap run resumed with laps=2 gives the 2 + 2 lap run's priors; a
    checkpoint of another plan or seed is refused."""
    _, views = contrastive_toy(N=300)
    full = run(views, tmp_path / "full")
    run(views, tmp_path / "short", laps=1)
    extended = run(views, tmp_path / "short", resume=True)
    for k in "ab":
        for (name, a), b in zip(full[k].state_dict().items(), extended[k].state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    resume = dict(checkpoint_dir=tmp_path / "full", resume=True, progress=False)
    with pytest.raises(InputError, match=r"lap 2 of the checkpoint .* does not match"):
        em(views, diffusion_priors(), laps=2, gaussian_laps=3, seed=3, **resume)
    with pytest.raises(InputError, match=r"seed 3, .* does not match this run \(seed 4"):
        em(views, diffusion_priors(), laps=2, gaussian_laps=2, seed=4, **resume)
    with pytest.raises(InputError, match="beyond its 3 laps"):
        em(views, diffusion_priors(), laps=1, gaussian_laps=2, seed=3, **resume)


def test_bad_views():
    _, views = contrastive_toy(N=10)
    priors = {"a": GaussianPrior(torch.zeros(4, dtype=DT), 1.0)}
    with pytest.raises(
        InputError, match=r"views\[1\] \(a \+ b\): no prior for source kind\(s\) \['b'\]"
    ):
        em(views, priors, laps=0, gaussian_laps=1, progress=False)
    with pytest.raises(InputError, match="resume: needs checkpoint_dir"):
        em(views[:1], priors, laps=0, gaussian_laps=1, resume=True, progress=False)


def test_view_to_moves_observations_noise_and_operators():
    # The meta device stands in for a GPU: every tensor of the view must land there.
    _, views = contrastive_toy(N=8)
    view = View(views[1].y, torch.full((8, 1), 0.01), views[1].sources, views[1].operators)
    moved = view.to("meta")
    assert moved.y.device.type == "meta"
    assert moved.noise_variance.device.type == "meta"
    assert [A.M.device.type for A in moved.operators] == ["meta", "meta"]
    assert moved.sources == view.sources and len(moved) == len(view)
    assert view.y.device.type == "cpu"  # the original is left as it was
