"""Which light the flux intervals miss: each galaxy's, all galaxies' together, or the sky's.

For the blends of a ``galdeblend simulate`` folder deblended by ``galdeblend run``, every
posterior sample of every galaxy and sky instance is rendered into the survey's cutout
(without its mask), and in the aperture at each true galaxy's position (0.75", as
``galdeblend validate``) and in each band it is compared with the truth, as four parts:

- ``own``: the instance matched to the true galaxy (within 0.4"), against that galaxy, as
  ``galdeblend validate`` scores it (the same intervals, to the last digit);
- ``galaxies``: all galaxy instances together, against all true galaxies;
- ``sky``: the sky instances, against the simulated residual background;
- ``galaxies + sky``: the whole model, against the noiseless image.

For each part it prints the number of (galaxy, band) pairs, the fraction of true values
inside the 68% and 95% central posterior intervals (the randomized probability integral
transform of :func:`galdeblend.metrics.inside_intervals`) with its standard error (the bands
of a galaxy one group: :func:`galdeblend.metrics.pooled_fraction`), and the
median absolute and the mean error of the posterior mean and the median posterior standard
deviation, each in units of the aperture's noise; then ``own`` again, split between the
blends where every true galaxy was matched and the others, and, in the former, between the
brightest galaxy of a blend of several, its fainter neighbours and the galaxies alone in
their blend (:func:`galaxy_roles`: light that the posterior hands from a bright galaxy to
its neighbours makes the first too faint and the second too bright), the neighbours split
again by whether the other galaxies' light beyond their stamps (:func:`beyond_stamps`: the
light outside a stamp-sized square about each true centre, which no galaxy instance can
hold) reaches :data:`BEYOND_CUT` times the noise of their aperture; last, how the sky's
error in the apertures follows the sky that the light beyond the stamps would make on its
own (:func:`sky_from_beyond_stamps`); and where around each fainter
neighbour its excess light (posterior mean minus truth) lies (:func:`excess_zones`: within
0.45" of its centre, 0.45-1.5" out or beyond, on the side facing the brightest galaxy of its
blend or the other). A calibrated posterior
covers every part at 68% and 95%. If ``galaxies`` is covered and ``own`` is not, the posterior
is right about how much light an aperture holds and wrong about how it is shared among the
galaxies.

    python benchmarks/light_budget.py sims/ results/ [--survey hsc]
"""

from __future__ import annotations

import argparse
import dataclasses
import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from astropy.coordinates import SkyCoord

from galdeblend.baselines.segmentation import match_sources
from galdeblend.frames import Frame, observation_operator
from galdeblend.io import Observation, read_posterior
from galdeblend.metrics import aperture_flux, inside_intervals, pooled_fraction
from galdeblend.results import DeblendResult
from galdeblend.scene import sky_operator
from galdeblend.simulate import SceneTruth, read_truth
from galdeblend.validate import APERTURE_ARCSEC, render_galaxies

MATCH_ARCSEC = 0.4
LEVELS = (0.68, 0.95)
PARTS = ("own", "galaxies", "sky", "galaxies + sky")
SPLIT = ("own, blends with every galaxy found", "own, blends with a galaxy missed")
ROLES = (
    "own, brightest of several (all found)",
    "own, its fainter neighbours (all found)",
    "own, alone in its blend",
)
OUTSIDE = "sky from beyond stamps"
BEYOND_CUT = 0.5  # aperture-noise units of the other galaxies' light beyond their stamps
BEYOND = (
    f"- others' light off stamps >= {BEYOND_CUT} noise",
    f"- others' light off stamps < {BEYOND_CUT} noise",
)
ZONE_RADII = (0.45, 1.5)  # arcsec: core, outskirts, beyond
ZONES = tuple(
    f"{ring}, {side}"
    for ring in (
        f'core < {ZONE_RADII[0]}"',
        f'{ZONE_RADII[0]}-{ZONE_RADII[1]}"',
        f'beyond {ZONE_RADII[1]}"',
    )
    for side in ("toward the brightest", "away from it")
)


def render(result: DeblendResult) -> tuple[list[np.ndarray], np.ndarray]:
    """Samples of each galaxy instance, each ``(S, C, H, W)`` (as ``validate`` renders them:
    :func:`galdeblend.validate.render_galaxies`), and of the sky ``(S, C, H, W)``, in
    ``result.observations[0]``'s cutout without its mask."""
    obs = result.observations[0]
    clear = dataclasses.replace(obs, mask=np.zeros_like(obs.mask))
    galaxies = [samples for _, samples in render_galaxies(result, obs)]
    sky = np.zeros((len(result.instances[0].samples), *obs.shape))
    with torch.no_grad():
        for inst in result.instances:
            if inst.kind == "sky" and inst.observation == 0:
                band = list(obs.bands).index(inst.frame.bands[0])
                x = torch.from_numpy(inst.samples).double()
                sky += sky_operator(clear, band, inst.frame.shape[-1]).forward(x).numpy()
    return galaxies, sky


