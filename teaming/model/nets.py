"""Network architectures. Every net takes float images in [0, 1] and normalises inside, so FGSM and serving agree."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
ARCHITECTURES = ("fastnet", "resnet18")


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a frozen unit scale and a learned shift (airbench)."""

    def __init__(self, channels: int, momentum: float = 0.6, eps: float = 1e-12) -> None:
        super().__init__(channels, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3x3 'same' conv initialised to pass its input through (dirac), as in airbench."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int = 3, padding: str | int = "same", bias: bool = False
    ) -> None:
        super().__init__(cin, cout, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = Conv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(cout)
        self.conv2 = Conv(cout, cout)
        self.norm2 = BatchNorm(cout)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    """The airbench94 network (Keller Jordan, MIT licence): a whitening conv and three conv groups.

    Built for 32x32 inputs; widths set the speed/accuracy trade-off.
    """

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (64, 256, 256), scale: float = 1 / 9) -> None:
        super().__init__()
        whiten_width = 2 * 3 * 2**2
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.whiten = nn.Conv2d(3, whiten_width, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        self.layers = nn.Sequential(
            nn.GELU(),
            ConvGroup(whiten_width, widths[0]),
            ConvGroup(widths[0], widths[1]),
            ConvGroup(widths[1], widths[2]),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (what the familiarity guard measures)."""
        return self.body(self.stem(x))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The whitening layer: reduced precision runs after it (in bf16 it alone flips 0.6% of answers)."""
        return self.layers[0](self.whiten(self.normalize(x)))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1:](x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first conv to whiten 2x2 patches of `images` (float, [0, 1]) from their covariance."""
        x = self.normalize(images.float())
        c, (h, w) = x.shape[1], self.whiten.weight.shape[2:]
        patches = x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w).double()
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov)
        eigval, eigvec = eigval.flip(0), eigvec.T.reshape(c * h * w, c, h, w).flip(0)
        scaled = (eigvec / torch.sqrt(eigval + eps).view(-1, 1, 1, 1)).to(self.whiten.weight.dtype)
        self.whiten.weight.copy_(torch.cat((scaled, -scaled)))


class ResNet(nn.Module):
    """torchvision ResNet-18 for larger images; a 3x3 stem without max-pool when inputs are 64 px or less."""

    def __init__(self, num_classes: int = 10, input_size: int = 224, mean=CIFAR_MEAN, std=CIFAR_STD) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.normalize = Normalize(mean, std)
        self.net = resnet18(weights=None, num_classes=num_classes)
        if input_size <= 64:
            self.net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.net.maxpool = nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (torchvision's forward without its last layer)."""
        return self.body(self.stem(x))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        return n.maxpool(n.relu(n.bn1(n.conv1(self.normalize(x)))))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        return torch.flatten(n.avgpool(n.layer4(n.layer3(n.layer2(n.layer1(x))))), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def build_net(arch: str, num_classes: int, input_size: int = 32, widths: Sequence[int] | None = None) -> nn.Module:
    """Construct an architecture by name; the artifact stores these arguments to rebuild it."""
    if arch == "fastnet":
        if input_size != 32:
            raise ValueError(f"fastnet is built for 32x32 inputs, not {input_size}; use resnet18")
        return FastNet(num_classes, tuple(widths) if widths else (64, 256, 256))
    if arch == "resnet18":
        return ResNet(num_classes, input_size)
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
