"""Training of EDM denoisers by denoising score matching.

One call of :func:`train_denoiser` is one M-step of EM: a fresh optimizer and
learning-rate schedule, started from the denoiser's current weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from galdeblend import distributed
from galdeblend.diffusion.denoisers import EDMDenoiser
from galdeblend.diffusion.schedule import VESchedule
from galdeblend.errors import InputError

__all__ = ["train_denoiser", "validation_loss", "sample_times", "dihedral_transform"]

LOSS_SMOOTHING = 0.02  # weight of the latest minibatch loss in the displayed running loss
DISPLAY_EVERY = 25  # steps between progress-bar updates of the running loss


def sample_times(batch: int, *, generator: torch.Generator) -> Tensor:
    """Diffusion times ``t ~ Beta(3, 3)``, ``(batch,)``, on the generator's device.

    The third smallest of five independent ``U(0, 1)`` draws (their median) is
    ``Beta(3, 3)`` distributed, which lets the draw use ``generator``.
    """
    u = torch.rand(batch, 5, generator=generator, device=generator.device)
    return u.median(dim=1).values


def minibatches(n: int, batch_size: int, *, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless stream of index batches ``(batch_size,)`` into ``n`` samples.

    Indices are read off a sequence of random permutations of ``range(n)`` (one per
    epoch), so every sample is used once per epoch; a batch may straddle two epochs,
    and ``batch_size`` may exceed ``n``.
    """
    buffer = torch.empty(0, dtype=torch.long)
    while True:
        while buffer.numel() < batch_size:
            buffer = torch.cat([buffer, torch.randperm(n, generator=generator)])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def dihedral_transform(x: Tensor, elements: Tensor) -> Tensor:
    """Apply one of the 8 flips and quarter turns of the square pixel grid to each sample.

    Every element of the dihedral group of the square is a transpose of the last two axes
    or not, followed by a flip of each of them or not.

    Parameters
    ----------
    x : Tensor, shape (B, ..., H, H)
        Samples on square grids.
    elements : Tensor of bool, shape (B, 3)
        Per sample: transpose, flip the rows, flip the columns.

    Returns
    -------
    Tensor, shape (B, ..., H, H)
    """
    transpose, flip_rows, flip_columns = (
        elements[:, i].view(-1, *[1] * (x.ndim - 1)).to(x.device) for i in range(3)
    )
    x = torch.where(transpose, x.transpose(-1, -2), x)
    x = torch.where(flip_rows, x.flip(-2), x)
    return torch.where(flip_columns, x.flip(-1), x)


def _check_samples(denoiser: EDMDenoiser, samples: Tensor) -> None:
    if samples.ndim < 1 or samples.shape[0] < 1 or tuple(samples.shape[1:]) != denoiser.shape:
        raise InputError(
            f"samples of shape {tuple(samples.shape)} must be (N, *{denoiser.shape}) with N >= 1, "
            "matching the denoiser's shape"
        )


@torch.no_grad()
def _update_ema(
    ema: tuple[list[Tensor], list[Tensor]], model: tuple[list[Tensor], list[Tensor]], decay: float
) -> None:
    """Move the averaged ``(parameters, buffers)`` towards the model's by ``1 - decay``."""
    with torch.no_grad():
        torch._foreach_lerp_(ema[0], model[0], 1.0 - decay)
        torch._foreach_copy_(ema[1], model[1])