def galaxy_roles(truth: SceneTruth, survey: str, bands: Sequence[str]) -> list[str]:
    """Each true galaxy's entry of :data:`ROLES`: alone in its blend, the brightest of several
    (its true flux in ``survey`` summed over ``bands``), or one of that galaxy's fainter
    neighbours."""
    flux = sum(np.asarray(truth.galaxies[f"flux_{survey}_{band}"], dtype=float) for band in bands)
    if len(flux) == 1:
        return [ROLES[2]]
    brightest = int(np.argmax(flux))
    return [ROLES[0] if k == brightest else ROLES[1] for k in range(len(flux))]


def sky_from_beyond_stamps(result: DeblendResult, beyond: np.ndarray) -> np.ndarray:
    """``(C, H, W)``: the sky that the light ``beyond`` ``(K, C, H, W)`` the galaxy stamps
    (:func:`beyond_stamps`) would make on its own, in ``result.observations[0]``'s cutout:
    that light, all galaxies together, fitted per band, weighted by the inverse variance, by
    the sky's node grid seen through :func:`galdeblend.scene.sky_operator`."""
    obs = result.observations[0]
    C, H, W = obs.shape
    outside = beyond.sum(axis=0)
    clear = dataclasses.replace(obs, mask=np.zeros_like(obs.mask))
    grid = next(i.frame.shape[-1] for i in result.instances if i.kind == "sky")
    weight = obs.weight
    plane = np.zeros(obs.shape)
    nodes = torch.eye(grid * grid, dtype=torch.float64).reshape(-1, 1, grid, grid)
    for c in range(C):
        with torch.no_grad():
            basis = (
                sky_operator(clear, c, grid).forward(nodes).numpy()[:, c].reshape(len(nodes), -1)
            )
        w = weight[c].ravel()
        coefficients = np.linalg.solve((basis * w) @ basis.T, (basis * w) @ outside[c].ravel())
        plane[c] = (coefficients @ basis).reshape(H, W)
    return plane


def outside_squares(truth: SceneTruth, half_side: float) -> np.ndarray:
    """``(K, H, W)``: the pixels of the truth's model grid outside the square of half-side
    ``half_side`` arcsec about each true galaxy's centre."""
    H, W = truth.model.shape[-2:]
    yy, xx = np.mgrid[:H, :W]
    grid = truth.model_wcs.celestial.pixel_to_world(xx, yy)
    centers = SkyCoord(truth.galaxies["ra"], truth.galaxies["dec"], unit="deg")
    outside = []
    for center in centers:
        dx, dy = center.spherical_offsets_to(grid)
        outside.append((np.abs(dx.arcsec) >= half_side) | (np.abs(dy.arcsec) >= half_side))
    return np.array(outside, dtype=bool).reshape(len(centers), H, W)


def beyond_stamps(truth: SceneTruth, obs: Observation, survey: str, half_side: float) -> np.ndarray:
    """``(K, C, H, W)``: each true galaxy's light outside the square of half-side
    ``half_side`` arcsec (a galaxy stamp) about its true centre, as ``obs`` sees it.

    That light, the truth's noiseless image on its fine model grid outside the square, is
    pushed through galdeblend's :func:`~galdeblend.frames.observation_operator` into ``obs``
    (its mask left out) and put in the units of ``truth.survey_galaxies[survey]``: per band,
    times the ratio of that image's sum to the operator's rendering of the whole galaxy. It
    is the light that no galaxy instance can hold (a stamp's PSF-blurred light beyond its
    border is not part of it).
    """
    clear = dataclasses.replace(obs, mask=np.zeros_like(obs.mask))
    H, W = truth.model.shape[-2:]
    model_bands = [band.split("_", 1)[1] for band in truth.model_bands]  # "hsc_i" -> "i"
    index = [model_bands.index(band) for band in obs.bands]
    frame = Frame((len(index), H, W), truth.model_wcs.celestial, obs.bands, truth.model_psf[index])
    operator = observation_operator(frame, clear)
    images = truth.survey_galaxies[survey]
    beyond = np.zeros_like(images)
    for k, outside in enumerate(outside_squares(truth, half_side)):
        model = truth.model[k, index]
        with torch.no_grad():
            whole, part = operator.forward(torch.from_numpy(np.stack([model, model * outside])))
        total = whole.numpy().sum(axis=(1, 2))
        ratio = np.divide(
            images[k].sum(axis=(1, 2)), total, out=np.zeros_like(total), where=total > 0
        )
        beyond[k] = part.numpy() * ratio[:, None, None]
    return beyond


