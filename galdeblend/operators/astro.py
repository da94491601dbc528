"""Astronomical linear operators: PSF convolution, WCS resampling, sub-pixel shifts, bands.

Every operator maps a batch of images ``(B, C, H, W)`` (``C`` bands) to another batch
of images and has an exact adjoint, so that ``<A x, y> = <x, A^T y>`` to rounding.
Together they build the forward model of an observation, ``A_ib`` in
``y_i = sum_b A_ib x_b + n_i`` (see ``DESIGN.md`` section 1):
:class:`Shift` places an instance, :class:`SelectBands` picks the observed bands,
:class:`Convolve` applies the difference kernel and :class:`Resample` maps the model
frame's pixel grid onto the observation's (flux conserving).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from astropy.wcs import WCS
from scipy.fft import next_fast_len
from torch import Tensor

from galdeblend.errors import InputError
from galdeblend.operators.base import LinearOperator

__all__ = ["Convolve", "Resample", "Shift", "SelectBands"]


def _per_item(t: Tensor, index: Tensor | slice | int) -> Tensor:
    """``t[index]`` keeping the batch axis when ``index`` is an integer."""
    return t[index : index + 1] if isinstance(index, int) else t[index]


class Convolve(LinearOperator):
    """Linear (zero-padded) convolution with an odd-sized, centred kernel, by FFT.

    With ``full=False`` the output has the input's size ('same'); with ``full=True`` it
    is ``(H + h - 1, W + w - 1)``, so that light blurred beyond the input's border is
    kept (the input grid grown by ``h // 2``, ``w // 2`` on each side). Pixels beyond the
    borders count as zero, nothing wraps around. The adjoint is the correlation with
    the same kernel (the convolution with the flipped kernel). The kernel's FFT is
    computed once per image shape, dtype and device.

    Parameters
    ----------
    kernel : Tensor or ndarray
        ``(h, w)`` shared by all bands, ``(C, h, w)`` one per band, or ``(B, C, h, w)``
        one per batch item and band. ``h`` and ``w`` odd; the centre is at
        ``(h // 2, w // 2)``.
    full : bool
        Return the full linear convolution instead of the 'same'-size crop.
    """

    def __init__(self, kernel: Tensor | np.ndarray, *, full: bool = False):
        kernel = torch.as_tensor(kernel)
        if kernel.ndim not in (2, 3, 4):
            raise InputError(
                f"Convolve: kernel must have shape (h, w), (C, h, w) or (B, C, h, w), "
                f"got {tuple(kernel.shape)}"
            )
        h, w = kernel.shape[-2:]
        if h % 2 == 0 or w % 2 == 0:
            raise InputError(f"Convolve: kernel sides must be odd, got {(h, w)}")
        self.kernel = kernel
        self.full = full
        self.per_item = kernel.ndim == 4
        self._fft_cache: dict[tuple, tuple[Tensor, tuple[int, int]]] = {}

    def _kernel_fft(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``rfft2`` of the zero-padded kernel, ``(..., L_h, L_w // 2 + 1)``, and ``(L_h, L_w)``."""
        H, W = x.shape[-2:]
        key = (H, W, x.dtype, x.device)
        if key not in self._fft_cache:
            h, w = self.kernel.shape[-2:]
            size = (next_fast_len(H + h - 1), next_fast_len(W + w - 1))
            k = self.kernel.to(dtype=x.dtype, device=x.device)
            self._fft_cache[key] = (torch.fft.rfft2(k, s=size), size)
        return self._fft_cache[key]

    def _offsets(self) -> tuple[int, int]:
        """Where the output starts inside the full convolution."""
        h, w = self.kernel.shape[-2:]
        return (0, 0) if self.full else (h // 2, w // 2)

    def _out_size(self, H: int, W: int) -> tuple[int, int]:
        h, w = self.kernel.shape[-2:]
        return (H + h - 1, W + w - 1) if self.full else (H, W)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``(B, C, H, W) -> (B, C, H, W)``.

        Or ``(B, C, H + h - 1, W + w - 1)`` if full.
        """
        K, size = self._kernel_fft(x)
        (Ho, Wo), (oy, ox) = self._out_size(*x.shape[-2:]), self._offsets()
        full = torch.fft.irfft2(torch.fft.rfft2(x, s=size) * K, s=size)
        return full[..., oy : oy + Ho, ox : ox + Wo]

    def adjoint(self, y: Tensor) -> Tensor:
        """Correlate back to the input's size ``(B, C, H, W)``."""
        h, w = self.kernel.shape[-2:]
        Ho, Wo = y.shape[-2:]
        H, W = (Ho - h + 1, Wo - w + 1) if self.full else (Ho, Wo)
        K, size = self._kernel_fft(y.new_empty(1, 1, H, W))
        oy, ox = self._offsets()
        padded = torch.zeros(*y.shape[:-2], *size, dtype=y.dtype, device=y.device)
        padded[..., oy : oy + Ho, ox : ox + Wo] = y
        full = torch.fft.irfft2(torch.fft.rfft2(padded) * K.conj(), s=size)
        return full[..., :H, :W]

    def __getitem__(self, index):
        return Convolve(_per_item(self.kernel, index), full=self.full) if self.per_item else self

    def to(self, *args, **kwargs):
        return Convolve(self.kernel.to(*args, **kwargs), full=self.full)


class Shift(LinearOperator):
    """Sub-pixel translation by a Fourier phase: ``out(x, y) = in(x - dx, y - dy)``.

    Boundaries: the image is zero-padded by ``ceil(max |shift|) + margin`` pixels on
    every side (to an odd size, so that there is no Nyquist bin), shifted with the
    phase ramp, and cropped back. Flux moved out of the frame is lost, flux entering it
    is zero, and the band-limited (sinc) interpolation tails do not wrap around onto
    the opposite border within the padding. The adjoint is the shift by ``(-dx, -dy)``
    with the same padding, exactly.

    Parameters
    ----------
    dx, dy : float or Tensor
        Shift along columns (x) and rows (y) in pixels: scalars shared by the batch,
        or ``(B,)`` tensors, one per batch item.
    margin : int
        Extra zero padding, in pixels, beyond the largest shift.

    The shifts are kept in float64 and moved to the input's dtype and device on use,
    so :meth:`to` has nothing to move.
    """

    def __init__(self, dx: float | Tensor, dy: float | Tensor, *, margin: int = 8):
        self.dx = torch.as_tensor(dx, dtype=torch.float64)
        self.dy = torch.as_tensor(dy, dtype=torch.float64)
        if self.dx.shape != self.dy.shape or self.dx.ndim > 1:
            raise InputError(
                f"Shift: dx and dy must be scalars or (B,) tensors of the same shape, "
                f"got {tuple(self.dx.shape)} and {tuple(self.dy.shape)}"
            )
        self.margin = int(margin)

    def _shift(self, x: Tensor, sign: float) -> Tensor:
        H, W = x.shape[-2:]
        largest = torch.cat([self.dx.abs().flatten(), self.dy.abs().flatten()]).max()
        pad = int(np.ceil(float(largest))) + self.margin
        Lh, Lw = H + 2 * pad, W + 2 * pad
        Lh, Lw = Lh + 1 - Lh % 2, Lw + 1 - Lw % 2  # odd sizes: no Nyquist frequency
        fy = torch.fft.fftfreq(Lh, dtype=x.dtype, device=x.device)
        fx = torch.fft.rfftfreq(Lw, dtype=x.dtype, device=x.device)
        dx = self.dx.to(dtype=x.dtype, device=x.device)
        dy = self.dy.to(dtype=x.dtype, device=x.device)
        if dx.ndim == 1:
            dx, dy = dx[:, None, None, None], dy[:, None, None, None]
        phase = torch.exp(-2j * torch.pi * sign * (fy[:, None] * dy + fx[None, :] * dx))
        padded = torch.zeros(*x.shape[:-2], Lh, Lw, dtype=x.dtype, device=x.device)
        padded[..., pad : pad + H, pad : pad + W] = x
        out = torch.fft.irfft2(torch.fft.rfft2(padded) * phase, s=(Lh, Lw))
        return out[..., pad : pad + H, pad : pad + W]

    def forward(self, x: Tensor) -> Tensor:
        """Shift ``(B, C, H, W)`` by ``(dx, dy)``."""
        return self._shift(x, 1.0)

    def adjoint(self, y: Tensor) -> Tensor:
        """Shift ``(B, C, H, W)`` by ``(-dx, -dy)``."""
        return self._shift(y, -1.0)

    def __getitem__(self, index):
        if self.dx.ndim == 0:
            return self
        return Shift(_per_item(self.dx, index), _per_item(self.dy, index), margin=self.margin)


class SelectBands(LinearOperator):
    """Pick bands: ``(B, C, H, W) -> (B, len(indices), H, W)``; the adjoint scatters back.

    Parameters
    ----------
    indices : sequence of int
        Input band of each output band (repeats allowed).
    n_bands : int
        ``C``, the number of input bands (needed by the adjoint).
    """

    def __init__(self, indices: Sequence[int], n_bands: int):
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.n_bands = int(n_bands)
        if self.indices.numel() and (self.indices.min() < 0 or self.indices.max() >= self.n_bands):
            raise InputError(
                f"SelectBands: indices {self.indices.tolist()} "
                f"out of range for {self.n_bands} bands"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, len(indices), H, W)``."""
        return x[:, self.indices.to(x.device)]

    def adjoint(self, y: Tensor) -> Tensor:
        """``(B, len(indices), H, W) -> (B, C, H, W)``, summing repeated bands."""
        out = torch.zeros(y.shape[0], self.n_bands, *y.shape[2:], dtype=y.dtype, device=y.device)
        return out.index_add_(1, self.indices.to(y.device), y)


def _lanczos(t: np.ndarray, a: int) -> np.ndarray:
    """Lanczos-``a`` kernel ``sinc(t) sinc(t / a)`` on ``|t| < a``, 0 outside."""
    return np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)


def _pixel_map(
    out_wcs: WCS, in_wcs: WCS, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """0-based output pixel coordinates -> 0-based input pixel coordinates, through the sky.

    Uses astropy's ``pixel_to_world`` / ``world_to_pixel``, so SIP distortion and a
    change of celestial frame (FK5 vs ICRS) are included.
    """
    sky = out_wcs.pixel_to_world(x, y)
    xi, yi = in_wcs.world_to_pixel(sky)
    return np.asarray(xi, dtype=float), np.asarray(yi, dtype=float)


def _quad_area(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """Area of each pixel footprint from its corners ``(H + 1, W + 1)`` (shoelace)."""
    x0, x1, x2, x3 = xc[:-1, :-1], xc[:-1, 1:], xc[1:, 1:], xc[1:, :-1]
    y0, y1, y2, y3 = yc[:-1, :-1], yc[:-1, 1:], yc[1:, 1:], yc[1:, :-1]
    return 0.5 * np.abs((x0 - x2) * (y1 - y3) - (x1 - x3) * (y0 - y2))


class Resample(LinearOperator):
    """Flux-conserving resampling from one WCS pixel grid to another.

    The input (a model frame) holds fluxes per pixel of a band-limited image. The output
    pixel ``p`` receives

        ``y_p = (A_p / a) * mean_s I(u_ps)``

    where ``u_ps`` are ``n x n`` points spread evenly over the footprint of ``p`` mapped
    into the input grid through the sky, ``I`` is the Lanczos-3 interpolation of the
    input (weights normalized to sum 1 so that a constant is kept), and ``A_p / a`` is
    the area of the footprint in input pixels (from its four mapped corners, so local
    Jacobians, rotation and SIP are included). ``n = 1`` samples the pixel centre.

    With ``pixel_response=True`` (default) ``n = ceil(out_scale / in_scale) + 1`` when
    the output is coarser: the input surface brightness is integrated over the output
    pixel, so a coarser grid does not alias and the result is what a detector with
    that pixel would record from the input scene. With ``pixel_response=False`` the
    output samples the input at pixel centres (``n = 1``); use this when the output
    pixel's response is already part of the model, e.g. after convolving with a
    difference kernel built from a survey PSF image, which includes the survey pixel
    (see :func:`galdeblend.frames.observation_operator`).

    When the two grids differ only by an integer shift (same scale and orientation),
    the operator is a plain crop / zero-pad.

    The matrix is built once (numpy) and applied as a sparse ``(n_out, n_in)`` matrix,
    shared by the batch and the bands; the adjoint is its transpose.

    Parameters
    ----------
    in_wcs, out_wcs : astropy.wcs.WCS
        Celestial WCS of the input and output grids.
    in_shape, out_shape : (int, int)
        ``(H, W)`` of the input and output grids.
    pixel_response : bool
        Integrate over the output pixel footprint (True) or sample its centre (False).
    order : int
        Lanczos order of the interpolation.

    The weights are stored once as float32 CSR matrices and converted to each input's
    dtype and device on first use (cached), so :meth:`to` has nothing to move.
    """

    def __init__(
        self,
        in_wcs: WCS,
        in_shape: tuple[int, int],
        out_wcs: WCS,
        out_shape: tuple[int, int],
        *,
        pixel_response: bool = True,
        order: int = 3,
    ):
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        if len(self.in_shape) != 2 or len(self.out_shape) != 2:
            raise InputError(
                f"Resample: in_shape and out_shape must be (H, W), got {in_shape} and {out_shape}"
            )
        in_wcs, out_wcs = in_wcs.celestial, out_wcs.celestial
        self.offset = self._integer_offset(in_wcs, out_wcs)
        self._matrices: dict[tuple, tuple[Tensor, Tensor]] = {}
        if self.offset is None:
            M = self._build(in_wcs, out_wcs, pixel_response, order).to(torch.float32)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                master = (M.to_sparse_csr(), M.t().coalesce().to_sparse_csr())
            self._matrices[(torch.float32, torch.device("cpu"))] = master

    def _integer_offset(self, in_wcs: WCS, out_wcs: WCS) -> tuple[int, int] | None:
        """``(dy, dx)`` with ``input = output + (dy, dx)`` if the grids differ by that only."""
        H, W = self.out_shape
        y, x = np.meshgrid(np.linspace(0, H - 1, 5), np.linspace(0, W - 1, 5), indexing="ij")
        xi, yi = _pixel_map(out_wcs, in_wcs, x.ravel(), y.ravel())
        dx, dy = xi - x.ravel(), yi - y.ravel()
        ox, oy = np.round(dx[0]), np.round(dy[0])
        if np.all(np.abs(dx - ox) < 1e-6) and np.all(np.abs(dy - oy) < 1e-6):
            return int(oy), int(ox)
        return None

    def _build(self, in_wcs: WCS, out_wcs: WCS, pixel_response: bool, order: int) -> Tensor:
        H, W = self.out_shape
        Hi, Wi = self.in_shape
        # Footprint area of every output pixel in input pixels.
        yc, xc = np.meshgrid(np.arange(H + 1) - 0.5, np.arange(W + 1) - 0.5, indexing="ij")
        xci, yci = _pixel_map(out_wcs, in_wcs, xc.ravel(), yc.ravel())
        area = _quad_area(xci.reshape(H + 1, W + 1), yci.reshape(H + 1, W + 1))
        ratio = np.sqrt(np.median(area))  # output / input pixel scale
        n = int(np.ceil(ratio)) + 1 if (pixel_response and ratio > 1.0) else 1
        sub = (np.arange(n) + 0.5) / n - 0.5
        # Sample points: (H, W, n, n) -> flat.
        ys = (np.arange(H)[:, None, None, None] + sub[None, None, :, None]) * np.ones((1, W, 1, n))
        xs = (np.arange(W)[None, :, None, None] + sub[None, None, None, :]) * np.ones((H, 1, n, 1))
        xi, yi = _pixel_map(out_wcs, in_wcs, xs.ravel(), ys.ravel())
        out_index = np.repeat(np.arange(H * W), n * n)
        point_weight = np.repeat(area.ravel(), n * n) / (n * n)
        # Separable Lanczos taps around each point.
        taps = np.arange(-order + 1, order + 1)
        x0, y0 = np.floor(xi), np.floor(yi)
        tx = x0[:, None] + taps[None, :]
        ty = y0[:, None] + taps[None, :]
        wx = _lanczos(xi[:, None] - tx, order)
        wy = _lanczos(yi[:, None] - ty, order)
        wx /= wx.sum(axis=1, keepdims=True)
        wy /= wy.sum(axis=1, keepdims=True)
        weight = (wy[:, :, None] * wx[:, None, :]) * point_weight[:, None, None]
        rows = np.broadcast_to(out_index[:, None, None], weight.shape)
        iy = np.broadcast_to(ty[:, :, None], weight.shape)
        ix = np.broadcast_to(tx[:, None, :], weight.shape)
        inside = (iy >= 0) & (iy < Hi) & (ix >= 0) & (ix < Wi) & (weight != 0)
        cols = (iy[inside] * Wi + ix[inside]).astype(np.int64)
        M = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows[inside].astype(np.int64), cols])),
            torch.from_numpy(weight[inside]),
            size=(H * W, Hi * Wi),
            check_invariants=False,
        )
        return M.coalesce()

    def _sparse(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``M`` and ``M^T`` (sparse CSR) in ``like``'s dtype and device (cached).

        The weights are kept in float32 (a few bytes per entry matter when thousands of
        operators are held for an EM run); other dtypes are converted from them, so the
        adjoint stays exact in any precision.
        """
        key = (like.dtype, like.device)
        if key not in self._matrices:
            M, Mt = self._matrices[(torch.float32, torch.device("cpu"))]
            self._matrices[key] = (
                M.to(dtype=like.dtype, device=like.device),
                Mt.to(dtype=like.dtype, device=like.device),
            )
        return self._matrices[key]

    def _crop(self, x: Tensor, src_shape, dst_shape, offset) -> Tensor:
        """``dst[p] = src[p + offset]`` where defined, zero elsewhere."""
        (Hs, Ws), (Hd, Wd), (oy, ox) = src_shape, dst_shape, offset
        out = torch.zeros(*x.shape[:-2], Hd, Wd, dtype=x.dtype, device=x.device)
        y0, y1 = max(0, -oy), min(Hd, Hs - oy)
        x0, x1 = max(0, -ox), min(Wd, Ws - ox)
        if y1 > y0 and x1 > x0:
            out[..., y0:y1, x0:x1] = x[..., y0 + oy : y1 + oy, x0 + ox : x1 + ox]
        return out

    def _apply(self, M: Tensor, x: Tensor, shape: tuple[int, int]) -> Tensor:
        lead = x.shape[:-2]
        flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
        return (M @ flat.T.contiguous()).T.reshape(*lead, *shape)

    def forward(self, x: Tensor) -> Tensor:
        """Resample ``(B, C, H_in, W_in) -> (B, C, H_out, W_out)``."""
        if self.offset is not None:
            return self._crop(x, self.in_shape, self.out_shape, self.offset)
        return self._apply(self._sparse(x)[0], x, self.out_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        """Transpose ``(B, C, H_out, W_out) -> (B, C, H_in, W_in)``."""
        if self.offset is not None:
            oy, ox = self.offset
            return self._crop(y, self.out_shape, self.in_shape, (-oy, -ox))
        return self._apply(self._sparse(y)[1], y, self.in_shape)