def train_denoiser(
    denoiser: EDMDenoiser,
    schedule: VESchedule,
    samples: Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    ema_decay: float = 0.999,
    seed: int = 0,
    mixed_precision: bool = False,
    augment: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> EDMDenoiser:
    """Train ``denoiser`` on ``samples`` and return the exponential moving average.

    Each step draws a minibatch (see :func:`minibatches`: one random permutation per
    epoch), times ``t ~ Beta(3, 3)``, noise levels ``sigma = schedule.sigma(t)`` and noise
    ``eps``, and takes an Adam step (AdamW when ``weight_decay > 0``) on the mean of
    :meth:`EDMDenoiser.loss`, with the gradient norm clipped to ``grad_clip`` and the
    learning rate decayed from ``lr`` to 0 by a cosine over ``steps``. The average uses
    the decay ``min(ema_decay, (1 + k) / (10 + k))`` at step ``k``, so that it forgets
    the initial weights also in short runs. With ``augment``, each minibatch sample is
    first turned by a random flip or quarter turn (:func:`dihedral_transform`).

    Parameters
    ----------
    denoiser : EDMDenoiser
        Trained in place (moved to ``device``; left with the raw, non-averaged weights).
    schedule : VESchedule
        Noise schedule.
    samples : Tensor
        Training data, ``(N, *denoiser.shape)``; minibatches are moved to ``device``.
    steps, batch_size : int
        Optimizer steps and minibatch size.
    lr, weight_decay, grad_clip : float
        Peak learning rate, decoupled weight decay and gradient-norm bound
        (``math.inf`` disables clipping).
    ema_decay : float
        Decay of the moving average of the weights, in ``[0, 1)``.
    seed : int
        Seed of all random draws (minibatches, times, noise).
    mixed_precision : bool
        Run the forward pass under ``torch.autocast`` in bfloat16.
    augment : bool
        Train on the 8 flips and quarter turns of the samples, each drawn with
        probability 1/8 per minibatch row: for sources whose population has no preferred
        orientation on the sky (galaxies, seen through a round model PSF). Needs square
        images.
    device : torch.device or str, optional
        Where to train; default: the device of the denoiser's parameters.
    progress : bool
        Show a progress bar with the running loss.

    Returns
    -------
    EDMDenoiser
        A new denoiser holding the averaged weights, in eval mode.

    Notes
    -----
    With a fixed ``seed`` and initial weights, the result is bitwise reproducible on
    CPU. Indices are drawn by a CPU generator seeded with ``seed``; times and noise by
    a generator on ``device`` seeded from the first.

    Under ``torchrun`` (see :mod:`galdeblend.distributed`) every rank starts from rank 0's
    weights and draws the same minibatch, times and noise; each rank computes the loss of
    its share of the ``batch_size`` rows (``sum / batch_size``), and the gradients are
    summed over the ranks, which gives the single-process step up to rounding.
    """
    _check_samples(denoiser, samples)
    ranks = distributed.world_size()
    if steps < 1 or batch_size < ranks or not 0.0 <= ema_decay < 1.0 or grad_clip <= 0:
        raise InputError(
            f"train_denoiser: need steps >= 1, batch_size >= {ranks} (one row per rank), "
            f"0 <= ema_decay < 1 and grad_clip > 0, got steps={steps}, "
            f"batch_size={batch_size}, ema_decay={ema_decay}, grad_clip={grad_clip}"
        )
    if augment and (len(denoiser.shape) < 2 or denoiser.shape[-1] != denoiser.shape[-2]):
        raise InputError(
            f"train_denoiser: augment turns the images by quarter turns, which needs square "
            f"images, got shape {denoiser.shape}"
        )
    device = torch.device(device) if device is not None else next(denoiser.parameters()).device
    denoiser.to(device)
    distributed.broadcast_([*denoiser.parameters(), *denoiser.buffers()])
    was_training = denoiser.training
    denoiser.train()
    ema = copy.deepcopy(denoiser).requires_grad_(False)

    index_generator = torch.Generator().manual_seed(seed)
    noise_seed = int(torch.randint(2**62, (), generator=index_generator))
    noise_generator = torch.Generator(device).manual_seed(noise_seed)
    batches = minibatches(samples.shape[0], batch_size, generator=index_generator)

    parameters = [p for p in denoiser.parameters() if p.requires_grad]
    if weight_decay > 0:
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, foreach=True)
    else:
        optimizer = torch.optim.Adam(parameters, lr=lr, foreach=True)
    averaged = (list(ema.parameters()), list(ema.buffers()))
    current = (list(denoiser.parameters()), list(denoiser.buffers()))
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    rows = distributed.shard(batch_size)
    own = slice(rows.start, rows.stop)  # this rank's rows of every minibatch
    running_loss = None
    bar = tqdm(range(steps), disable=not progress, desc="train denoiser")
    for k in bar:
        x = samples[next(batches)[own].to(samples.device)].to(device)
        if augment:
            elements = torch.rand(batch_size, 3, generator=index_generator) < 0.5
            x = dihedral_transform(x, elements[own])
        t = sample_times(batch_size, generator=noise_generator)
        eps = torch.randn(
            (batch_size, *denoiser.shape), generator=noise_generator, dtype=x.dtype, device=device
        )
        sigma = schedule.sigma(t[own]).to(x.dtype)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision):
            loss = denoiser.loss(x, sigma, eps=eps[own]).sum() / batch_size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.detach()
        distributed.all_reduce_sum_([loss, *(p.grad for p in parameters if p.grad is not None)])
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip, foreach=True)
        optimizer.step()
        lr_schedule.step()
        _update_ema(averaged, current, min(ema_decay, (1 + k) / (10 + k)))

        running_loss = loss if running_loss is None else running_loss.lerp(loss, LOSS_SMOOTHING)
        if progress and (k % DISPLAY_EVERY == 0 or k == steps - 1):
            bar.set_postfix(loss=f"{running_loss.item():.4g}")

    denoiser.train(was_training)
    return ema.eval()


@torch.no_grad()
def validation_loss(
    denoiser: EDMDenoiser,
    schedule: VESchedule,
    samples: Tensor,
    *,
    n_sigma: int = 16,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """Training objective on held-out ``samples``, with fixed times and noise.

    Estimates ``E_t E_x E_eps [loss]`` for ``t ~ Beta(3, 3)`` by a midpoint rule on
    ``n_sigma`` times weighted by the Beta(3, 3) density, and exactly over ``samples``
    ``(N, *shape)``, with noise drawn from a generator seeded with ``seed``.
    """
    _check_samples(denoiser, samples)
    if n_sigma < 1 or batch_size < 1:
        raise InputError(
            "validation_loss: need n_sigma >= 1 and batch_size >= 1, "
            f"got n_sigma={n_sigma}, batch_size={batch_size}"
        )
    was_training = denoiser.training
    denoiser.eval()
    device = next(denoiser.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    t = (torch.arange(n_sigma, dtype=torch.float64) + 0.5) / n_sigma
    weights = t**2 * (1 - t) ** 2
    total = 0.0
    for t_j, w_j in zip(t.tolist(), (weights / weights.sum()).tolist(), strict=True):
        for x in samples.split(batch_size):
            x = x.to(device)
            sigma = schedule.sigma(torch.full((x.shape[0],), t_j, dtype=x.dtype, device=device))
            total += w_j * float(denoiser.loss(x, sigma, generator=generator).sum())
    denoiser.train(was_training)
    return total / samples.shape[0]
