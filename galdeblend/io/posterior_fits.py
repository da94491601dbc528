"""Posterior FITS files: :func:`write_posterior` and :func:`read_posterior`.

One file holds a :class:`~galdeblend.results.DeblendResult`: the posterior samples of every
source instance, the observations they explain (so the file is self-contained), the
posterior-mean model and residual of each observation, a catalogue of the sources and the
provenance of the run. :func:`read_posterior` rebuilds the same ``DeblendResult``.

File layout
-----------
Array axes are given in numpy order; FITS axis 1 is the last numpy axis (``x``).

``PRIMARY`` (no data)
    ``GDBVERS`` galdeblend version that wrote the file; ``DATE`` UTC time of writing
    (``YYYY-MM-DDThh:mm:ss``); ``NSRC`` number of source instances; ``NOBS`` number of
    observations; ``INPUT<i>`` the input file (``Observation.source``) of observation ``i``;
    ``PROVJSON`` the whole ``result.provenance`` as JSON (a long string continued over
    ``CONTINUE`` cards; values JSON cannot hold are written with ``str``); and, for reading
    by eye, one ``HIERARCH GDB <KEY> [<SUBKEY> ...]`` card per scalar in
    ``result.provenance`` (nested mappings give the key path, e.g. ``GDB PRIORS GALAXY`` for
    prior identifiers, ``GDB SAMPLER STEPS`` for sampler settings, ``GDB SEED``; scalars a
    FITS card cannot hold, such as NaN or over-long keys, appear in ``PROVJSON`` only).

``SRC<id>_SAMPLES``, one per source instance (``<id>`` is ``InstanceResult.id``)
    Posterior samples ``(n_samples, C, H, W)``, always 4-D, in the samples' dtype. WCS axes:
    1, 2 the celestial axes of the instance's model frame, 3 ``BAND`` (``CTYPE3 = 'BAND'``,
    linear, world value = 1-based band number, named by ``BAND1`` ... ``BAND<C>``), 4
    ``SAMPLE`` (``CTYPE4 = 'SAMPLE'``, world value = 1-based sample number). Keywords:
    ``KIND`` source kind, ``SRCID`` instance id, ``NSAMPLE``; ``RA``, ``DEC`` (ICRS, deg)
    when the instance has a centre; ``OBSIDX`` the observation index of a sky instance.
``SRC<id>_MEAN``, ``SRC<id>_STD``
    Posterior mean and standard deviation (``ddof=1``; 0 for one sample) ``(C, H, W)``,
    celestial WCS plus the ``BAND`` axis and the same keywords.
``SRC<id>_PSF`` (when the model frame has a PSF)
    The model PSF ``(C, h, w)`` at the model pixel scale (no sky WCS; ``BAND<n>``,
    ``PIXSCALE`` in arcsec).

``OBS<i>_DATA``, ``OBS<i>_VARIANCE``, ``OBS<i>_MASK``, ``OBS<i>_MODEL``, ``OBS<i>_RESIDUAL``
    One set per observation ``i`` (0-based): pixels, noise variance, mask (``uint8``, 1 =
    bad pixel), the posterior-mean model rendered in the observation (``result.models[i]``)
    and the residual (data - model, 0 where masked), each ``(C_i, H_i, W_i)`` with the
    observation's celestial WCS plus the ``BAND`` axis. Keywords: ``BAND<n>``, ``SOURCE``
    input file, ``HDU`` the input HDU (absent when unknown), ``OBSIDX``.
``OBS<i>_PSF`` (when the observation has a PSF)
    The observation PSF ``(C_i, h, w)`` (``BAND<n>``, ``PIXSCALE``).

``<prefix>_WCS`` (only for a WCS with SIP distortion)
    astropy reads SIP distortion in two dimensions only, so when a celestial WCS has SIP
    terms its image HDUs carry the core WCS without SIP (a TAN approximation, flagged by
    ``WCSSIP = '<prefix>_WCS'``) and the exact 2-D WCS, SIP included, is the header of this
    HDU, whose data is an ``(H, W)`` ``uint8`` image of zeros (astropy warns about a WCS on a
    header without pixel axes); :func:`read_posterior` uses it. ``<prefix>`` is ``OBS<i>``
    or ``SRC<id>``.

``SOURCES`` binary table, one row per source instance
    ``ID`` (int64), ``KIND`` (string), ``RA``, ``DEC`` (ICRS deg, NaN without a centre),
    ``OBSIDX`` (observation of a sky instance, -1 for the others), ``FLUX_<band>`` and
    ``FLUX_ERR_<band>`` for every band of any model frame (posterior mean and standard
    deviation of the total flux in the band, in data units; NaN when the instance's frame
    lacks the band), ``LOG_PROB`` (``log p`` of the posterior mean under the kind's prior,
    nats, NaN if not computed).

The header of every HDU with data passes ``astropy.wcs.WCS(header)`` without warnings
(the data-less PRIMARY has no WCS keywords). ``Observation.meta`` is not written. Files
are written atomically: to a hidden temporary file in the target's directory, then
renamed over the target; on failure nothing is left behind.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.wcs import WCS

from galdeblend import __version__
from galdeblend.errors import InputError
from galdeblend.frames import Frame
from galdeblend.io.observation import Observation
from galdeblend.results import DeblendResult, InstanceResult

__all__ = ["write_posterior", "read_posterior"]


def write_posterior(
    result: DeblendResult, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write a deblending result to a posterior FITS file (layout in the module docstring).

    Parameters
    ----------
    result : DeblendResult
        Observations (each with a celestial WCS), instances and per-observation models.
    path : str or path-like
        The file to write. Its directory must exist.
    overwrite : bool
        Replace an existing file; otherwise an existing ``path`` raises.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If ``path`` exists and ``overwrite`` is false, its directory is missing, or the
        result is inconsistent (model shapes, sample shapes, duplicate ids, missing WCS).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"write_posterior: {path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise InputError(
            f"write_posterior: cannot write {path}: directory {path.parent} does not exist"
        )
    hdul = _build_hdulist(result)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        hdul.writeto(temporary, checksum=True)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_posterior(path: str | os.PathLike) -> DeblendResult:
    """Read a file written by :func:`write_posterior` back into a :class:`DeblendResult`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    DeblendResult
        Observations rebuilt from the stored data, variance, mask, PSF, WCS, bands, source
        and HDU (``meta`` empty); instances with their samples, model frames, centres,
        observation indices and ``log_prob``; the models; the provenance from ``PROVJSON``.

    Raises
    ------
    InputError
        If the file is missing, not FITS, or lacks an HDU or keyword of the layout.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"read_posterior: {path} does not exist")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as error:
        raise InputError(f"read_posterior: {path} is not a FITS file ({error})") from error
    with hdul:
        primary = hdul[0].header
        if "GDBVERS" not in primary:
            raise InputError(
                f"read_posterior: {path} has no GDBVERS keyword; not a galdeblend posterior file"
            )
        observations = [_read_observation(hdul, i, path) for i in range(primary["NOBS"])]
        models = [_array(_hdu(hdul, f"OBS{i}_MODEL", path)) for i in range(primary["NOBS"])]
        table = _hdu(hdul, "SOURCES", path).data
        instances = [_read_instance(hdul, row, path) for row in table]
        provenance = json.loads(primary["PROVJSON"])
    return DeblendResult(
        observations=observations, instances=instances, models=models, provenance=provenance
    )


