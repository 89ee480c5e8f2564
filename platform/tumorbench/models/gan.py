"""Conditional DCGAN for class-conditioned synthetic tumor slices (data augmentation).

Choice: DCGAN with a spectral-normalised projection discriminator, trained with the
non-saturating BCE loss and one-sided label smoothing, rather than WGAN-GP.
Why: the datasets are small (a few hundred images) and training runs on CPUs.
WGAN-GP needs a gradient penalty, i.e. a second backward pass through the critic on
interpolated images, every critic step, and usually 5 critic steps per generator step,
so it costs several times more per generator update. Spectral norm bounds the
discriminator's Lipschitz constant with one power iteration per step, which gives most
of WGAN-GP's stability at DCGAN cost; label smoothing keeps the discriminator from
becoming over-confident on so few real images.

Conditioning: the generator concatenates a learned class embedding to ``z``; the
discriminator adds the projection term ``<embed(y), phi(x)>`` (Miyato & Koyama 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from tumorbench.models.registry import ModelConfigError, register_model


def _doublings(image_size: int) -> int:
    """Number of 2x up/down-samplings between 4x4 and ``image_size``."""
    steps = math.log2(image_size) - 2 if image_size > 0 else -1
    if steps < 1 or not float(steps).is_integer():
        raise ModelConfigError(f"dcgan: image_size must be a power of two >= 8, got {image_size}")
    return int(steps)


class Generator(nn.Module):
    """Maps noise ``z`` and class labels to images in [-1, 1] of side ``image_size``.

    Args:
        z_dim: Noise dimension.
        num_classes: Number of class labels.
        out_channels: Image channels.
        image_size: Output side, a power of two >= 8.
        width: Channels of the last hidden layer; they double towards the 4x4 start.
    """

    def __init__(self, z_dim: int, num_classes: int, out_channels: int, image_size: int, width: int) -> None:
        super().__init__()
        steps = _doublings(image_size)
        self.z_dim = z_dim
        self.embed = nn.Embedding(num_classes, z_dim)
        channels = width * 2 ** (steps - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(2 * z_dim, channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        for _ in range(steps - 1):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, out_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(N, z_dim)``, ``(N,)`` -> ``(N, out_channels, image_size, image_size)``."""
        h = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(h[:, :, None, None])


class Discriminator(nn.Module):
    """Spectral-normalised projection discriminator returning one logit per image, shape ``(N,)``.

    Args:
        num_classes: Number of class labels.
        in_channels: Image channels.
        image_size: Input side, a power of two >= 8.
        width: Channels of the first layer; they double down to 4x4.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int) -> None:
        super().__init__()
        steps = _doublings(image_size)
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, width, 4, 2, 1)), nn.LeakyReLU(0.2)]
        channels = width
        for _ in range(steps - 1):
            layers += [spectral_norm(nn.Conv2d(channels, channels * 2, 4, 2, 1)), nn.LeakyReLU(0.2)]
            channels *= 2
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(channels, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, channels))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)``, ``(N,)`` -> logits ``(N,)``."""
        phi = self.features(images).sum(dim=(2, 3))
        return self.linear(phi).squeeze(1) + (self.embed(labels) * phi).sum(dim=1)


class ConditionalGAN(nn.Module):
    """A generator/discriminator pair; ``forward(z, labels)`` runs the generator."""

    def __init__(self, z_dim: int, num_classes: int, out_channels: int, image_size: int, width: int) -> None:
        super().__init__()
        if min(z_dim, num_classes, out_channels, width) < 1:
            raise ModelConfigError(
                f"dcgan: z_dim, num_classes, out_channels and width must be >= 1, "
                f"got {z_dim}, {num_classes}, {out_channels}, {width}"
            )
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.image_size = image_size
        self.generator = Generator(z_dim, num_classes, out_channels, image_size, width)
        self.discriminator = Discriminator(num_classes, out_channels, image_size, width)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.generator(z, labels)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] for ``labels`` ``(N,)``; a seeded ``generator`` makes them reproducible.

        The module's train/eval mode is kept (BatchNorm uses running statistics in eval).
        """
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.generator.embed.weight.device)
        if labels.ndim != 1 or labels.numel() == 0:
            raise ModelConfigError(
                f"dcgan.sample: labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}"
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ModelConfigError(f"dcgan.sample: labels must lie in [0, {self.num_classes}), got {labels.tolist()}")
        device = labels.device if generator is None else generator.device
        z = torch.randn(labels.numel(), self.z_dim, generator=generator, device=device)
        return self.generator(z.to(labels.device), labels)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 0.9) -> torch.Tensor:
    """Non-saturating BCE loss with one-sided label smoothing (real target ``real_label``)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: ``-log D(G(z))``."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


@register_model("dcgan", task="gan", description="conditional DCGAN, SN projection discriminator, 64x64")
def dcgan(
    z_dim: int = 100, num_classes: int = 2, out_channels: int = 1, image_size: int = 64, width: int = 64
) -> nn.Module:
    """Conditional DCGAN with the usual DCGAN widths."""
    return ConditionalGAN(z_dim, num_classes, out_channels, image_size, width)


@register_model("dcgan_tiny", task="gan", description="conditional DCGAN, width 8, z_dim 16, for tests")
def dcgan_tiny(
    z_dim: int = 16, num_classes: int = 2, out_channels: int = 1, image_size: int = 64, width: int = 8
) -> nn.Module:
    """Conditional DCGAN small enough for CPU tests."""
    return ConditionalGAN(z_dim, num_classes, out_channels, image_size, width)
