"""Residual sky background of an image: a plane fitted with sigma clipping.

Survey cutouts come sky-subtracted, but the subtraction leaves a residual of a fraction of
the noise, often a gradient across the cutout. Detection thresholds and segment fluxes are
biased by it, so detection (:func:`galdeblend.scene.detect_sources`) and the segmentation
baselines remove a plane fitted to the pixels that are not sources.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plane_background"]


def plane_background(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    clip: float = 2.5,
    iterations: int = 5,
) -> np.ndarray:
    """Plane ``a + b x + c y`` fitted to the background pixels of ``image``.

    Least squares, repeated ``iterations`` times, each time without the pixels more than
    ``clip`` robust standard deviations (1.4826 x median absolute deviation) above the
    plane, so that sources do not pull it up (their faint wings below the clip still do,
    by about 0.1 noise sigma when a sixth of the pixels hold wings above 0.1 sigma).

    Parameters
    ----------
    image : ndarray, shape (H, W)
    mask : ndarray of bool, shape (H, W), optional
        True on pixels to ignore.
    clip : float
    iterations : int

    Returns
    -------
    ndarray, shape (H, W)
        The plane (zeros when fewer than 3 pixels are usable).
    """
    image = np.asarray(image, dtype=np.float64)
    H, W = image.shape
    y, x = np.mgrid[:H, :W]
    design = np.stack([np.ones(H * W), x.ravel() / max(W - 1, 1), y.ravel() / max(H - 1, 1)], 1)
    values = image.ravel()
    usable = np.isfinite(values) if mask is None else np.isfinite(values) & ~mask.ravel()
    good = usable.copy()
    coef = np.zeros(3)
    for _ in range(iterations):
        if good.sum() < 3:
            break
        coef = np.linalg.lstsq(design[good], values[good], rcond=None)[0]
        residual = values - design @ coef
        spread = 1.4826 * np.median(np.abs(residual[good]))
        good = usable & (residual < clip * spread)
    return (design @ coef).reshape(H, W)
