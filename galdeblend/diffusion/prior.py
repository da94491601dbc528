"""Diffusion priors and the on-disk format of every prior.

A prior directory holds ``prior.json`` (type, configuration, free-form metadata)
and ``weights.safetensors`` (tensors). Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from galdeblend.diffusion.backbones import backbone_name, build_backbone
from galdeblend.diffusion.denoisers import EDMDenoiser
from galdeblend.diffusion.gaussian import GaussianPrior
from galdeblend.diffusion.schedule import VESchedule
from galdeblend.errors import InputError

__all__ = ["DiffusionPrior", "save_prior", "load_prior", "Prior"]

FORMAT_VERSION = 1


class DiffusionPrior(nn.Module):
    """A learned diffusion prior: an EDM-preconditioned denoiser and its schedule.

    Parameters
    ----------
    backbone : nn.Module
        Network ``F(x, c_noise)`` from :mod:`galdeblend.diffusion.backbones`.
    shape : tuple of int
        Event shape of one source, e.g. ``(C, H, W)``. Optional for an
        :class:`~galdeblend.diffusion.backbones.MLP` (its ``features``).
    sigma_min, sigma_max : float
        Noise range of the variance-exploding schedule.
    sigma_data : float
        Typical data standard deviation for the EDM preconditioning.
    metadata : dict, optional
        Free-form JSON-serializable record (training data, laps, metrics).
    """

    kind = "diffusion"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        shape: tuple[int, ...] | None = None,
        sigma_min: float = 1e-3,
        sigma_max: float = 1e2,
        sigma_data: float = 1.0,
        metadata: dict | None = None,
    ):
        super().__init__()
        if shape is None:
            features = getattr(backbone, "config", {}).get("features")
            if features is None:
                raise InputError("DiffusionPrior: give shape= (the event shape of one source)")
            shape = (features,)
        self.denoiser = EDMDenoiser(backbone, tuple(shape), sigma_data=sigma_data)
        self.schedule = VESchedule(sigma_min, sigma_max)
        self.metadata = dict(metadata or {})

    @property
    def shape(self) -> tuple[int, ...]:
        return self.denoiser.shape

    def forward(self, x_t: Tensor, sigma_t: Tensor) -> Tensor:
        """Denoise ``x_t`` ``(B, *shape)`` at ``sigma_t`` ``(B,)``."""
        return self.denoiser(x_t, sigma_t)

    def fit(self, samples: Tensor, **train_options) -> DiffusionPrior:
        """Train (warm-started from the current weights) on ``samples`` ``(N, *shape)``.

        Keyword options go to :func:`galdeblend.diffusion.training.train_denoiser`
        (``steps``, ``batch_size``, ``lr``, ``seed``, ...). A fresh optimizer and
        learning-rate schedule are used each call; the EMA weights are kept.
        """
        from galdeblend.diffusion.training import train_denoiser

        if tuple(samples.shape[1:]) != self.shape:
            raise InputError(
                f"DiffusionPrior.fit: samples have shape {tuple(samples.shape[1:])}, "
                f"expected {self.shape}"
            )
        self.denoiser.requires_grad_(True)
        self.denoiser = train_denoiser(self.denoiser, self.schedule, samples, **train_options)
        self.denoiser.requires_grad_(False)  # sampling differentiates inputs only
        return self

    def accelerate(
        self, *, bf16: bool = False, channels_last: bool = False, compile: str | None = None
    ) -> DiffusionPrior:
        """Switch on the fast paths of the network; returns ``self``.

        Parameters
        ----------
        bf16 : bool
            Run the backbone under bfloat16 autocast (the EDM preconditioning, the
            likelihood and the conjugate gradients of posterior sampling stay in the
            data's type).
        channels_last : bool
            Store the convolution weights and feed the images channels-last.
        compile : str, optional
            :func:`torch.compile` the backbone (forward and backward, hence also the
            vector-Jacobian products of posterior sampling) with this mode, e.g.
            ``"default"``, ``"max-autotune"`` or ``"reduce-overhead"`` (CUDA graphs).

        Notes
        -----
        These are run-time settings: :meth:`save` writes the same weights either way.
        """
        self.denoiser.network_dtype = torch.bfloat16 if bf16 else None
        self.denoiser.channels_last = bool(channels_last)
        if channels_last:
            self.denoiser.backbone.to(memory_format=torch.channels_last)
        if compile is not None:
            self.denoiser.backbone.compile(mode=compile, dynamic=False)
        return self

    def config(self) -> dict:
        backbone = self.denoiser.backbone
        return {
            "shape": list(self.shape),
            "sigma_min": self.schedule.sigma_min,
            "sigma_max": self.schedule.sigma_max,
            "sigma_data": self.denoiser.sigma_data,
            "backbone": backbone_name(backbone),
            "backbone_config": backbone.config,
            "metadata": self.metadata,
        }

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.denoiser.backbone.state_dict())

    @classmethod
    def from_saved(cls, config: dict, tensors: dict[str, Tensor]) -> DiffusionPrior:
        backbone = build_backbone(config["backbone"], config["backbone_config"])
        dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
        backbone.to(dtype).load_state_dict(tensors)
        prior = cls(
            backbone,
            shape=tuple(config["shape"]),
            sigma_min=config["sigma_min"],
            sigma_max=config["sigma_max"],
            sigma_data=config["sigma_data"],
            metadata=config.get("metadata"),
        )
        return prior.eval().requires_grad_(False)

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``prior.json`` and ``weights.safetensors`` into ``directory``."""
        save_prior(self, directory)

    @staticmethod
    def load(directory: str | os.PathLike) -> DiffusionPrior:
        """Read a prior written by :meth:`save`."""
        return load_prior(directory)


Prior = GaussianPrior | DiffusionPrior

_TYPES = {"gaussian": GaussianPrior, "diffusion": DiffusionPrior}


def save_prior(prior: Prior, directory: str | os.PathLike) -> None:
    """Save ``prior`` as ``directory/prior.json`` + ``directory/weights.safetensors``.

    Both files are written to temporary names first and renamed, so a crash never
    leaves a half-written prior.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in prior.tensors().items()}
    header = {"format_version": FORMAT_VERSION, "type": prior.kind, "config": prior.config()}
    for name, write in (
        ("weights.safetensors", lambda p: save_file(tensors, p)),
        ("prior.json", lambda p: Path(p).write_text(json.dumps(header, indent=2))),
    ):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        os.close(fd)
        write(tmp)
        os.replace(tmp, directory / name)


def load_prior(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Prior:
    """Load a prior saved by :func:`save_prior` (its type is read from ``prior.json``)."""
    directory = Path(directory)
    meta_path = directory / "prior.json"
    if not meta_path.is_file():
        raise InputError(f"{directory}: not a galdeblend prior (no prior.json)")
    try:
        header = json.loads(meta_path.read_text())
        cls = _TYPES[header["type"]]
    except (json.JSONDecodeError, KeyError) as err:
        raise InputError(f"{meta_path}: unreadable prior description ({err})") from err
    tensors = load_file(str(directory / "weights.safetensors"), device=str(device))
    return cls.from_saved(header["config"], tensors)
