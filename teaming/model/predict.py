"""Batched inference: uint8 images in, logits (and penultimate features) out, on whatever device the net lives on."""

from __future__ import annotations

import torch
from torch import nn


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float in [0, 1], channels_last (faster convs on GPU and CPU)."""
    return (images.float() / 255).contiguous(memory_format=torch.channels_last)


def net_device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def predict_outputs(
    net: nn.Module, images: torch.Tensor, batch_size: int = 1000, tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, penultimate features), float32 on the CPU, for uint8 images; tta averages the image and its
    mirror (features too)."""
    was_training = net.training
    net.eval()
    device = net_device(net)
    logits, feats = [], []
    for chunk in images.split(batch_size):
        x = to_float(chunk.to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = net.features(x).float()
            if tta:
                f = 0.5 * (f + net.features(x.flip(-1)).float())
            out = net.classify(f).float()  # the head is linear: the logits of the mean are the mean of the logits
        logits.append(out.cpu())
        feats.append(f.cpu())
    net.train(was_training)
    return torch.cat(logits), torch.cat(feats)


def predict_logits(net: nn.Module, images: torch.Tensor, batch_size: int = 1000, tta: bool = False) -> torch.Tensor:
    """Logits (float32, on the CPU) for uint8 images; tta averages the image and its mirror."""
    return predict_outputs(net, images, batch_size, tta)[0]
