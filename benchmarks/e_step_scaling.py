"""How one EM E-step scales with the number of CPU processes (torchrun, gloo).

A fixed synthetic problem: two views of ``--observations`` observations each, 3-D
projections of 16-D sources ("a" alone, and "a + b"), with untrained MLP diffusion priors.
For each number of ranks in ``--ranks`` the script starts itself under
``python -m torch.distributed.run --standalone --nproc-per-node R`` with one thread per
rank; every rank times one :func:`galdeblend.em._e_step` (sampling and gathering the
samples), and the script prints the wall-clock seconds of the slowest rank, the speed-up
over the first entry, and whether the samples are identical to the first entry's.

Usage::

    python benchmarks/e_step_scaling.py                         # 1 and 2 ranks
    python benchmarks/e_step_scaling.py --ranks 1 2 4 8 --observations 512
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from galdeblend import distributed
from galdeblend.allocator import retain_freed_memory
from galdeblend.em import View, _e_step
from galdeblend.engine import MLP, DiffusionPrior
from galdeblend.operators import Matrix

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURES = 16


def problem(n: int) -> tuple[list[View], dict[str, DiffusionPrior]]:
    """Two views of ``n`` observations and an (untrained) MLP prior per kind of source."""
    g = torch.Generator().manual_seed(0)

    def view(sources: list[str]) -> View:
        ops = [Matrix(torch.randn(n, 3, FEATURES, generator=g)) for _ in sources]
        y = sum(A.forward(torch.randn(n, FEATURES, generator=g)) for A in ops)
        return View(y + 0.1 * torch.randn(n, 3, generator=g), 0.01, sources, ops)

    torch.manual_seed(0)
    priors = {
        k: DiffusionPrior(MLP(FEATURES, hidden_features=256, hidden_layers=3), sigma_max=30.0)
        for k in "ab"
    }
    return [view(["a"]), view(["a", "b"])], priors


def worker(args: argparse.Namespace) -> None:
    """One rank: time one E-step; rank 0 writes the time and the samples to ``--out``."""
    distributed.init_from_env()
    views, priors = problem(args.observations)
    sampling = {"steps": args.steps, "batch_size": args.batch_size}
    distributed.barrier()
    start = time.perf_counter()
    samples = _e_step(views, priors, chunk_size=None, sampling=sampling, seed=0)
    seconds = max(distributed.all_gather(time.perf_counter() - start))
    if distributed.is_main():
        torch.save({"seconds": seconds, "samples": samples}, args.out)


def main() -> None:
    retain_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--observations", type=int, default=256, help="per view (default 256)")
    parser.add_argument("--steps", type=int, default=16, help="sampler steps (default 16)")
    parser.add_argument("--batch-size", type=int, default=32, help="observations per chunk")
    parser.add_argument("--out", help=argparse.SUPPRESS)  # set on the ranks started here
    args = parser.parse_args()
    if args.out:
        return worker(args)

    options = ["--observations", str(args.observations), "--steps", str(args.steps)]
    options += ["--batch-size", str(args.batch_size)]
    chunks = 2 * -(-args.observations // args.batch_size)
    print(
        f"one E-step: 2 views x {args.observations} observations, {chunks} chunks of "
        f"{args.batch_size}, {args.steps} sampler steps; torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores, 1 thread per rank"
    )
    print(f"{'ranks':>5} {'seconds':>9} {'speed-up':>9}  samples as with {args.ranks[0]} rank(s)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            out = Path(tmp) / f"ranks_{ranks}.pt"
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            launcher += ["--nproc-per-node", str(ranks), __file__, *options, "--out", str(out)]
            run = subprocess.run(launcher, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"{ranks} rank(s) failed:\n{run.stdout}{run.stderr}")
            result = torch.load(out)
            if first is None:
                first = result
            same = all(torch.equal(result["samples"][k], first["samples"][k]) for k in "ab")
            seconds = result["seconds"]
            print(f"{ranks:>5} {seconds:>9.2f} {first['seconds'] / seconds:>9.2f}  {same}")


if __name__ == "__main__":
    main()
