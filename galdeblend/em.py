"""Learning priors from observations alone by Monte Carlo expectation-maximization.

Each *lap* has an E-step, which draws one joint posterior sample of every source of
every observation (or of a fresh random chunk of a large set) with the current
priors, and an M-step, which fits each learned kind's prior to its own samples
(Rozet et al. 2024, Alg. 1; Wagner-Carena et al. 2025, Alg. 1 and 2).

- The first ``gaussian_laps`` laps use Gaussian priors refitted by PPCA/factor
  analysis; the following ``laps`` train the diffusion priors, warm-started from the
  previous lap with a fresh optimizer and learning-rate schedule.
- ``algorithm="joint"`` learns every kind at once from every view (Algorithm 1).
  ``algorithm="sequential"`` learns the kinds one after the other in ``order``: stage
  ``k`` uses only the views whose sources are among the first ``k + 1`` kinds and
  keeps the earlier kinds frozen (Algorithm 2).
- After every lap the priors are written to ``checkpoint_dir/lap_NNNN`` (renamed
  into place only when complete); ``resume=True`` continues after the last complete
  lap. Every random draw of lap ``k`` is seeded from ``(seed, k)``, so a resumed run
  gives the same priors as an uninterrupted one.
- Under ``torchrun`` (:mod:`galdeblend.distributed`) the ranks share the E-step's
  chunks of observations, whose samples do not depend on the number of ranks, and the
  M-step's minibatches; rank 0 alone writes the checkpoints and shows progress.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from galdeblend import distributed
from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.diffusion.prior import DiffusionPrior, load_prior, save_prior
from galdeblend.errors import InputError
from galdeblend.operators.base import LinearOperator
from galdeblend.posterior import BATCH_SIZE, sample_posterior, select_items, validate_problem

__all__ = ["View", "em", "lap_plan"]


@dataclass
class View:
    """A set of observations that share one forward-model structure.

    Attributes
    ----------
    y : Tensor, shape ``(N, *obs_shape)``
        The observations.
    noise_variance : Tensor or float
        Broadcasts against ``y``; per observation when its first axis has length ``N``.
    sources : list of str
        The kind of each source seen in these observations (a kind may repeat, e.g.
        two galaxies).
    operators : list of LinearOperator
        One per source, batched over the ``N`` observations.
    name : str
        For progress messages and checkpoints.
    """

    y: Tensor
    noise_variance: Tensor | float
    sources: Sequence[str]
    operators: Sequence[LinearOperator]
    name: str = "view"
    _ids: Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.y.shape[0]

    def to(self, device: str | torch.device) -> View:
        """This view with its observations, noise variance and operators on ``device``."""
        var = self.noise_variance
        return replace(
            self,
            y=self.y.to(device),
            noise_variance=var.to(device) if isinstance(var, Tensor) else var,
            operators=[A.to(device) for A in self.operators],
        )


def lap_plan(
    kinds: Sequence[str],
    *,
    laps: int,
    gaussian_laps: int,
    algorithm: str,
    order: Sequence[str] | None,
):
    """The list of laps: ``(stage_kinds_learned, phase)`` with phase "gaussian" or "diffusion"."""
    phases = ["gaussian"] * gaussian_laps + ["diffusion"] * laps
    if algorithm == "joint":
        return [(tuple(kinds), phase) for phase in phases]
    if algorithm == "sequential":
        order = list(order or kinds)
        return [((kind,), phase) for kind in order for phase in phases]
    raise InputError(f"algorithm: must be 'joint' or 'sequential', got {algorithm!r}")


def _lap_seed(seed: int, lap: int) -> int:
    return (int(seed) * 7919 + 104_729 * (lap + 1)) & 0x7FFF_FFFF


def em(
    views: Sequence[View],
    priors: Mapping[str, DiffusionPrior | GaussianPrior],
    *,
    laps: int,
    gaussian_laps: int = 4,
    algorithm: str = "joint",
    order: Sequence[str] | None = None,
    frozen: Iterable[str] = (),
    init: Mapping[str, GaussianPrior] | None = None,
    gaussian_rank: int | Mapping[str, int] = 8,
    train: Mapping | None = None,
    sampling: Mapping | None = None,
    chunk_size: int | None = None,
    filter: Callable[[str, Tensor], Tensor] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, DiffusionPrior | GaussianPrior]:
    """Learn one prior per kind of source from the views by Monte Carlo EM.

    Parameters
    ----------
    views : sequence of View
    priors : mapping kind -> prior
        The priors to learn (untrained :class:`DiffusionPrior`, or a
        :class:`GaussianPrior` to learn a Gaussian only), and the frozen ones.
    laps : int
        Diffusion laps (per stage for the sequential algorithm).
    gaussian_laps : int
        Gaussian-initialization laps before the diffusion laps.
    algorithm : {"joint", "sequential"}
    order : sequence of str, optional
        Order of the kinds for the sequential algorithm (default: ``priors``' order).
    frozen : iterable of str
        Kinds whose priors are used as given and never refitted.
    init : mapping kind -> GaussianPrior, optional
        Starting Gaussians; default ``N(0, I)`` with the kind's noise range.
    gaussian_rank : int or mapping kind -> int
        Rank of the low-rank part of the Gaussian covariance, for every kind or per kind.
    train : mapping
        Options of :meth:`DiffusionPrior.fit` (``steps``, ``batch_size``, ``lr``, ...).
    sampling : mapping
        Options of :func:`~galdeblend.posterior.sample_posterior` (``steps``,
        ``sampler``, ``corrections``, ``tau``, ``cg_iterations``, ``batch_size``).
    chunk_size : int, optional
        Stochastic E-step: per lap, each view contributes a fresh random chunk of at
        most this many observations.
    filter : callable, optional
        ``filter(kind, samples) -> samples`` applied before each M-step (e.g. to
        drop samples that are not finite or not plausible).
    checkpoint_dir : path, optional
        Where each lap's priors are written (by rank 0 under ``torchrun``).
    resume : bool
        Continue after the last complete lap found in ``checkpoint_dir``.
    seed : int
    progress : bool
        Show progress bars (on rank 0 only under ``torchrun``).

    Returns
    -------
    dict kind -> prior
    """
    kinds = list(priors)
    priors = dict(priors)
    frozen = set(frozen)
    train = dict(train or {})
    sampling = dict(sampling or {})
    progress = progress and distributed.is_main()
    _validate_views(views, priors)
    ranks = (
        dict(gaussian_rank)
        if isinstance(gaussian_rank, Mapping)
        else dict.fromkeys(kinds, gaussian_rank)
    )
    if missing := set(kinds) - set(frozen) - set(ranks):
        raise InputError(f"gaussian_rank: no rank for the kinds {sorted(missing)}")
    plan = lap_plan(
        [k for k in kinds if k not in frozen],
        laps=laps,
        gaussian_laps=gaussian_laps,
        algorithm=algorithm,
        order=order,
    )
    current: dict = {}
    for kind, prior in priors.items():
        if kind in frozen or isinstance(prior, GaussianPrior) or gaussian_laps == 0:
            current[kind] = prior
        else:
            current[kind] = (init or {}).get(kind) or GaussianPrior(
                torch.zeros(prior.shape),
                1.0,
                sigma_min=prior.schedule.sigma_min,
                sigma_max=prior.schedule.sigma_max,
            )
    start = 0
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume:
        if checkpoint_dir is None:
            raise InputError("resume: needs checkpoint_dir")
        start, current = _load_last_lap(checkpoint_dir, current, plan, seed)
        priors.update({k: p for k, p in current.items() if isinstance(p, DiffusionPrior)})

    bar = tqdm(total=len(plan), initial=start, disable=not progress, desc="EM laps")
    for lap in range(start, len(plan)):
        learned, phase = plan[lap]
        lap_seed = _lap_seed(seed, lap)
        learned_set = set(learned)
        if algorithm == "sequential":
            stage = plan.index(next(p for p in plan if p[0] == learned))
            seen = {k for (ks, _) in plan[: stage + 1] for k in ks} | frozen
            lap_views = [
                v for v in views if set(v.sources) <= seen and learned_set & set(v.sources)
            ]
        else:
            lap_views = [v for v in views if learned_set & set(v.sources)]
        samples = _e_step(
            lap_views, current, chunk_size=chunk_size, sampling=sampling, seed=lap_seed
        )
        for kind in learned:
            if kind not in samples:
                raise InputError(
                    f"em: no {kind} instance in any view to learn its prior from "
                    "(for galaxies: none was detected in the fields)"
                )
            x = samples[kind]
            if filter is not None:
                x = filter(kind, x)
            if phase == "gaussian" or isinstance(priors[kind], GaussianPrior):
                current[kind] = GaussianPrior(
                    x.new_zeros(x.shape[1:]),
                    1.0,
                    sigma_min=current[kind].schedule.sigma_min,
                    sigma_max=current[kind].schedule.sigma_max,
                ).fit(x, ranks[kind])
            else:
                current[kind] = priors[kind].fit(
                    x, **{"seed": lap_seed, "progress": progress, **train}
                )
        if checkpoint_dir is not None:
            if distributed.is_main():
                _save_lap(
                    checkpoint_dir,
                    lap,
                    current,
                    {
                        "phase": phase,
                        "learned": list(learned),
                        "seed": seed,
                        "algorithm": algorithm,
                        "n_laps": len(plan),
                    },
                )
            distributed.barrier()
        bar.update(1)
    bar.close()
    return current


def _validate_views(views: Sequence[View], priors: Mapping) -> None:
    for i, view in enumerate(views):
        missing = [k for k in view.sources if k not in priors]
        if missing:
            raise InputError(f"views[{i}] ({view.name}): no prior for source kind(s) {missing}")
        if len(view.sources) != len(view.operators):
            raise InputError(
                f"views[{i}] ({view.name}): {len(view.operators)} operators "
                f"for {len(view.sources)} sources"
            )
        try:
            validate_problem(
                [priors[k] for k in view.sources], view.y, view.operators, view.noise_variance
            )
        except InputError as err:
            raise InputError(f"views[{i}] ({view.name}): {err}") from err


def _select(view: View, index: Tensor):
    var = select_items(torch.as_tensor(view.noise_variance, dtype=view.y.dtype), index, view.y)
    return view.y[index], var, [A[index] for A in view.operators]


def _e_step(
    views: Sequence[View], current: Mapping, *, chunk_size: int | None, sampling: Mapping, seed: int
) -> dict[str, Tensor]:
    """One posterior sample per source of each (chunk of each) view, grouped by kind.

    The selected observations of every view are cut into the sampler's chunks of
    ``batch_size``, and each rank samples its share of all views' chunks. A chunk's draws
    are seeded from its view, first observation and size (see
    :func:`~galdeblend.posterior.chunk_generator`), so the samples, gathered on every
    rank, are those of one process whatever the number of ranks.

    Returns
    -------
    dict kind -> Tensor, shape ``(M, *shape_kind)``
        The samples of every source of that kind, by view, then source, then observation.
    """
    generator = torch.Generator().manual_seed(seed)
    batch_size = sampling.get("batch_size", BATCH_SIZE)
    chunks: list[tuple[int, Tensor]] = []  # (view, global ids of its observations)
    chunks_of_view: list[range] = []  # each view's chunks follow each other in `chunks`
    for v, view in enumerate(views):
        N = len(view)
        if chunk_size is not None and chunk_size < N:
            index = torch.randperm(N, generator=generator)[:chunk_size].sort().values
        else:
            index = torch.arange(N)
        first = len(chunks)
        chunks += [(v, ids) for ids in index.split(batch_size)]
        chunks_of_view.append(range(first, len(chunks)))

    mine: dict[int, list[Tensor]] = {}  # chunk -> per source (n_chunk, *shape_b), on the CPU
    for c in distributed.shard(len(chunks)):
        v, ids = chunks[c]
        view = views[v]
        y, var, ops = _select(view, ids)
        samples = sample_posterior(
            # Gaussian starts and priors read from checkpoints are made on the CPU
            [current[k].to(y.device) for k in view.sources],
            y,
            ops,
            var,
            n_samples=1,
            seed=seed + 7 * v,
            item_ids=ids.tolist(),
            **sampling,
        )
        mine[c] = [x[:, 0].cpu() for x in samples]
    drawn = {c: xs for part in distributed.all_gather(mine) for c, xs in part.items()}

    by_kind: dict[str, list[Tensor]] = {}
    for view, own in zip(views, chunks_of_view, strict=True):
        parts = [drawn[c] for c in own]
        for b, kind in enumerate(view.sources):
            x = torch.cat([xs[b] for xs in parts]).to(view.y.device)
            by_kind.setdefault(kind, []).append(x)
    return {kind: torch.cat(xs) for kind, xs in by_kind.items()}


def _save_lap(checkpoint_dir: Path, lap: int, current: Mapping, state: dict) -> None:
    """Write ``lap_NNNN`` completely under a temporary name, then rename it into place."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"lap_{lap:04d}"
    tmp = checkpoint_dir / f".lap_{lap:04d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for kind, prior in current.items():
        save_prior(prior, tmp / kind)
    (tmp / "state.json").write_text(json.dumps({"lap": lap, **state}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _load_last_lap(checkpoint_dir: Path, current: dict, plan, seed: int) -> tuple[int, dict]:
    """The lap to start from and the priors after the last complete lap.

    The completed laps must be the first laps of ``plan`` (same phase and kinds learned)
    from the same seed, so a run can be resumed, and a finished run extended by more laps
    of its last phase (e.g. ``laps=10`` after a ``laps=5`` run): since every draw of a lap
    is seeded from ``(seed, lap)``, the result equals a run of the longer plan from scratch.
    """
    done = sorted(
        p for p in checkpoint_dir.glob("lap_[0-9][0-9][0-9][0-9]") if (p / "state.json").is_file()
    )
    if not done:
        return 0, current
    for path in done:
        state = json.loads((path / "state.json").read_text())
        lap, found = state["lap"], (tuple(state["learned"]), state["phase"])
        expected = plan[lap] if lap < len(plan) else None
        if found != expected or state["seed"] != seed:
            wanted = expected if expected else f"beyond its {len(plan)} laps"
            raise InputError(
                f"{path}: lap {lap} of the checkpoint (seed {state['seed']}, {found}) does not "
                f"match this run (seed {seed}, lap {lap}: {wanted})"
            )
    return state["lap"] + 1, {kind: load_prior(done[-1] / kind) for kind in current}
