"""The 1-D manifold contrastive benchmark of DDPRISM (arXiv:2510.05205, Sec. 4.1).

Each source ``b`` lies on a random smooth curve in R^5: ``x = f_b(z)``, ``z ~ U(0, 1)``,
every coordinate of ``f_b`` a sum of sinusoids of frequencies ``1..K`` with uniform
random amplitudes, rates and phases, damped by ``k^-alpha_b`` (``alpha = 3, 4, 5``;
``K = ceil(1000^(1 / alpha))``), then scaled coordinate-wise onto ``[-2, 2]``. View
``k`` observes ``y = A (x_1 + ... + x_k) + n`` with ``A`` a random 3x5 Gaussian matrix
with unit-norm rows drawn for each observation (shared by the sources of that
observation, as in the paper's code) and ``n ~ N(0, 0.01^2 I)``. Each view has its
own independent draws.

Methods, each scored by the PSNR (peak range 4) of one posterior sample of the
target source (the last one) per held-out observation of the last view:

- joint: DDPRISM, :func:`galdeblend.engine.em` with ``algorithm="joint"`` (Gaussian
  laps, then diffusion laps with MLP priors), evaluated by joint posterior sampling;
- gibbs: the same EM, but each E-step (and the evaluation) samples one source at a
  time given the current samples of the others, whose contributions are subtracted
  from ``y``, for ``gibbs_sweeps`` sweeps after a draw from the prior;
- pcpca: :class:`galdeblend.baselines.PCPCA` fitted with view ``S`` as target and
  view ``S - 1`` as background, posterior samples of its target-specific signal.

Usage::

    python benchmarks/manifold_1d.py                 # reduced scale, CPU
    python benchmarks/manifold_1d.py --full          # the paper's scale, GPU
    python benchmarks/manifold_1d.py --sources 2 --seed 1
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from galdeblend.allocator import retain_freed_memory
from galdeblend.baselines import PCPCA
from galdeblend.engine import (
    MLP,
    DiffusionPrior,
    GaussianPrior,
    View,
    em,
    sample_posterior,
    sample_prior,
)
from galdeblend.operators import Matrix

FEATURES, OBS_FEATURES = 5, 3
NOISE_STD = 0.01
PEAK = 4.0
ALPHAS = (3.0, 4.0, 5.0)
SIGMA_MIN, SIGMA_MAX = 1e-3, 10.0
PAPER_PSNR = {"joint": {2: 38.27}, "gibbs": {2: 12.66}, "pcpca": {2: 9.35}}
METHODS = ("joint", "gibbs", "pcpca")


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark run (per number of sources where a pair is given)."""

    observations: int  # per view
    test: int  # held-out observations of the last view
    gaussian_laps: int
    laps: tuple[int, int]  # diffusion laps of the joint method for 2 and 3 sources
    gibbs_laps: tuple[int, int]  # the same for the Gibbs variant (its E-step costs more)
    train_steps: int  # per diffusion lap
    batch_size: int
    lr: float
    sampler_steps: int  # E-step
    eval_steps: int  # posterior sampling of the held-out observations
    hidden_features: int
    hidden_layers: int
    gibbs_sweeps: int
    # The observations have 3 values: 3 CG iterations solve MMPS's linear system exactly.
    cg_iterations: int = 3
    gaussian_rank: int = 2
    pcpca_rank: int = 5
    pcpca_gamma: float = 0.3


REDUCED = Scale(
    observations=1024,
    test=1024,
    gaussian_laps=4,
    laps=(32, 12),
    gibbs_laps=(8, 4),
    train_steps=600,
    batch_size=256,
    lr=1e-3,
    sampler_steps=32,
    eval_steps=256,
    hidden_features=64,
    hidden_layers=3,
    gibbs_sweeps=1,
)
# The paper's public configuration: 65536 observations, 16 Gaussian laps, MLP 3 x 256, 65536
# training steps of batch 1024 per lap, 16384 predictor-corrector steps (the Gibbs sweeps
# and the PCPCA settings are ours).
FULL = Scale(
    observations=65536,
    test=16384,
    gaussian_laps=16,
    laps=(32, 64),
    gibbs_laps=(32, 64),
    train_steps=65536,
    batch_size=1024,
    lr=1e-3,
    sampler_steps=16384,
    eval_steps=16384,
    hidden_features=256,
    hidden_layers=3,
    gibbs_sweeps=4,
)


