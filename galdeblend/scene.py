"""Source instances placed on observations, and the linear problem they pose.

A scene is a set of observations of one field (one or several surveys) and the
source instances seen in it: galaxies, each on its own model frame centred on its
position, and one sky instance per observation band. :func:`build_problem` turns a
scene into what the engine consumes: the observations flattened and concatenated
into ``y`` with their noise variance, and per instance the operator ``A_b`` (a
:class:`~galdeblend.operators.Stack` of one ``A_ib`` per observation).

Each instance has a linear, recorded flux scale per band (``scale``): the prior
works on ``x_b`` of order unity, the sky holds ``scale * x_b``
(DESIGN.md section 1: dynamic range lives inside ``A``).

- Galaxies: ``scale`` is the peak of the (PSF-blurred) data near the position in
  each band, the other galaxies' light (point-source fits) taken out, at least 3 noise
  sigma, converted to flux per model pixel.
- Sky: a smooth background on a coarse ``(1, g, g)`` grid (``g`` from the sky prior's
  shape; :data:`SKY_GRID` for new priors) interpolated onto the observation's pixels, in
  units of the band's noise sigma.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from astropy.coordinates import SkyCoord
from astropy.table import Table
from scipy import ndimage, optimize
from torch import Tensor

from galdeblend.background import plane_background
from galdeblend.errors import GaldeblendWarning, InputError
from galdeblend.frames import Frame, _tan_wcs, gaussian_psf, observation_operator
from galdeblend.io.observation import Observation
from galdeblend.operators.astro import SelectBands
from galdeblend.operators.base import Compose, Interpolate, LinearOperator, Mask, Stack

__all__ = [
    "PriorFrame",
    "Instance",
    "Problem",
    "detect_sources",
    "detection_defaults",
    "detection_options",
    "catalog_positions",
    "place_instances",
    "build_problem",
    "sky_operator",
    "group_fields",
    "in_footprint",
]

SKY_GRID = 2
"""Side of new sky priors' node grid: 2 x 2 nodes are a plane plus a twist over the cutout
(:class:`~galdeblend.operators.base.Interpolate`), the residual background of a
sky-subtracted cutout; a finer grid lets the sky take galaxy light (8 x 8 nodes took a
median 5% of the galaxies' light in 0.75" apertures on the validation blends)."""
KERNEL_FLUX_FRACTION = 0.998  # difference kernels cropped to this fraction of their |sum|


@dataclass(frozen=True)
class PriorFrame:
    """The model frame a galaxy prior was learned on, to be placed anywhere on the sky.

    Attributes
    ----------
    shape : (int, int, int)
        ``(C, H, W)`` of one galaxy stamp.
    pixel_scale : float
        Arcsec per model pixel.
    bands : tuple of str
        Band of each plane.
    psf_fwhm : float
        FWHM (arcsec) of the Gaussian model PSF.
    """

    shape: tuple[int, int, int]
    pixel_scale: float
    bands: tuple[str, ...]
    psf_fwhm: float

    def at(self, center: SkyCoord) -> Frame:
        """The frame centred on ``center`` (north up)."""
        C, H, W = self.shape
        psf = gaussian_psf(self.psf_fwhm, self.pixel_scale)
        return Frame(
            self.shape,
            _tan_wcs(center, self.pixel_scale, (H, W)),
            self.bands,
            np.repeat(psf[None], C, 0),
        )

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "pixel_scale": self.pixel_scale,
            "bands": list(self.bands),
            "psf_fwhm": self.psf_fwhm,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PriorFrame:
        return cls(
            tuple(d["shape"]), float(d["pixel_scale"]), tuple(d["bands"]), float(d["psf_fwhm"])
        )


@dataclass
class Instance:
    """One source instance of a scene.

    Attributes
    ----------
    id : int
    kind : str
        ``"galaxy"`` or ``"sky"``.
    frame : Frame
        Its model frame (for the sky: the coarse grid over its observation).
    scale : ndarray, shape (C,)
        Flux scale per band: the model holds ``scale * x``.
    center : SkyCoord or None
        Galaxy position.
    observation : int or None
        Sky: the observation it belongs to.
    band : int or None
        Sky: the observation band it belongs to.
    """

    id: int
    kind: str
    frame: Frame
    scale: np.ndarray
    center: SkyCoord | None = None
    observation: int | None = None
    band: int | None = None


@dataclass
class Problem:
    """The linear problem of a scene, ready for :func:`galdeblend.engine.sample_posterior`.

    Attributes
    ----------
    y : Tensor, shape (N,)
        All observations flattened and concatenated (masked pixels are 0).
    noise_variance : Tensor, shape (N,)
    operators : list of Stack
        ``A_b`` per instance, mapping ``(B, *shape_b)`` (prior units) to ``(B, N)``.
    obs_shapes : list of tuple
        ``(C_i, H_i, W_i)`` of each observation block.
    """

    y: Tensor
    noise_variance: Tensor
    operators: list[Stack]
    obs_shapes: list[tuple[int, int, int]] = field(default_factory=list)

    def split(self, v: Tensor) -> list[Tensor]:
        """``(B, N)`` -> per observation ``(B, C_i, H_i, W_i)``."""
        sizes = [int(np.prod(s)) for s in self.obs_shapes]
        return [b.reshape(v.shape[0], *s) for b, s in zip(v.split(sizes, dim=1), self.obs_shapes)]


def _noise_sigma(obs: Observation) -> np.ndarray:
    """Median noise standard deviation per band over good pixels, ``(C,)``."""
    return np.array([np.sqrt(np.median(v[~m])) for v, m in zip(obs.variance, obs.mask)])


def _psf_fwhm_pix(obs: Observation) -> float:
    """FWHM in pixels of the Gaussian with the PSF's peak, median over bands (3 without PSF)."""
    if obs.psf is None:
        return 3.0
    peak = obs.psf.max(axis=(1, 2))
    return float(np.clip(np.median(np.sqrt(4 * np.log(2) / np.pi / peak)), 1.5, 15))


def _merge_faint_peaks(smooth: np.ndarray, labels: np.ndarray, min_prominence: float) -> np.ndarray:
    """Segments whose peak rises less than ``min_prominence`` above their highest saddle
    point with a touching segment are merged into that segment, lowest prominence first.

    ``smooth`` (H, W) is the detection map, ``labels`` (H, W) its segmentation (0 =
    background); the saddle of two touching segments is the highest ``min`` of the map over
    pairs of 4-connected pixels, one in each. Returns the merged labels (H, W).
    """
    saddles: dict[int, dict[int, float]] = {}
    for a, b, va, vb in (
        (labels[:, :-1], labels[:, 1:], smooth[:, :-1], smooth[:, 1:]),
        (labels[:-1], labels[1:], smooth[:-1], smooth[1:]),
    ):
        touch = (a != b) & (a > 0) & (b > 0)
        for la, lb, level in zip(a[touch], b[touch], np.minimum(va, vb)[touch]):
            for p, q in ((int(la), int(lb)), (int(lb), int(la))):
                touching = saddles.setdefault(p, {})
                touching[q] = max(touching.get(q, -np.inf), level)
    if not saddles:
        return labels
    index = np.arange(labels.max() + 1)
    peak = dict(zip(index, ndimage.maximum(smooth, labels, index)))
    merged = labels.copy()
    while True:
        prominence = {
            p: (peak[p] - max(nb.values()), max(nb, key=nb.get)) for p, nb in saddles.items() if nb
        }
        if not prominence:
            return merged
        p, (rise, q) = min(prominence.items(), key=lambda item: item[1][0])
        if rise >= min_prominence:
            return merged
        merged[merged == p] = q
        peak[q] = max(peak[q], peak[p])
        for r, level in saddles.pop(p).items():
            del saddles[r][p]
            if r != q:
                saddles[q][r] = saddles[r][q] = max(saddles[q].get(r, -np.inf), level)


def detect_sources(
    observations: Sequence[Observation],
    *,
    nsigma: float = 3.0,
    npixels: int = 8,
    contrast: float = 0.01,
    min_prominence: float = 2.0,
    min_snr: float = 8.0,
    min_smoothing: float = 0.15,
    min_separation: float = 0.2,
    max_sources: int = 8,
) -> SkyCoord:
    """Galaxy positions found with photutils (detection and peak deblending).

    Each observation gives an inverse-variance weighted band sum in units of its noise,
    less its residual background (:func:`galdeblend.background.plane_background`), smoothed
    by a Gaussian of the PSF's FWHM, at least ``min_smoothing`` arcsec (at the scale of a
    faint galaxy rather than of a sharp PSF, so noise in a galaxy's outskirts does not make
    peaks); :func:`photutils.segmentation.detect_sources` (at ``nsigma`` times the smoothed
    map's noise, from its median absolute deviation) and
    :func:`~photutils.segmentation.deblend_sources` (``contrast``) find the peaks, and a peak
    rising less than ``min_prominence`` times that noise above its saddle with a neighbour
    is merged into it. Segments whose summed signal-to-noise is below ``min_snr`` are
    dropped (at 5, 29 detections in 200 simulated blends matched no galaxy, most of them
    pieces of bright galaxies' outskirts on the sharp HST images; at 8, none). A galaxy's
    position is its segment's peak on the smoothed map, refined to a fraction of a pixel by
    a quadratic fit to the 3 x 3 pixels around it: the centroid of a segment cut at a
    saddle leans away from the neighbour (median offset from the true centres 0.036"
    against 0.009" for the peak in those blends: ``benchmarks/detection.py``). The
    observations are taken sharpest PSF first; a position is kept when it is
    ``min_separation`` arcsec or more from every kept one and, when it comes from a coarser
    observation, at least that observation's PSF FWHM from the sharper observations' (which
    resolve what it sees as one). The ``max_sources`` of highest signal-to-noise are kept.
    """
    from astropy.convolution import convolve
    from astropy.stats import mad_std
    from photutils.segmentation import (
        SegmentationImage,
        SourceCatalog,
        deblend_sources,
        make_2dgaussian_kernel,
    )
    from photutils.segmentation import detect_sources as _detect
    from photutils.utils.exceptions import NoDetectionsWarning

    found: list[tuple[float, SkyCoord]] = []
    psf_fwhm_pix = [_psf_fwhm_pix(o) for o in observations]
    fwhm_arcsec = [f * o.pixel_scale for f, o in zip(psf_fwhm_pix, observations)]
    for i in sorted(range(len(observations)), key=lambda i: fwhm_arcsec[i]):
        obs = observations[i]
        sharper = list(found)
        w = obs.weight
        covered = w.sum(0) > 0
        snr = (w * obs.data).sum(0) / np.sqrt(w.sum(0).clip(1e-30))
        snr = np.where(covered, snr - plane_background(snr, mask=~covered), 0.0)
        fwhm_pix = max(psf_fwhm_pix[i], min_smoothing / obs.pixel_scale)
        size = int(2 * np.ceil(2 * fwhm_pix) + 1)
        kernel = make_2dgaussian_kernel(fwhm_pix, size=size)
        smooth = convolve(snr, kernel, normalize_kernel=True)
        # The median absolute deviation: bright galaxies filling the cutout inflate a
        # standard deviation (to 50 times the noise on the shipped example's HSC cutout).
        noise = (mad_std(smooth[covered]) if covered.any() else 0.0) or 1.0
        with warnings.catch_warnings():  # an empty field is a valid outcome
            warnings.simplefilter("ignore", NoDetectionsWarning)
            segm = _detect(smooth, nsigma * noise, n_pixels=npixels)
        if segm is None:
            continue
        segm = deblend_sources(
            smooth, segm, n_pixels=npixels, contrast=contrast, progress_bar=False
        )
        segm = SegmentationImage(_merge_faint_peaks(smooth / noise, segm.data, min_prominence))
        cat = SourceCatalog(smooth, segm)
        # photutils falls back to the segment centroid where the quadratic has no maximum.
        peaks = zip(cat.label, cat.x_centroid_quad, cat.y_centroid_quad, cat.segment_flux)
        for label, x, y, flux in peaks:
            pixels = segm.data == label
            if snr[pixels].sum() / np.sqrt(pixels.sum()) < min_snr:
                continue
            pos = obs.wcs.celestial.pixel_to_world(x, y)
            if all(pos.separation(p).arcsec >= min_separation for _, p in found) and all(
                pos.separation(p).arcsec >= fwhm_arcsec[i] for _, p in sharper
            ):
                found.append((float(flux), pos))
    found.sort(key=lambda t: -t[0])
    if len(found) > max_sources:
        warnings.warn(
            f"detection found {len(found)} sources and keeps the {max_sources} of highest "
            "signal; raise max_sources (the 'detection' settings) or give a catalog to keep more",
            GaldeblendWarning,
            stacklevel=2,
        )
    coords = [p for _, p in found[:max_sources]]
    if not coords:
        return SkyCoord([], [], unit="deg")
    return SkyCoord([c.ra for c in coords], [c.dec for c in coords])


def detection_defaults() -> dict:
    """The keyword options of :func:`detect_sources` and their defaults, ``{name: value}``."""
    return {
        name: p.default
        for name, p in inspect.signature(detect_sources).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }


def detection_options(options: dict) -> dict:
    """``options`` checked against the keyword options of :func:`detect_sources`.

    Raises :class:`~galdeblend.errors.InputError` naming any unknown option.
    """
    known = set(detection_defaults())
    unknown = set(options) - known
    if unknown:
        raise InputError(f"detection: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    return dict(options)


def catalog_positions(catalog: Table | str) -> SkyCoord:
    """RA/Dec of a catalog given as an astropy Table or a file astropy reads.

    Columns named ``ra``/``dec`` (any case, degrees, or with units).
    """
    source = catalog if isinstance(catalog, str) else "catalog"
    if not isinstance(catalog, Table):
        try:
            catalog = Table.read(catalog)
        except Exception as err:  # astropy raises many kinds for unreadable files
            raise InputError(f"{source}: cannot read the catalog ({err})") from err
    names = {n.lower(): n for n in catalog.colnames}
    if "ra" not in names or "dec" not in names:
        raise InputError(f"{source}: needs columns RA and Dec, has {catalog.colnames}")
    ra, dec = catalog[names["ra"]], catalog[names["dec"]]
    unit = None if getattr(ra, "unit", None) is not None else "deg"
    return SkyCoord(ra, dec, unit=unit)


def _sky_frame(obs: Observation, band: int, grid: int) -> Frame:
    """Coarse ``(1, grid, grid)`` frame whose nodes sit where :class:`Interpolate` puts them."""
    _, H, W = obs.shape
    wcs = obs.wcs.celestial.deepcopy()
    wcs.sip = None
    fx, fy = W / grid, H / grid
    f = np.array([fx, fy])
    if wcs.wcs.has_cd():
        wcs.wcs.cd = wcs.wcs.cd * f[None, :]
    else:
        wcs.wcs.pc = wcs.wcs.get_pc() * f[None, :]
    wcs.wcs.crpix = (wcs.wcs.crpix - 1 - (f - 1) / 2) / f + 1
    wcs.wcs.ctype = [c.replace("-SIP", "") for c in wcs.wcs.ctype]
    wcs.pixel_shape = (grid, grid)
    return Frame((1, grid, grid), wcs, (obs.bands[band],), None)


Placed = tuple[np.ndarray, int, int]  # an array (..., h, w) and the row, column of its pixel 0


def _common(*placed: Placed) -> list[np.ndarray] | None:
    """Views of placed arrays over the pixels that all of them cover (None: no overlap)."""
    top = max(row for _, row, _ in placed)
    left = max(col for _, _, col in placed)
    bottom = min(row + a.shape[-2] for a, row, _ in placed)
    right = min(col + a.shape[-1] for a, _, col in placed)
    if bottom <= top or right <= left:
        return None
    return [a[..., top - row : bottom - row, left - col : right - col] for a, row, col in placed]


def _psf_stamp(psf: np.ndarray, x: float, y: float) -> Placed:
    """The PSF ``(h, w)`` centred on pixel position ``(x, y)``: a ``(h + 1, w + 1)`` stamp,
    shifted by bilinear weights (sum 1), placed in the image."""
    h, w = psf.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    stamp = np.zeros((h + 1, w + 1))
    stamp[:-1, :-1] += (1 - fy) * (1 - fx) * psf
    stamp[:-1, 1:] += (1 - fy) * fx * psf
    stamp[1:, :-1] += fy * (1 - fx) * psf
    stamp[1:, 1:] += fy * fx * psf
    return stamp, y0 - h // 2, x0 - w // 2


PROFILE_SIGMAS = (0.0, 0.15, 0.35, 0.7)
"""Gaussian sigmas (arcsec) of the round profiles, each seen through the PSF, whose
non-negative sum models a neighbour's light when a galaxy's flux scale is measured."""


def _profiles(psf: np.ndarray, pixel_scale: float) -> list[np.ndarray]:
    """The PSF ``(h, w)`` convolved with a round Gaussian of each of :data:`PROFILE_SIGMAS`
    (arcsec; ``pixel_scale`` in arcsec per pixel): one image per sigma, padded by 4 sigma
    on each side, of unit sum; :func:`_psf_stamp` places each at a position."""
    profiles = []
    for sigma_arcsec in PROFILE_SIGMAS:
        sigma = sigma_arcsec / pixel_scale
        pad = int(np.ceil(4 * sigma))
        profile = ndimage.gaussian_filter(np.pad(psf, pad), sigma, mode="constant")
        profiles.append(profile / profile.sum())
    return profiles


def _profile_fit(stamps: Sequence[Placed], data: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Amplitudes ``(n,)``, at least 0, of ``n`` placed stamps fitted jointly to one band's
    ``data`` ``(H, W)`` by non-negative weighted least squares (``weight``: inverse
    variance), solved as NNLS on the Cholesky factor of the normal equations."""
    image: Placed = (np.stack([weight, weight * data]), 0, 0)
    n = len(stamps)
    gram = np.zeros((n, n))
    rhs = np.zeros(n)
    for j, s_j in enumerate(stamps):
        shared = _common(s_j, image)
        if shared is not None:
            rhs[j] = (shared[0] * shared[1][1]).sum()
        for k, s_k in enumerate(stamps[: j + 1]):
            shared = _common(s_j, s_k, image)
            if shared is not None:
                gram[j, k] = gram[k, j] = (shared[0] * shared[1] * shared[2][0]).sum()
    if not np.trace(gram) > 0:
        return np.zeros(n)
    # |W^1/2 (d - S a)|^2 = |L^T a - L^-1 b|^2 + const for gram = L L^T; the jitter keeps
    # stamps that miss the image (zero rows) and near-degenerate profiles factorizable.
    L = np.linalg.cholesky(gram + 1e-9 * np.trace(gram) / n * np.eye(n))
    return optimize.nnls(L.T, np.linalg.solve(L, rhs))[0]


def _galaxy_scales(frames: Sequence[Frame], observations: Sequence[Observation]) -> np.ndarray:
    """Flux per model pixel of the data's peak near each galaxy, per band, ``(K, C)``.

    The peak is the brightest good pixel within 0.5" of the galaxy's position, at least 3
    noise sigma, after the light of the other ``K - 1`` galaxies is taken out: each is
    modelled as a non-negative sum of round Gaussian profiles (:data:`PROFILE_SIGMAS`) seen
    through the observation's PSF at its position, all amplitudes fitted jointly per band.
    Without it a faint galaxy beside a bright one takes the bright one's peak as its scale
    (up to 15 times its own in the crowded validation blends); with point sources alone,
    the extended light of a large neighbour still inflated it (by a median 1.7 times in
    HSC g, r and i for the neighbours of the largest validation galaxies).
    """
    K = len(frames)
    if K == 0:
        return np.zeros((0, 0))
    bands = frames[0].bands
    scale = np.full((K, len(bands)), np.nan)
    centers = [f.wcs.pixel_to_world((f.shape[2] - 1) / 2, (f.shape[1] - 1) / 2) for f in frames]
    n_profiles = len(PROFILE_SIGMAS)
    for obs in observations:
        xy = [tuple(float(v) for v in obs.wcs.celestial.world_to_pixel(c)) for c in centers]
        r = max(2, int(round(0.5 / obs.pixel_scale)))
        sigma = _noise_sigma(obs)
        weight = obs.weight  # (C, H, W), computed by the property on each access
        area = (frames[0].pixel_scale / obs.pixel_scale) ** 2
        for c, band in enumerate(obs.bands):
            if band not in bands:
                continue
            data = np.where(obs.mask[c], 0.0, obs.data[c])
            if obs.psf is None or K == 1:
                stamps, amplitude = [], np.zeros(0)
            else:
                profiles = _profiles(obs.psf[c], obs.pixel_scale)
                stamps = [_psf_stamp(profile, x, y) for x, y in xy for profile in profiles]
                amplitude = _profile_fit(stamps, data, weight[c])
            for k, (x, y) in enumerate(xy):
                row, col = int(round(y)), int(round(x))
                ys = slice(max(row - r, 0), max(row + r + 1, 0))
                xs = slice(max(col - r, 0), max(col + r + 1, 0))
                patch = data[ys, xs].copy()
                for j, stamp in enumerate(stamps):
                    shared = _common(stamp, (patch, ys.start, xs.start))
                    if j // n_profiles != k and shared is not None:
                        shared[1] -= amplitude[j] * shared[0]
                patch[obs.mask[c, ys, xs]] = 0.0
                peak = patch.max() if patch.size else 0.0
                scale[k, bands.index(band)] = max(peak, 3 * sigma[c]) * area
    for k in range(K):
        if np.all(np.isnan(scale[k])):
            raise InputError(
                f"no observation covers the galaxy at {centers[k].to_string('decimal')}"
            )
        scale[k] = np.where(np.isnan(scale[k]), np.nanmedian(scale[k]), scale[k])
    return scale


def place_instances(
    observations: Sequence[Observation],
    galaxy_frame: PriorFrame,
    *,
    positions: SkyCoord | None = None,
    sky_grid: int = SKY_GRID,
    **detect_options,
) -> list[Instance]:
    """Galaxy instances at ``positions`` (default: :func:`detect_sources`), then the sky.

    One sky instance per band of every observation.
    """
    if positions is None:
        positions = detect_sources(observations, **detect_options)
    centers = list(positions) if not positions.isscalar else [positions]
    frames = [galaxy_frame.at(center) for center in centers]
    scales = _galaxy_scales(frames, observations)
    instances = [
        Instance(k, "galaxy", frame, scale, center)
        for k, (frame, scale, center) in enumerate(zip(frames, scales, centers))
    ]
    for i, obs in enumerate(observations):
        sigma = _noise_sigma(obs)
        for c in range(obs.shape[0]):
            frame = _sky_frame(obs, c, sky_grid)
            instances.append(
                Instance(len(instances), "sky", frame, sigma[c : c + 1], observation=i, band=c)
            )
    return instances


def sky_operator(obs: Observation, band: int, grid: int, scale: float = 1.0) -> LinearOperator:
    """``(B, 1, g, g) -> (B, C, H, W)``: interpolate, scale, place in ``band``, mask.

    The sky instance of ``obs``'s plane ``band`` on its ``(1, g, g)`` node grid; with
    ``scale = 1`` it renders a sky result's samples, which are in the data's units.
    """
    C, H, W = obs.shape
    good = torch.from_numpy((~obs.mask).astype(np.float64))
    return Compose(
        [
            Mask(good),
            SelectBands([band], C).T,
            Mask(torch.tensor(float(scale), dtype=torch.float64)),
            Interpolate((grid, grid), (H, W)),
        ]
    )


def build_problem(observations: Sequence[Observation], instances: Sequence[Instance]) -> Problem:
    """The stacked observations and each instance's ``A_b`` in prior units."""
    shapes = [tuple(o.shape) for o in observations]
    operators = []
    for inst in instances:
        ops: list[LinearOperator | None] = []
        for i, obs in enumerate(observations):
            if inst.kind == "sky":
                op = (
                    sky_operator(obs, inst.band, inst.frame.shape[1], float(inst.scale[0]))
                    if inst.observation == i
                    else None
                )
            elif any(b in inst.frame.bands for b in obs.bands):
                scale = torch.from_numpy(inst.scale.astype(np.float64))[:, None, None]
                A_ib = observation_operator(
                    inst.frame, obs, kernel_flux_fraction=KERNEL_FLUX_FRACTION
                )
                op = Compose([A_ib, Mask(scale)])
            else:
                op = None
            ops.append(op)
        operators.append(Stack(ops, shapes, inst.frame.shape))
    y = torch.cat([torch.from_numpy(np.where(o.mask, 0.0, o.data)).flatten() for o in observations])
    var = torch.cat([torch.from_numpy(o.variance).flatten() for o in observations])
    if not torch.isfinite(var).all() or (var <= 0).any():
        raise InputError(
            "observation variance must be finite and > 0 (the reader masks bad pixels)"
        )
    return Problem(y, var, operators, shapes)


def in_footprint(positions: SkyCoord, obs: Observation) -> np.ndarray:
    """Which ``positions`` fall on the pixel grid of ``obs`` (bool, one per position)."""
    _, H, W = obs.shape
    x, y = obs.wcs.celestial.world_to_pixel(positions)
    return (-0.5 <= x) & (x <= W - 0.5) & (-0.5 <= y) & (y <= H - 0.5)


def group_fields(observations: Sequence[Observation]) -> list[list[int]]:
    """Indices of the observations grouped by field: two observations are of one field
    when the centre of either falls inside the other's footprint."""

    def center(o: Observation) -> SkyCoord:
        _, H, W = o.shape
        return o.wcs.celestial.pixel_to_world((W - 1) / 2, (H - 1) / 2)

    def inside(c: SkyCoord, o: Observation) -> bool:
        return bool(in_footprint(c, o))

    parent = list(range(len(observations)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    centers = [center(o) for o in observations]
    for i, a in enumerate(observations):
        for j in range(i):
            if inside(centers[i], observations[j]) or inside(centers[j], a):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(observations)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())