# --------------------------------------------------------------------------- writing


def _build_hdulist(result: DeblendResult) -> fits.HDUList:
    _check_result(result)
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    for instance in result.instances:
        hdus += _instance_hdus(instance)
    residuals = result.residuals()
    for i, (obs, model, residual) in enumerate(
        zip(result.observations, result.models, residuals, strict=True)
    ):
        hdus += _observation_hdus(i, obs, model, residual)
    hdus.append(_sources_table(result.instances))
    return fits.HDUList([fits.PrimaryHDU(header=_primary_header(result)), *hdus])


def _check_result(result: DeblendResult) -> None:
    if not isinstance(result, DeblendResult):
        raise InputError(
            f"write_posterior: result must be a DeblendResult, got {type(result).__name__}"
        )
    if len(result.models) != len(result.observations):
        raise InputError(
            f"write_posterior: {len(result.models)} models for "
            f"{len(result.observations)} observations"
        )
    for i, (obs, model) in enumerate(zip(result.observations, result.models, strict=True)):
        if obs.wcs is None:
            raise InputError(f"write_posterior: observation {i} ({obs.source}) has no WCS")
        if np.shape(model) != obs.shape:
            raise InputError(
                f"write_posterior: model {i} has shape {np.shape(model)}, "
                f"observation {i} ({obs.source}) has {obs.shape}"
            )
    ids = [instance.id for instance in result.instances]
    if len(set(ids)) != len(ids):
        raise InputError(f"write_posterior: instance ids must be unique, got {ids}")
    for instance in result.instances:
        shape = np.shape(instance.samples)
        if len(shape) != 4 or shape[1:] != tuple(instance.frame.shape):
            raise InputError(
                f"write_posterior: samples of instance {instance.id} have shape {shape}, "
                f"expected (n_samples, *{instance.frame.shape})"
            )


