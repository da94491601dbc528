"""Tests of the U-Net and MLP backbones and of their rebuild from name and config."""

from __future__ import annotations

import json

import pytest
import torch

from galdeblend.diffusion.backbones import (
    MLP,
    ModulatedResidual,
    SelfAttention2d,
    UNet,
    backbone_name,
    build_backbone,
)
from galdeblend.errors import InputError

SMALL_UNET = dict(channels=(8, 16, 16), blocks=1, attention_levels=(2,), emb_features=16)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter (zero-initialized modulations included) with noise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("in_channels", [1, 3, 5])
@pytest.mark.parametrize("size", [(8, 8), (16, 12)])
def test_unet_output_shape(in_channels, size):
    torch.manual_seed(0)
    unet = UNet(in_channels, **SMALL_UNET)
    x = torch.randn(2, in_channels, *size)
    y = unet(x, torch.randn(2))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_unet_residual_block_is_identity_at_init():
    torch.manual_seed(0)
    unet = UNet(3, **SMALL_UNET)
    block = unet.down[0][0]
    assert isinstance(block, ModulatedResidual)
    x = torch.randn(4, 8, 8, 8)
    emb = unet.embedding(torch.randn(4))
    assert torch.equal(block(x, emb), x)
    # Once the modulation is non-zero, the block is no longer the identity.
    torch.nn.init.normal_(block.modulation[1].weight)
    assert not torch.allclose(block(x, emb), x)


def test_unet_output_depends_on_noise_level_once_trained_modulation():
    torch.manual_seed(0)
    unet = UNet(2, **SMALL_UNET)
    x = torch.randn(1, 2, 8, 8)
    c = torch.tensor([-1.0])
    # Zero-initialized modulation: the noise level has no effect yet.
    assert torch.equal(unet(x, c), unet(x, c + 1))
    randomize(unet, 1)
    assert not torch.allclose(unet(x, c), unet(x, c + 1))


def test_unet_attention_is_global():
    """A pixel far outside the convolutions' receptive field changes an attention output."""
    torch.manual_seed(0)
    unet = UNet(1, channels=(4, 8), blocks=1, attention_levels=(0, 1), heads=2, emb_features=8)
    attention = [b for b in unet.down[0] if isinstance(b.body, SelfAttention2d)]
    assert len(attention) == 1
    block = attention[0]
    with torch.no_grad():  # gate = 1, shift = scale = 0
        block.modulation[1].bias[8:] = 1.0
    x = torch.randn(1, 4, 16, 16)
    emb = unet.embedding(torch.zeros(1))
    x_far = x.clone()
    x_far[0, :, 15, 15] += 3.0 * torch.randn(4)
    y, y_far = block(x, emb), block(x_far, emb)
    assert not torch.allclose(y[0, :, 0, 0], y_far[0, :, 0, 0])
    # The whole U-Net with attention runs and keeps the shape.
    assert unet(torch.randn(2, 1, 16, 16), torch.zeros(2)).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("shape", [(2, 3, 10, 8), (2, 3, 8), (2, 4, 8, 8)])
def test_unet_bad_shape_raises(shape):
    unet = UNet(3, **SMALL_UNET)
    with pytest.raises(InputError, match=r"UNet: input of shape .* must be \(B, 3, H, W\)"):
        unet(torch.randn(*shape), torch.zeros(shape[0]))


def test_unet_bad_config_raises():
    with pytest.raises(InputError, match="kernel_size must be odd"):
        UNet(1, kernel_size=4)
    with pytest.raises(InputError, match="attention level 3"):
        UNet(1, channels=(8, 16), attention_levels=(3,))
    with pytest.raises(InputError, match="divisible by heads=3"):
        UNet(1, channels=(8, 16), attention_levels=(1,), heads=3)


@pytest.mark.parametrize(
    "backbone, x",
    [
        (UNet(3, **SMALL_UNET, dropout=0.1, kernel_size=5), torch.randn(2, 3, 8, 12)),
        (MLP(5, hidden_features=32, hidden_layers=2, emb_features=8), torch.randn(4, 5)),
    ],
)
def test_build_backbone_round_trip(backbone, x):
    randomize(backbone, 2)
    name = backbone_name(backbone)
    config = json.loads(json.dumps(backbone.config))
    rebuilt = build_backbone(name, config)
    assert type(rebuilt) is type(backbone)
    assert rebuilt.config == backbone.config
    assert rebuilt.state_dict().keys() == backbone.state_dict().keys()
    c_noise = torch.linspace(-1, 1, x.shape[0])
    backbone.eval(), rebuilt.eval()
    assert not torch.allclose(rebuilt(x, c_noise), backbone(x, c_noise))
    rebuilt.load_state_dict(backbone.state_dict())
    assert torch.equal(rebuilt(x, c_noise), backbone(x, c_noise))


def test_build_backbone_errors():
    with pytest.raises(InputError, match="unknown backbone name 'ResNet'"):
        build_backbone("ResNet", {})
    with pytest.raises(InputError, match="backbone MLP: bad config"):
        build_backbone("MLP", {"features": 2, "width": 3})
    with pytest.raises(InputError, match="backbone Linear is not one of"):
        backbone_name(torch.nn.Linear(2, 2))


def test_mlp_shapes_and_errors():
    torch.manual_seed(0)
    mlp = MLP(7, hidden_features=16, hidden_layers=2, emb_features=8)
    y = mlp(torch.randn(5, 7), torch.randn(5))
    assert y.shape == (5, 7)
    for block in mlp.blocks:
        x = torch.randn(3, 16)
        assert torch.equal(block(x, mlp.embedding(torch.randn(3))), x)
    with pytest.raises(InputError, match=r"MLP: input of shape \(5, 6\) must be \(B, 7\)"):
        mlp(torch.randn(5, 6), torch.randn(5))
    with pytest.raises(InputError, match="emb_features must be an even integer"):
        MLP(2, emb_features=7)