def random_manifold(
    alpha: float, *, seed: int, features: int = FEATURES, precision: float = 1e-3
) -> Callable:
    """A random smooth curve ``f: [0, 1] -> [-2, 2]^features``.

    Parameters
    ----------
    alpha : float
        Smoothness: amplitudes decay as ``k^-alpha`` over frequencies ``k = 1..K``,
        ``K = ceil(precision^(-1 / alpha))``.
    seed : int

    Returns
    -------
    callable
        ``f(z)`` mapping ``(N,)`` to ``(N, features)``.
    """
    g = torch.Generator().manual_seed(seed)
    K = math.ceil(precision ** (-1.0 / alpha))
    k = torch.arange(1, K + 1, dtype=torch.float64)
    amplitude, rate, phase = torch.rand(3, features, K, generator=g, dtype=torch.float64)

    def raw(z: Tensor) -> Tensor:
        angle = 2 * math.pi * (k * rate * z.double()[:, None, None] + phase)
        return (amplitude * k**-alpha * torch.sin(angle)).sum(-1)

    grid = raw(torch.linspace(0, 1, 8193, dtype=torch.float64))
    low, high = grid.min(0).values, grid.max(0).values
    return lambda z: (PEAK * (raw(z) - low) / (high - low) - PEAK / 2).float()


def projections(n: int, generator: torch.Generator) -> Matrix:
    """``n`` random 3x5 matrices with unit-norm rows."""
    M = torch.randn(n, OBS_FEATURES, FEATURES, generator=generator)
    return Matrix(M / M.norm(dim=2, keepdim=True))


def observe(
    manifolds: Sequence[Callable], n: int, generator: torch.Generator
) -> tuple[Tensor, Matrix, list[Tensor]]:
    """``n`` observations ``(n, 3)`` of the sum of the sources, their operator and the truth."""
    A = projections(n, generator)
    truth = [f(torch.rand(n, generator=generator)) for f in manifolds]
    y = A.forward(sum(truth)) + NOISE_STD * torch.randn(n, OBS_FEATURES, generator=generator)
    return y, A, truth


def make_problem(n_sources: int, scale: Scale, seed: int, device: str = "cpu"):
    """The views (view ``k`` sees sources ``1..k``), a held-out copy of the last, its target truth.

    Drawn on the CPU (the same numbers on any machine), then moved to ``device``.
    """
    manifolds = [
        random_manifold(alpha, seed=1000 * seed + b) for b, alpha in enumerate(ALPHAS[:n_sources])
    ]
    g = torch.Generator().manual_seed(seed)
    kinds = [f"source{b + 1}" for b in range(n_sources)]
    views = []
    for k in range(1, n_sources + 1):
        y, A, _ = observe(manifolds[:k], scale.observations, g)
        views.append(
            View(y.to(device), NOISE_STD**2, kinds[:k], [A.to(device)] * k, name=f"view {k}")
        )
    y, A, truth = observe(manifolds, scale.test, g)
    test = View(y.to(device), NOISE_STD**2, kinds, [A.to(device)] * n_sources, name="test")
    return kinds, views, test, truth[-1].to(device)


def psnr(x: Tensor, truth: Tensor) -> float:
    """The paper's PSNR: the mean over observations of ``20 log10(4 / (RMSE_i + 1e-6))``.

    ``RMSE_i`` is over the 5 coordinates of observation ``i``; ``x`` and ``truth``
    are ``(N, 5)``.
    """
    rmse = (x - truth).square().mean(1).sqrt()
    return float((20 * torch.log10(PEAK / (rmse + 1e-6))).mean())


def pooled_psnr(x: Tensor, truth: Tensor) -> float:
    """``10 log10(4^2 / MSE)`` with the MSE over every observation and coordinate."""
    return float(10 * torch.log10(PEAK**2 / (x - truth).square().mean()))


