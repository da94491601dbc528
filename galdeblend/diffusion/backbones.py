"""Neural backbones ``F(x, c_noise)`` for the EDM denoiser.

A backbone maps a batch ``x`` of shape ``(B, *shape)`` and noise features ``c_noise``
of shape ``(B,)`` to ``(B, *shape)``. Both backbones here condition on the noise level
by adaLN-Zero (Peebles & Xie 2023): an embedding of ``c_noise`` yields, per residual
block, a shift, a scale and a gate, and the block computes

    ``x + gate * body(norm(x) * (1 + scale) + shift)``

with the modulation layer zero-initialized, so that every block starts as the identity.

Each backbone stores the JSON-serializable constructor arguments in ``self.config``;
:func:`build_backbone` rebuilds it from :func:`backbone_name` and that dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galdeblend.errors import InputError

__all__ = ["UNet", "MLP", "build_backbone", "backbone_name"]

MAX_FREQUENCY = 100.0  # highest angular frequency of the sinusoidal noise features


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` followed by a two-layer MLP.

    Frequencies are geometrically spaced from 1 to :data:`MAX_FREQUENCY`, which
    resolves ``c_noise = log(sigma) / 4`` over the usual range of noise levels.
    ``(B,) -> (B, features)``.
    """

    def __init__(self, features: int):
        super().__init__()
        if features < 2 or features % 2:
            raise InputError(f"emb_features must be an even integer >= 2, got {features}")
        omega = MAX_FREQUENCY ** torch.linspace(0.0, 1.0, features // 2)
        self.register_buffer("omega", omega, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(features, features), nn.SiLU(), nn.Linear(features, features)
        )

    def forward(self, c_noise: Tensor) -> Tensor:
        angles = c_noise.reshape(-1, 1).to(self.omega.dtype) * self.omega
        return self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))


