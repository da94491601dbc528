"""The set of priors a deblend uses: one per source kind, plus the galaxy model frame.

On disk a prior set is a directory::

    priors.json          {"format_version", "galaxy_frame": {...}, "kinds": [...],
                          "metadata": {...}}
    galaxy/              prior.json + weights.safetensors
    sky/                 prior.json + weights.safetensors

Three sets ship inside the package (``galdeblend/data/priors/``: ``default``, the v12x set,
and ``v16`` and ``deep16``, the v16x and deep16x sets, learned from v12 with other E-step
settings and deeper fields, each continued with the extended-profile flux scale); a deblend
without priors uses all three as an ensemble (:func:`default_ensemble`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from galdeblend.diffusion.prior import Prior, load_prior, save_prior
from galdeblend.errors import InputError
from galdeblend.scene import PriorFrame

__all__ = ["Priors", "default_ensemble", "default_priors_path", "load_ensemble"]

FORMAT_VERSION = 1

SHIPPED = ("default", "v16", "deep16")
"""Names of the prior sets shipped with galdeblend, in the order of the default ensemble."""


def default_priors_path(name: str = "default") -> Path:
    """Directory of a prior set shipped with galdeblend (one of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise InputError(f"no shipped prior set {name!r}; the shipped sets are {list(SHIPPED)}")
    return Path(str(resources.files("galdeblend") / "data" / "priors" / name))


def default_ensemble() -> list[Path]:
    """Directories of the shipped prior sets that a deblend uses by default, as an ensemble."""
    return [default_priors_path(name) for name in SHIPPED]


@dataclass
class Priors:
    """Priors per source kind and the frame galaxies are modelled on.

    Attributes
    ----------
    kinds : dict str -> prior
        Must hold ``"galaxy"`` and ``"sky"``.
    galaxy_frame : PriorFrame
    metadata : dict
        Training data, settings, laps, validation figures (JSON-serializable).
    """

    kinds: dict[str, Prior]
    galaxy_frame: PriorFrame
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = {"galaxy", "sky"} - set(self.kinds)
        if missing:
            raise InputError(f"Priors: missing prior(s) for kind(s) {sorted(missing)}")
        if tuple(self.kinds["galaxy"].shape) != tuple(self.galaxy_frame.shape):
            raise InputError(
                f"Priors: galaxy prior shape {tuple(self.kinds['galaxy'].shape)} "
                f"differs from its frame {tuple(self.galaxy_frame.shape)}"
            )
        sky = tuple(self.kinds["sky"].shape)
        if len(sky) != 3 or sky[0] != 1 or sky[1] != sky[2]:
            raise InputError(f"Priors: the sky prior must have shape (1, g, g), got {sky}")

    def __getitem__(self, kind: str) -> Prior:
        return self.kinds[kind]

    @property
    def name(self) -> str:
        """``metadata["name"]``, or ``"custom"``."""
        return self.metadata.get("name", "custom")

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for kind, prior in self.kinds.items():
            save_prior(prior, directory / kind)
        header = {
            "format_version": FORMAT_VERSION,
            "galaxy_frame": self.galaxy_frame.to_dict(),
            "kinds": list(self.kinds),
            "metadata": self.metadata,
        }
        tmp = directory / ".priors.json.tmp"
        tmp.write_text(json.dumps(header, indent=2))
        os.replace(tmp, directory / "priors.json")

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None, *, device: str = "cpu") -> Priors:
        """Read a prior set: a directory, or the name of a shipped set (:data:`SHIPPED`)
        where no directory has that name; ``None`` is ``"default"``."""
        if directory is None:
            directory = "default"
        if isinstance(directory, str) and directory in SHIPPED and not Path(directory).exists():
            directory = default_priors_path(directory)
        directory = Path(directory)
        path = directory / "priors.json"
        if not path.is_file():
            raise InputError(f"{directory}: not a galdeblend prior set (no priors.json)")
        try:
            header = json.loads(path.read_text())
            kinds = {k: load_prior(directory / k, device=device) for k in header["kinds"]}
            frame = PriorFrame.from_dict(header["galaxy_frame"])
        except (json.JSONDecodeError, KeyError) as err:
            raise InputError(f"{path}: unreadable prior set ({err!r})") from err
        return cls(kinds, frame, header.get("metadata", {}))

    def describe(self) -> str:
        """A human-readable summary (``galdeblend info``)."""
        f = self.galaxy_frame
        lines = [
            f'galaxy frame: {f.shape[1]}x{f.shape[2]} px at {f.pixel_scale}"/px, '
            f"bands {', '.join(f.bands)}, "
            f'model PSF FWHM {f.psf_fwhm}"',
        ]
        for kind, prior in self.kinds.items():
            config = prior.config()
            what = config.get("backbone", "Gaussian")
            lines.append(
                f"{kind}: {type(prior).__name__} ({what}), shape {tuple(prior.shape)}, "
                f"sigma {prior.schedule.sigma_min:g}..{prior.schedule.sigma_max:g}"
            )
        for key, value in self.metadata.items():
            shown = value if isinstance(value, str) else json.dumps(_brief(value))
            lines.append(f"{key}: {shown}")
        return "\n".join(lines)


def load_ensemble(
    sets: Sequence[Priors | str | os.PathLike | None], *, device: str = "cpu"
) -> list[Priors]:
    """Prior sets that deblend together (:func:`galdeblend.deblend`): each read with
    :meth:`Priors.load` unless already loaded, and checked to model the same kinds of
    source, of the same shapes, on the same galaxy frame."""
    loaded = [s if isinstance(s, Priors) else Priors.load(s, device=device) for s in sets]
    if not loaded:
        raise InputError("priors: give at least one prior set")
    first = loaded[0]
    shapes = {kind: tuple(prior.shape) for kind, prior in first.kinds.items()}
    for k, other in enumerate(loaded[1:], start=1):
        names = f"prior set {k} ({other.name}) and prior set 0 ({first.name})"
        if other.galaxy_frame != first.galaxy_frame:
            raise InputError(
                f"{names} have different galaxy frames ({other.galaxy_frame} against "
                f"{first.galaxy_frame}): an ensemble needs one frame"
            )
        if {kind: tuple(prior.shape) for kind, prior in other.kinds.items()} != shapes:
            raise InputError(
                f"{names} have different kinds or shapes of source: an ensemble needs the same"
            )
    return loaded


BRIEF_ITEMS = 6
"""Longest list that :meth:`Priors.describe` shows whole."""


def _brief(value: Any) -> Any:
    """``value`` (parsed JSON) for reading: floats to 4 significant digits, and lists of
    more than :data:`BRIEF_ITEMS` entries as their first two, a count of the rest and the
    last (the shipped set lists its 288 training inputs)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {key: _brief(item) for key, item in value.items()}
    if isinstance(value, list):
        if len(value) > BRIEF_ITEMS:
            return [*map(_brief, value[:2]), f"... {len(value) - 3} more", _brief(value[-1])]
        return [_brief(item) for item in value]
    return value