def new_priors(kinds: Sequence[str], scale: Scale, seed: int, device) -> dict[str, DiffusionPrior]:
    """Untrained MLP diffusion priors, one per kind."""
    torch.manual_seed(seed)
    return {
        k: DiffusionPrior(
            MLP(FEATURES, hidden_features=scale.hidden_features, hidden_layers=scale.hidden_layers),
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
        ).to(device)
        for k in kinds
    }


def standard_normal(kinds: Sequence[str], device) -> dict[str, GaussianPrior]:
    """The ``N(0, I)`` priors that start EM."""
    return {
        k: GaussianPrior(
            torch.zeros(FEATURES, device=device), 1.0, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX
        )
        for k in kinds
    }


def sampling_options(scale: Scale, *, evaluation: bool = False) -> dict:
    steps = scale.eval_steps if evaluation else scale.sampler_steps
    return dict(steps=steps, cg_iterations=scale.cg_iterations, batch_size=4096)


def train_options(scale: Scale) -> dict:
    return dict(steps=scale.train_steps, batch_size=scale.batch_size, lr=scale.lr)


def run_joint(kinds, views, test: View, scale: Scale, laps: int, seed: int) -> Tensor:
    device = test.y.device
    priors = em(
        views,
        new_priors(kinds, scale, seed, device),
        laps=laps,
        gaussian_laps=scale.gaussian_laps,
        algorithm="joint",
        init=standard_normal(kinds, device),
        gaussian_rank=scale.gaussian_rank,
        train=train_options(scale),
        sampling=sampling_options(scale),
        seed=seed,
        progress=False,
    )
    samples = sample_posterior(
        [priors[k] for k in test.sources],
        test.y,
        test.operators,
        test.noise_variance,
        seed=seed + 1,
        **sampling_options(scale, evaluation=True),
    )
    return samples[-1][:, 0]


def gibbs_sample(
    priors: Sequence, view: View, *, sweeps: int, sampling: dict, seed: int
) -> list[Tensor]:
    """Per-source posterior samples ``(N, 5)`` by alternating conditionals.

    Each source starts from a draw of its prior; then, ``sweeps`` times, each source
    in turn is drawn from its posterior given ``y`` minus the others' current
    contributions.
    """
    N = len(view)
    xs = [
        sample_prior(
            p, N, steps=sampling["steps"], seed=seed + b, batch_size=sampling["batch_size"]
        )
        for b, p in enumerate(priors)
    ]
    for sweep in range(sweeps):
        for b, (prior, A) in enumerate(zip(priors, view.operators, strict=True)):
            pairs = enumerate(zip(view.operators, xs, strict=True))
            others = sum(B.forward(x) for c, (B, x) in pairs if c != b)
            y_b = view.y - others if len(xs) > 1 else view.y
            xs[b] = sample_posterior(
                [prior], y_b, [A], view.noise_variance, seed=seed + 97 * (sweep + 1) + b, **sampling
            )[0][:, 0]
    return xs


def run_gibbs(kinds, views, test: View, scale: Scale, laps: int, seed: int) -> Tensor:
    """Monte Carlo EM whose E-step is :func:`gibbs_sample`; M-steps as in :func:`em`."""
    device = test.y.device
    priors = new_priors(kinds, scale, seed, device)
    current: dict = standard_normal(kinds, device)
    phases = ["gaussian"] * scale.gaussian_laps + ["diffusion"] * laps
    for lap, phase in enumerate(phases):
        samples: dict[str, list[Tensor]] = {k: [] for k in kinds}
        for v, view in enumerate(views):
            xs = gibbs_sample(
                [current[k] for k in view.sources],
                view,
                sweeps=scale.gibbs_sweeps,
                sampling=sampling_options(scale),
                seed=10_000 * lap + 1_000 * v + seed,
            )
            for k, x in zip(view.sources, xs, strict=True):
                samples[k].append(x)
        for k in kinds:
            x = torch.cat(samples[k])
            if phase == "gaussian":
                current[k] = standard_normal([k], device)[k].fit(x, scale.gaussian_rank)
            else:
                current[k] = priors[k].fit(
                    x, seed=seed + lap, progress=False, **train_options(scale)
                )
    xs = gibbs_sample(
        [current[k] for k in test.sources],
        test,
        sweeps=scale.gibbs_sweeps,
        sampling=sampling_options(scale, evaluation=True),
        seed=seed + 1,
    )
    return xs[-1]


