"""Summary figures of a deblend (matplotlib, no display needed)."""

from __future__ import annotations

import os

import numpy as np

from galdeblend.results import DeblendResult

__all__ = ["summary_figure"]


def _show(ax, image: np.ndarray, title: str, *, symmetric: bool = False) -> None:
    """One panel: an ``(H, W)`` image with an asinh-like stretch."""
    finite = image[np.isfinite(image)]
    scale = np.percentile(np.abs(finite), 99.5) if finite.size else 1.0
    scale = scale if scale > 0 else 1.0
    shown = np.arcsinh(image / (0.05 * scale))
    limit = np.arcsinh(1 / 0.05)
    ax.imshow(
        shown,
        origin="lower",
        cmap="RdBu_r" if symmetric else "gray_r",
        vmin=-limit if symmetric else np.arcsinh(-0.1 / 0.05),
        vmax=limit,
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def summary_figure(result: DeblendResult, path: str | os.PathLike) -> None:
    """Write a PNG: per observation data, model, residual; per galaxy mean and std.

    Images are summed over bands; residuals are shown in units of the noise.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    galaxies = result.galaxies
    n_obs = len(result.observations)
    cols = max(3, 2 * min(len(galaxies), 4))
    rows = n_obs + (len(galaxies) + 3) // 4
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (obs, model, resid) in enumerate(
        zip(result.observations, result.models, result.residuals())
    ):
        name = os.path.basename(obs.source)
        for j, (image, title) in enumerate(
            [(obs.data.sum(0), f"{name}: data"), (model.sum(0), "model")]
        ):
            axes[i, j].axis("on")
            _show(axes[i, j], image, title)
        chi = np.where(obs.mask, 0.0, resid / np.sqrt(obs.variance)).sum(0) / np.sqrt(obs.shape[0])
        axes[i, 2].axis("on")
        axes[i, 2].imshow(
            chi, origin="lower", cmap="RdBu_r", vmin=-5, vmax=5, interpolation="nearest"
        )
        axes[i, 2].set_title("residual / sigma", fontsize=7)
        axes[i, 2].set_xticks([])
        axes[i, 2].set_yticks([])
    for k, gal in enumerate(galaxies):
        r, c = n_obs + k // 4, 2 * (k % 4)
        if c + 1 >= cols:
            continue
        for j, (image, title) in enumerate(
            [(gal.mean.sum(0), f"galaxy {gal.id}: mean"), (gal.std.sum(0), "std")]
        ):
            axes[r, c + j].axis("on")
            _show(axes[r, c + j], image, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