def _primary_header(result: DeblendResult) -> fits.Header:
    header = fits.Header()
    header["GDBVERS"] = (__version__, "galdeblend version that wrote this file")
    header["DATE"] = (
        datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "UTC time of writing",
    )
    header["NSRC"] = (len(result.instances), "number of source instances")
    header["NOBS"] = (len(result.observations), "number of observations")
    for i, obs in enumerate(result.observations):
        header.append(_path_card(f"INPUT{i}", obs.source, f"input of observation {i}"))
    header["PROVJSON"] = json.dumps(result.provenance, default=_jsonable)
    for keys, value in _scalar_leaves(result.provenance, ()):
        card = _card("HIERARCH GDB " + " ".join(keys), value)
        if card is not None:
            header.append(card)
    return header


def _card(keyword: str, value: Any, comment: str = "") -> fits.Card | None:
    """The FITS card ``keyword = value / comment``, or None if no valid card can hold it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", VerifyWarning)
            card = fits.Card(keyword, value, comment)  # raises for NaN and infinity
            card.verify("exception")
            _ = card.image  # formatting warns for a line over 80 characters
    except (ValueError, TypeError, VerifyError, VerifyWarning):
        return None
    return card


def _path_card(keyword: str, path: str, comment: str) -> fits.Card:
    """The card ``keyword = path`` with ``comment``, or without it where the path fits one
    card but not with the comment (astropy would truncate the comment with a warning);
    longer paths continue whole on ``CONTINUE`` cards."""
    return _card(keyword, path, comment) or fits.Card(keyword, path)


def _jsonable(value: Any) -> Any:
    """JSON stand-in for values ``json`` cannot encode (numpy scalars and arrays, paths, ...)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _scalar_leaves(mapping: Mapping, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """``(key path, value)`` of every scalar in a nested mapping; keys made FITS-safe."""
    leaves = []
    for key, value in mapping.items():
        keys = (*prefix, "".join(c if c.isalnum() else "_" for c in str(key).upper()))
        if isinstance(value, Mapping):
            leaves += _scalar_leaves(value, keys)
        elif isinstance(value, (bool, int, float, str, np.generic)):
            leaves.append((keys, value.item() if isinstance(value, np.generic) else value))
    return leaves


def _instance_hdus(instance: InstanceResult) -> list[fits.hdu.base.ExtensionHDU]:
    prefix = f"SRC{instance.id}"
    frame = instance.frame
    core, wcs_hdu = _celestial_header(frame.wcs, frame.shape[1:], prefix)
    cards = fits.Header()
    cards["KIND"] = (instance.kind, "source kind")
    cards["SRCID"] = (instance.id, "source instance id")
    cards["NSAMPLE"] = (len(instance.samples), "number of posterior samples")
    if instance.center is not None:
        cards["RA"] = (
            float(instance.center.icrs.ra.deg),
            "[deg] ICRS right ascension of the instance",
        )
        cards["DEC"] = (
            float(instance.center.icrs.dec.deg),
            "[deg] ICRS declination of the instance",
        )
    if instance.observation is not None:
        cards["OBSIDX"] = (instance.observation, "index of the observation of this sky instance")
    hdus = [
        _image_hdu(
            f"{prefix}_SAMPLES", instance.samples, core, frame.bands, cards, sample_axis=True
        ),
        _image_hdu(f"{prefix}_MEAN", instance.mean, core, frame.bands, cards),
        _image_hdu(f"{prefix}_STD", instance.std, core, frame.bands, cards),
    ]
    if frame.psf is not None:
        hdus.append(_psf_hdu(f"{prefix}_PSF", frame.psf, frame.bands, frame.pixel_scale))
    if wcs_hdu is not None:
        hdus.append(wcs_hdu)
    return hdus


def _observation_hdus(
    index: int, obs: Observation, model: np.ndarray, residual: np.ndarray
) -> list[fits.hdu.base.ExtensionHDU]:
    prefix = f"OBS{index}"
    core, wcs_hdu = _celestial_header(obs.wcs, obs.shape[1:], prefix)
    cards = fits.Header()
    cards.append(_path_card("SOURCE", obs.source, "input file of this observation"))
    if obs.hdu is not None:
        cards["HDU"] = (obs.hdu, "input HDU of this observation")
    cards["OBSIDX"] = (index, "observation index")
    planes = {
        "DATA": obs.data,
        "VARIANCE": obs.variance,
        "MASK": obs.mask.astype(np.uint8),
        "MODEL": np.asarray(model),
        "RESIDUAL": residual,
    }
    hdus = [
        _image_hdu(f"{prefix}_{name}", array, core, obs.bands, cards)
        for name, array in planes.items()
    ]
    if obs.psf is not None:
        hdus.append(_psf_hdu(f"{prefix}_PSF", obs.psf, obs.bands, obs.pixel_scale))
    if wcs_hdu is not None:
        hdus.append(wcs_hdu)
    return hdus


def _celestial_header(
    wcs: WCS, shape: tuple[int, int], prefix: str
) -> tuple[fits.Header, fits.ImageHDU | None]:
    """2-D celestial WCS cards for ``(H, W)`` images, and the exact WCS HDU if it has SIP."""
    celestial = wcs.celestial
    if celestial.naxis != 2:
        raise InputError(f"write_posterior: the WCS of {prefix} has no celestial axes")
    if celestial.sip is None:
        if celestial.has_distortion:
            raise InputError(
                f"write_posterior: the WCS of {prefix} has lookup-table distortion; "
                "only SIP is supported"
            )
        return celestial.to_header(relax=True), None
    exact = fits.ImageHDU(
        np.zeros(shape, dtype=np.uint8),
        header=celestial.to_header(relax=True),
        name=f"{prefix}_WCS",
    )
    core = celestial.deepcopy()
    core.sip = None
    core.wcs.ctype = [ctype.removesuffix("-SIP") for ctype in core.wcs.ctype]
    header = core.to_header(relax=True)
    header["WCSSIP"] = (f"{prefix}_WCS", "HDU with the exact WCS (SIP distortion)")
    return header, exact


def _image_hdu(
    name: str,
    array: np.ndarray,
    celestial: fits.Header,
    bands: tuple[str, ...],
    cards: fits.Header,
    *,
    sample_axis: bool = False,
) -> fits.ImageHDU:
    """An image ``([n_samples,] C, H, W)`` with celestial + BAND [+ SAMPLE] WCS axes."""
    header = celestial.copy()
    header["WCSAXES"] = 4 if sample_axis else 3
    axes = [("BAND", "band number (names in BAND<n>)")]
    if sample_axis:
        axes.append(("SAMPLE", "posterior sample number"))
    for number, (ctype, comment) in enumerate(axes, start=3):
        header[f"CTYPE{number}"] = (ctype, comment)
        header[f"CRPIX{number}"] = 1.0
        header[f"CRVAL{number}"] = 1.0
        header[f"CDELT{number}"] = 1.0
    header.update(_band_cards(bands))
    header.update(cards)
    return fits.ImageHDU(np.asarray(array), header=header, name=name)


def _psf_hdu(
    name: str, psf: np.ndarray, bands: tuple[str, ...], pixel_scale: float
) -> fits.ImageHDU:
    header = _band_cards(bands)
    header["PIXSCALE"] = (pixel_scale, "[arcsec] pixel scale of the PSF image")
    return fits.ImageHDU(np.asarray(psf), header=header, name=name)


def _band_cards(bands: tuple[str, ...]) -> fits.Header:
    header = fits.Header()
    for n, band in enumerate(bands, start=1):
        header[f"BAND{n}"] = (band, f"name of band (plane) {n}")
    return header


def _sources_table(instances: list[InstanceResult]) -> fits.BinTableHDU:
    bands: list[str] = []
    for instance in instances:
        bands.extend(b for b in instance.frame.bands if b not in bands)
    n = len(instances)
    flux = {b: np.full(n, np.nan) for b in bands}
    flux_err = {b: np.full(n, np.nan) for b in bands}
    for row, instance in enumerate(instances):
        mean, std = instance.flux()
        for c, band in enumerate(instance.frame.bands):
            flux[band][row], flux_err[band][row] = mean[c], std[c]
    centers = [i.center.icrs if i.center is not None else None for i in instances]
    ra = [c.ra.deg if c is not None else np.nan for c in centers]
    dec = [c.dec.deg if c is not None else np.nan for c in centers]
    kinds = np.array([i.kind for i in instances], dtype=str)
    columns = [
        fits.Column("ID", "K", array=np.array([i.id for i in instances], dtype=np.int64)),
        fits.Column("KIND", f"{max(kinds.dtype.itemsize // 4, 1)}A", array=kinds),
        fits.Column("RA", "D", unit="deg", array=ra),
        fits.Column("DEC", "D", unit="deg", array=dec),
        fits.Column(
            "OBSIDX", "K", array=[-1 if i.observation is None else i.observation for i in instances]
        ),
    ]
    for band in bands:
        columns.append(fits.Column(f"FLUX_{band}", "D", array=flux[band]))
        columns.append(fits.Column(f"FLUX_ERR_{band}", "D", array=flux_err[band]))
    columns.append(fits.Column("LOG_PROB", "D", array=[i.log_prob for i in instances]))
    return fits.BinTableHDU.from_columns(columns, name="SOURCES")


# --------------------------------------------------------------------------- reading


def _hdu(hdul: fits.HDUList, name: str, path: Path) -> fits.hdu.base.ExtensionHDU:
    if name not in hdul:
        raise InputError(
            f"read_posterior: {path} has no HDU {name}; not a complete galdeblend posterior file"
        )
    return hdul[name]


def _array(hdu: fits.ImageHDU) -> np.ndarray:
    """The HDU's data in native byte order."""
    data = hdu.data
    return data.astype(data.dtype.newbyteorder("="))


def _bands(header: fits.Header) -> tuple[str, ...]:
    return tuple(header[f"BAND{n}"] for n in range(1, header["NAXIS3"] + 1))


def _wcs(hdul: fits.HDUList, header: fits.Header, path: Path) -> WCS:
    if "WCSSIP" in header:
        return WCS(_hdu(hdul, header["WCSSIP"], path).header)
    return WCS(header).celestial


def _optional_psf(hdul: fits.HDUList, name: str) -> np.ndarray | None:
    return _array(hdul[name]) if name in hdul else None


def _read_observation(hdul: fits.HDUList, index: int, path: Path) -> Observation:
    prefix = f"OBS{index}"
    data_hdu = _hdu(hdul, f"{prefix}_DATA", path)
    header = data_hdu.header
    return Observation(
        data=_array(data_hdu),
        variance=_array(_hdu(hdul, f"{prefix}_VARIANCE", path)),
        mask=_array(_hdu(hdul, f"{prefix}_MASK", path)).astype(bool),
        psf=_optional_psf(hdul, f"{prefix}_PSF"),
        wcs=_wcs(hdul, header, path),
        bands=_bands(header),
        source=header["SOURCE"],
        hdu=header.get("HDU"),
    )


def _read_instance(hdul: fits.HDUList, row: fits.FITS_record, path: Path) -> InstanceResult:
    prefix = f"SRC{row['ID']}"
    samples_hdu = _hdu(hdul, f"{prefix}_SAMPLES", path)
    samples = _array(samples_hdu)
    header = samples_hdu.header
    frame = Frame(
        shape=tuple(samples.shape[1:]),
        wcs=_wcs(hdul, header, path),
        bands=_bands(header),
        psf=_optional_psf(hdul, f"{prefix}_PSF"),
    )
    has_center = np.isfinite(row["RA"]) and np.isfinite(row["DEC"])
    return InstanceResult(
        id=int(row["ID"]),
        kind=str(row["KIND"]),
        frame=frame,
        samples=samples,
        center=SkyCoord(row["RA"], row["DEC"], unit="deg", frame="icrs") if has_center else None,
        observation=int(row["OBSIDX"]) if row["OBSIDX"] >= 0 else None,
        log_prob=float(row["LOG_PROB"]),
    )