def excess_zones(
    excess: np.ndarray, center: np.ndarray, brightest: np.ndarray, pixel_scale: float
) -> dict[str, np.ndarray]:
    """Per entry of :data:`ZONES`, the sum of ``excess`` ``(C, H, W)`` over its pixels, ``(C,)``.

    The zones are rings about ``center`` (pixel ``(x, y)``) at :data:`ZONE_RADII` arcsec,
    each cut in two by the line through ``center`` perpendicular to the direction of
    ``brightest`` (pixel ``(x, y)``).
    """
    H, W = excess.shape[1:]
    yy, xx = np.mgrid[:H, :W]
    dx, dy = xx - center[0], yy - center[1]
    r = np.hypot(dx, dy) * pixel_scale
    facing = dx * (brightest[0] - center[0]) + dy * (brightest[1] - center[1]) > 0
    ring = np.digitize(r, ZONE_RADII)
    return {
        zone: excess[:, (ring == z // 2) & (facing if z % 2 == 0 else ~facing)].sum(axis=1)
        for z, zone in enumerate(ZONES)
    }


def blend_parts(
    blend: str,
    result: DeblendResult,
    truth: SceneTruth,
    survey: str,
    outside_sky: np.ndarray | None = None,
    beyond: np.ndarray | None = None,
) -> dict[str, tuple[list, list, list]]:
    """Per part: ``inside`` ``(L, C)``, ``error / noise`` ``(C,)`` and ``std / noise`` ``(C,)``
    for each true galaxy (``own``: each matched one). Given ``outside_sky`` ``(C, H, W)``
    (:func:`sky_from_beyond_stamps`), the part ``OUTSIDE`` holds its aperture flux over the
    noise in the error's place (no intervals, no spread). ``own`` is also filed under its
    entry of :data:`SPLIT` and, where every galaxy is matched, under each galaxy's entry of
    :data:`ROLES` (:func:`galaxy_roles`); there, each of :data:`ZONES` holds, for each fainter
    neighbour, its :func:`excess_zones` over the noise, in the error's place. Given
    ``beyond`` ``(K, C, H, W)`` (:func:`beyond_stamps`), each fainter neighbour's ``own`` is
    also filed under an entry of :data:`BEYOND`: whether the other galaxies' light beyond
    their stamps in its aperture, averaged over the bands, is :data:`BEYOND_CUT` times the
    noise or more."""
    obs = result.observations[0]
    galaxies, sky = render(result)
    table = truth.galaxies
    true_galaxies = truth.survey_galaxies[survey]
    background = truth.survey_background[survey]
    variance = np.where(obs.mask, 0.0, np.broadcast_to(obs.variance, obs.shape))
    true_xy = np.stack([np.asarray(table[f"x_{survey}"]), np.asarray(table[f"y_{survey}"])], 1)
    centers = [obs.wcs.world_to_pixel(g.center) for g in result.galaxies]
    found, true_index = match_sources(
        np.array(centers, dtype=np.float64).reshape(-1, 2), true_xy, MATCH_ARCSEC / obs.pixel_scale
    )
    matched = {int(k): galaxies[i] for i, k in zip(found, true_index, strict=True)}
    all_galaxies = sum(galaxies, np.zeros_like(sky))
    radius = APERTURE_ARCSEC / obs.pixel_scale
    roles = galaxy_roles(truth, survey, obs.bands)
    complete = len(matched) == len(true_xy)
    out = {part: ([], [], []) for part in (*PARTS, OUTSIDE, *ROLES, *BEYOND, *ZONES)}
    others_beyond = np.zeros((len(true_xy), obs.shape[0]))
    all_beyond = beyond.sum(axis=0) if beyond is not None else None
    for k, xy in enumerate(true_xy):
        flux = partial(aperture_flux, positions=(float(xy[0]), float(xy[1])), radius=radius)
        noise = np.sqrt(flux(variance))
        if outside_sky is not None:
            out[OUTSIDE][1].append(flux(outside_sky) / noise)
        if beyond is not None:
            others_beyond[k] = flux(all_beyond - beyond[k]) / noise
        if complete and roles[k] == ROLES[1]:
            excess = matched[k].mean(axis=0) - true_galaxies[k]
            brightest = true_xy[roles.index(ROLES[0])]
            for zone, value in excess_zones(excess, xy, brightest, obs.pixel_scale).items():
                out[zone][1].append(value / noise)
        compared = {
            "galaxies": (all_galaxies, true_galaxies.sum(axis=0)),
            "sky": (sky, background),
            "galaxies + sky": (all_galaxies + sky, true_galaxies.sum(axis=0) + background),
        }
        if k in matched:
            compared["own"] = (matched[k], true_galaxies[k])
        seed = zlib.crc32(f"{blend}/{k}".encode())  # validate's seed for this galaxy
        for part, (samples, true_image) in compared.items():
            sample_flux = np.stack([flux(image) for image in samples])
            true_flux = flux(true_image)
            inside, error, std = out[part]
            inside.append(inside_intervals(sample_flux, true_flux, LEVELS, seed=seed))
            error.append((sample_flux.mean(axis=0) - true_flux) / noise)
            std.append(sample_flux.std(axis=0, ddof=1) / noise)
    out[SPLIT[0] if complete else SPLIT[1]] = out["own"]
    if complete:
        for k, (role, *values) in enumerate(zip(roles, *out["own"], strict=True)):
            parts = [role]
            if beyond is not None and role == ROLES[1]:
                parts.append(BEYOND[0] if others_beyond[k].mean() >= BEYOND_CUT else BEYOND[1])
            for part in parts:
                for into, value in zip(out[part], values, strict=True):
                    into.append(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("simdir", type=Path, help="folder written by galdeblend simulate")
    parser.add_argument("resultsdir", type=Path, help="folder written by galdeblend run")
    parser.add_argument("--survey", default="hsc", help="survey of the posterior files")
    args = parser.parse_args()
    rows = {part: ([], [], []) for part in (*PARTS, *SPLIT, *ROLES, *BEYOND, OUTSIDE, *ZONES)}
    posteriors = sorted(args.resultsdir.glob(f"*_{args.survey}_posterior.fits"))
    if not posteriors:
        raise SystemExit(f"no *_{args.survey}_posterior.fits in {args.resultsdir}")
    for path in posteriors:
        blend = path.name[: -len(f"_{args.survey}_posterior.fits")]
        truth = read_truth(args.simdir / f"{blend}_truth.fits")
        result = read_posterior(path)
        # Without a galaxy instance no stamp holds any light: all of it is beyond.
        stamp = result.galaxies[0].frame if result.galaxies else None
        half_side = stamp.shape[-1] * stamp.pixel_scale / 2 if stamp else 0.0
        beyond = beyond_stamps(truth, result.observations[0], args.survey, half_side)
        outside_sky = sky_from_beyond_stamps(result, beyond)
        parts = blend_parts(blend, result, truth, args.survey, outside_sky, beyond)
        for part, lists in parts.items():
            for into, values in zip(rows[part], lists, strict=True):
                into += values
    print(
        f"{len(posteriors)} blends; errors and standard deviations in units of the aperture noise"
    )
    print(
        f"{'part':<41}{'pairs':>6}  {'coverage 68% / 95%':<22}{'median |err|':>13}"
        f"{'mean error':>11}{'median std':>11}"
    )
    for part in (*PARTS, *SPLIT, *ROLES[:2], *BEYOND, ROLES[2]):
        if not rows[part][0]:
            continue
        inside, error, std = (np.concatenate(v, axis=-1) for v in rows[part])
        # one group per galaxy: its bands miss the truth together
        galaxy = np.concatenate([np.full(v.shape[-1], i) for i, v in enumerate(rows[part][0])])
        coverage, spread = np.array([pooled_fraction(level, galaxy)[:2] for level in inside]).T
        print(
            f"{part:<41}{inside.shape[1]:>6}  "
            f"{coverage[0]:.2f} / {coverage[1]:.2f} (± {spread.max():.2f})    "
            f"{np.median(np.abs(error)):>13.2f}{error.mean():>11.2f}{np.median(std):>11.2f}"
        )

    print(
        "excess light of the fainter neighbours (all found), posterior mean - truth summed "
        "over each zone, in aperture-noise units: mean over neighbours and bands (standard "
        "error over neighbours)"
    )
    for zone in ZONES:
        per_galaxy = np.array(rows[zone][1]).mean(axis=1)
        spread = per_galaxy.std(ddof=1) / np.sqrt(len(per_galaxy))
        print(f"  {zone:<41}{per_galaxy.mean():+.2f} ({spread:.2f})")

    sky_error = np.concatenate(rows["sky"][1])
    predicted = np.concatenate(rows[OUTSIDE][1])
    slope = (sky_error * predicted).sum() / (predicted**2).sum()
    print(
        f"sky error against the sky that the galaxy light beyond the stamps makes: mean "
        f"{sky_error.mean():.2f} against {predicted.mean():.2f}, correlation "
        f"{np.corrcoef(sky_error, predicted)[0, 1]:.2f}, slope {slope:.2f}"
    )


if __name__ == "__main__":
    main()