def run_pcpca(kinds, views, test: View, scale: Scale, laps: int, seed: int) -> Tensor:
    target, background = views[-1], views[-2]
    model = PCPCA(scale.pcpca_rank, scale.pcpca_gamma).fit(
        target.y,
        background.y,
        target_operator=target.operators[0],
        background_operator=background.operators[0],
        noise_variance=NOISE_STD**2,
    )
    return model.sample_posterior(test.y, test.operators[0], seed=seed + 1)[:, 0]


RUNNERS = {"joint": run_joint, "gibbs": run_gibbs, "pcpca": run_pcpca}


def benchmark(
    n_sources: int, scale: Scale, seed: int, methods: Sequence[str], device: str = "cpu"
) -> dict[str, tuple[float, float]]:
    """``(psnr, pooled_psnr)`` of each method on the problem with ``n_sources`` sources."""
    kinds, views, test, truth = make_problem(n_sources, scale, seed, device)
    scores = {}
    for method in methods:
        laps = (scale.gibbs_laps if method == "gibbs" else scale.laps)[n_sources - 2]
        start = time.perf_counter()
        x = RUNNERS[method](kinds, views, test, scale, laps, seed)
        scores[method] = (psnr(x, truth), pooled_psnr(x, truth))
        label = method if method == "pcpca" else f"{method} ({laps} laps)"
        print(
            f"[{n_sources} sources] {label}: {scores[method][0]:.2f} dB "
            f"(pooled {scores[method][1]:.2f} dB) in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return scores


def table(results: dict[int, dict[str, tuple[float, float]]], metric: int, *, paper: bool) -> str:
    """Method x sources PSNR (``metric`` 0: the paper's, 1: pooled), the paper's values beside."""
    cell = lambda v: f"{v:12.2f}" if v is not None else f"{'-':>12}"  # noqa: E731
    columns = [(s, "") for s in (2, 3)]
    if paper:
        columns = [c for s in (2, 3) for c in ((s, ""), (s, "paper"))]
    rows = [f"{'method':<8}" + "".join(f"{f'{s} src {tag}'.strip():>12}" for s, tag in columns)]
    for method in METHODS:
        values = [
            PAPER_PSNR[method].get(s)
            if tag
            else results.get(s, {}).get(method, (None, None))[metric]
            for s, tag in columns
        ]
        rows.append(f"{method:<8}" + "".join(cell(v) for v in values))
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the paper's scale (GPU)")
    parser.add_argument("--sources", choices=("2", "3", "all"), default="all")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--laps", type=int, help="diffusion EM laps of every method (overrides the scale's)"
    )
    args = parser.parse_args(argv)
    scale = FULL if args.full else REDUCED
    if args.laps is not None:
        scale = dataclasses.replace(scale, laps=(args.laps,) * 2, gibbs_laps=(args.laps,) * 2)
    device = "cuda" if args.full and torch.cuda.is_available() else "cpu"
    counts = (2, 3) if args.sources == "all" else (int(args.sources),)
    start = time.perf_counter()
    results = {s: benchmark(s, scale, args.seed, args.methods, device) for s in counts}
    print(
        f"PSNR (dB, peak range 4), {'full' if args.full else 'reduced'} scale, seed {args.seed}, "
        f"{time.perf_counter() - start:.0f} s"
    )
    print("mean over observations of 20 log10(4 / RMSE_i) (the paper's definition):")
    print(table(results, 0, paper=True))
    print("10 log10(4^2 / MSE), MSE pooled over observations:")
    print(table(results, 1, paper=False))


if __name__ == "__main__":
    main()
