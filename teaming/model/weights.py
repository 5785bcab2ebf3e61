"""Operations on a trained net's weights: interpolating two nets (WiSE-FT) and measuring BatchNorm statistics
afresh."""

from __future__ import annotations

import copy

import torch
from torch import nn

from teaming.model.predict import to_float


def check_interpolation_share(share: float) -> None:
    """Refuse a weight-interpolation share outside (0, 1] (callers check before training, not after)."""
    if not 0 < share <= 1:
        raise ValueError(f"the interpolation share must be in (0, 1], got {share}")


@torch.no_grad()
def interpolate_weights(start: nn.Module, tuned: nn.Module, share: float, images: torch.Tensor) -> nn.Module:
    """The net `share` of the way from `start`'s weights to `tuned`'s (WiSE-FT, Wortsman et al., 2022), with its
    BatchNorm statistics re-estimated on uint8 `images` and their mirrors (averaged statistics do not fit averaged
    weights). `start` and `tuned` share an architecture; neither is changed."""
    check_interpolation_share(share)
    net = copy.deepcopy(tuned)
    device = next(tuned.parameters()).device
    a, b = start.state_dict(), tuned.state_dict()
    net.load_state_dict({k: a[k].to(device).lerp(b[k], share) if b[k].is_floating_point() else b[k] for k in b})
    return measure_batchnorm(net, images)


@torch.no_grad()
def measure_batchnorm(net: nn.Module, images: torch.Tensor) -> nn.Module:
    """`net` (changed in place, returned in eval mode) with its BatchNorm running statistics measured afresh on
    uint8 `images` and their mirrors, a plain average over batches of 500."""
    device = next(net.parameters()).device
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    net.train()
    for chunk in images.split(500):
        x = to_float(chunk.to(device))
        net(x)
        net(x.flip(-1))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return net.eval()