class ChannelNorm(nn.Module):
    """Normalization over axis 1 (channels / features), without affine parameters.

    Statistics are computed in at least float32, also under autocast.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        z = x.to(torch.promote_types(x.dtype, torch.float32))
        z = z - z.mean(dim=1, keepdim=True)
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + self.eps)
        return z.to(x.dtype)


class ModulatedResidual(nn.Module):
    """adaLN-Zero residual block ``x + gate * body(norm(x) * (1 + scale) + shift)``.

    Parameters
    ----------
    body : nn.Module
        Maps ``(B, C, ...)`` to ``(B, C, ...)``.
    channels : int
        Size ``C`` of axis 1 of the input.
    emb_features : int
        Size of the noise embedding ``(B, emb_features)``.
    """

    def __init__(self, body: nn.Module, channels: int, emb_features: int):
        super().__init__()
        self.norm = ChannelNorm()
        self.body = body
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(emb_features, 3 * channels))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        trailing = [1] * (x.ndim - 2)
        shift, scale, gate = (
            m.reshape(x.shape[0], -1, *trailing) for m in self.modulation(emb).chunk(3, dim=1)
        )
        return x + gate * self.body(self.norm(x) * (1 + scale) + shift)


class ModulatedStack(nn.ModuleList):
    """Residual blocks applied in sequence, each given the noise embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for block in self:
            x = block(x, emb)
        return x


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of ``(B, C, H, W)``."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(x).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, H W, C / heads)
        h = F.scaled_dot_product_attention(q, k, v)
        return self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """U-Net on images ``(B, C, H, W)`` with adaLN-Zero noise conditioning.

    Level ``i`` works at resolution ``(H, W) / 2**i`` with ``channels[i]`` channels and
    ``blocks`` residual blocks (each followed by a self-attention block if ``i`` is in
    ``attention_levels``) on the way down and again on the way up; the deepest level is
    the bottleneck. Features of each level on the way down are concatenated to those
    on the way up (skip connections).

    Parameters
    ----------
    in_channels : int
        Number of image channels (bands) ``C``.
    channels : sequence of int
        Channels per level; ``H`` and ``W`` must be divisible by ``2**(len(channels) - 1)``.
    blocks : int
        Residual blocks per level and direction.
    attention_levels : sequence of int
        Indices of the levels with self-attention (the low-resolution ones).
    emb_features : int
        Size of the noise embedding (even).
    heads : int
        Attention heads; must divide the channels of every attention level.
    dropout : float
        Dropout probability inside the residual blocks.
    kernel_size : int
        Odd convolution kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: Sequence[int] = (32, 64, 128),
        blocks: int = 2,
        attention_levels: Sequence[int] = (2,),
        emb_features: int = 128,
        heads: int = 1,
        dropout: float = 0.0,
        kernel_size: int = 3,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        attention_levels = sorted({int(i) for i in attention_levels})
        if in_channels < 1 or not channels or min(channels) < 1 or blocks < 1:
            raise InputError(
                "UNet: need in_channels >= 1, non-empty positive channels and blocks >= 1, got "
                f"in_channels={in_channels}, channels={channels}, blocks={blocks}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError(f"UNet: kernel_size must be odd, got {kernel_size}")
        for i in attention_levels:
            if not 0 <= i < len(channels) or channels[i] % heads:
                raise InputError(
                    f"UNet: attention level {i} must index channels={channels} and its "
                    f"channels must be divisible by heads={heads}"
                )
        self.config: dict[str, Any] = dict(
            in_channels=int(in_channels), channels=channels, blocks=int(blocks),
            attention_levels=attention_levels, emb_features=int(emb_features),
            heads=int(heads), dropout=float(dropout), kernel_size=int(kernel_size),
        )  # fmt: skip

        def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2)

        def level(i: int) -> ModulatedStack:
            c = channels[i]
            stack = ModulatedStack()
            for _ in range(blocks):
                body = nn.Sequential(conv(c, c), nn.SiLU(), nn.Dropout(dropout), conv(c, c))
                stack.append(ModulatedResidual(body, c, emb_features))
                if i in attention_levels:
                    stack.append(ModulatedResidual(SelfAttention2d(c, heads), c, emb_features))
            return stack

        depth = len(channels)
        self.embedding = NoiseEmbedding(emb_features)
        self.stem = conv(in_channels, channels[0])
        self.down = nn.ModuleList(level(i) for i in range(depth))
        self.downsample = nn.ModuleList(
            conv(channels[i], channels[i + 1], stride=2) for i in range(depth - 1)
        )
        self.upsample = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2), conv(channels[i + 1], channels[i]))
            for i in range(depth - 1)
        )
        self.fuse = nn.ModuleList(
            nn.Conv2d(2 * channels[i], channels[i], 1) for i in range(depth - 1)
        )
        self.up = nn.ModuleList(level(i) for i in range(depth - 1))
        self.head = nn.Sequential(ChannelNorm(), conv(channels[0], in_channels))

    def _check(self, x: Tensor) -> None:
        factor = 2 ** (len(self.config["channels"]) - 1)
        C = self.config["in_channels"]
        if x.ndim != 4 or x.shape[1] != C or x.shape[2] % factor or x.shape[3] % factor:
            raise InputError(
                f"UNet: input of shape {tuple(x.shape)} must be (B, {C}, H, W) with H and W "
                f"divisible by {factor}"
            )

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """``F(x, c_noise)``: ``(B, C, H, W)`` and ``(B,)`` to ``(B, C, H, W)``."""
        self._check(x)
        emb = self.embedding(c_noise)
        h = self.stem(x)
        skips = []
        for i, stack in enumerate(self.down):
            if i > 0:
                skips.append(h)
                h = self.downsample[i - 1](h)
            h = stack(h, emb)
        for i in reversed(range(len(self.up))):
            h = self.fuse[i](torch.cat([self.upsample[i](h), skips[i]], dim=1))
            h = self.up[i](h, emb)
        return self.head(h)


class MLP(nn.Module):
    """Residual MLP on flat vectors ``(B, D)`` with adaLN-Zero noise conditioning.

    Parameters
    ----------
    features : int
        Dimension ``D`` of the vectors.
    hidden_features : int
        Width of the hidden layers.
    hidden_layers : int
        Number of residual blocks ``Linear -> SiLU -> Linear``.
    emb_features : int
        Size of the noise embedding (even).
    """

    def __init__(
        self,
        features: int,
        *,
        hidden_features: int = 256,
        hidden_layers: int = 3,
        emb_features: int = 64,
    ):
        super().__init__()
        if min(features, hidden_features, hidden_layers) < 1:
            raise InputError(
                "MLP: features, hidden_features and hidden_layers must be >= 1, got "
                f"{features}, {hidden_features}, {hidden_layers}"
            )
        self.config: dict[str, Any] = dict(
            features=int(features), hidden_features=int(hidden_features),
            hidden_layers=int(hidden_layers), emb_features=int(emb_features),
        )  # fmt: skip
        h = hidden_features
        self.embedding = NoiseEmbedding(emb_features)
        self.stem = nn.Linear(features, h)
        self.blocks = ModulatedStack(
            ModulatedResidual(
                nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h)), h, emb_features
            )
            for _ in range(hidden_layers)
        )
        self.head = nn.Sequential(ChannelNorm(), nn.Linear(h, features))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """``F(x, c_noise)``: ``(B, D)`` and ``(B,)`` to ``(B, D)``."""
        D = self.config["features"]
        if x.ndim != 2 or x.shape[1] != D:
            raise InputError(f"MLP: input of shape {tuple(x.shape)} must be (B, {D})")
        return self.head(self.blocks(self.stem(x), self.embedding(c_noise)))


BACKBONES: dict[str, type[nn.Module]] = {"UNet": UNet, "MLP": MLP}


def backbone_name(module: nn.Module) -> str:
    """Registry name of a backbone (``"UNet"`` or ``"MLP"``)."""
    name = type(module).__name__
    if BACKBONES.get(name) is not type(module):
        raise InputError(f"backbone {name} is not one of {sorted(BACKBONES)}")
    return name


def build_backbone(name: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a backbone from its name and ``config`` dict (freshly initialized weights).

    Parameters
    ----------
    name : str
        ``"UNet"`` or ``"MLP"``, as given by :func:`backbone_name`.
    config : dict
        The backbone's ``config`` (constructor arguments).
    """
    if name not in BACKBONES:
        raise InputError(f"unknown backbone name {name!r}; expected one of {sorted(BACKBONES)}")
    try:
        return BACKBONES[name](**config)
    except TypeError as error:
        raise InputError(f"backbone {name}: bad config {config}: {error}") from error
