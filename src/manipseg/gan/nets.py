"""GSR-Net's generation networks (paper §3.1, §4.1): a U-Net generator G(K, M) and a 70x70 PatchGAN D.

G takes the copy-pasted image M (RGB scaled to [-1, 1]) and its mask K (4 channels), uses instance
normalisation as pix2pix [16], and outputs the *whole* image (linear output, no ``tanh``; callers clamp
to [-1, 1] for display): nothing forces the background to stay — the background loss L_bg (Eq. 3)
teaches it. The outermost decoder level sees the input again (concatenated) and a linear 1x1 path from
the input is added to the output, so copying the background is easy to learn. With
``identity_init=True`` that path starts as the identity and the head's last layer at zero, so training
(still from scratch: no pre-trained weights) starts from G(K, M) = M and spends its steps on blending.

D is pix2pix's 70x70 PatchGAN (C64-C128-C256-C512 with 4x4 convolutions, strides 2-2-2-1-1, padding 1)
without batch normalisation (paper §4.1), conditioned on K: its input is K concatenated with an image
(T or G(K, M)), and each output logit judges one 70x70 patch. ``width`` scales the channel counts
(64 in the paper) without changing the receptive field.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _down(cin: int, cout: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Bilinear x2 upsampling, 3x3 convolution, instance norm, ReLU; then the skip is concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([F.relu(self.norm(self.conv(x))), skip], dim=1)


class UNetGenerator(nn.Module):
    """G(K, M): ``forward(image, mask)`` with image ``[B, C, H, W]`` in [-1, 1], mask ``[B, 1, H, W]`` in {0, 1}.

    ``depth`` stride-2 levels (H and W must be multiples of ``2**depth``), channels ``width * 2**i``
    capped at ``max_width``. ``in_channels`` is the image's channel count (3); K is added to it.
    """

    def __init__(self, width: int = 16, depth: int = 5, max_width: int = 128, in_channels: int = 3,
                 identity_init: bool = False) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got {depth}, {width}")
        self.config = {"width": int(width), "depth": int(depth), "max_width": int(max_width),
                       "in_channels": int(in_channels), "identity_init": bool(identity_init)}
        chans = [min(width * 2**i, max_width) for i in range(depth)]
        cin = in_channels + 1
        self.downs = nn.ModuleList()
        for i, c in enumerate(chans):
            # pix2pix: no normalisation on the first layer, nor on the 1x1 bottleneck
            self.downs.append(_down(cin, c, norm=0 < i < depth - 1))
            cin = c
        self.ups = nn.ModuleList()
        for i in range(depth - 1, 0, -1):  # from the bottleneck up to level 1
            self.ups.append(_Up(cin, chans[i - 1]))
            cin = 2 * chans[i - 1]
        # outermost: back to full resolution, concatenate the input (M, K), predict the image
        self.out_up = nn.Conv2d(cin, chans[0], 3, padding=1, bias=False)
        self.out_norm = nn.InstanceNorm2d(chans[0], affine=True)
        self.head = nn.Sequential(nn.Conv2d(chans[0] + in_channels + 1, chans[0], 3, padding=1),
                                  nn.ReLU(inplace=True), nn.Conv2d(chans[0], in_channels, 1))
        # a linear 1x1 path from the input (M, K) to the output, added to the head
        self.skip = nn.Conv2d(in_channels + 1, in_channels, 1)
        if identity_init:
            # start as G(K, M) = M: skip = identity on the image channels, head's last layer zero
            with torch.no_grad():
                self.skip.weight.zero_()
                self.skip.bias.zero_()
                for c in range(in_channels):
                    self.skip.weight[c, c] = 1.0
                self.head[-1].weight.zero_()
                self.head[-1].bias.zero_()

    @property
    def multiple(self) -> int:
        return 2 ** self.config["depth"]

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or mask.shape != (image.shape[0], 1, *image.shape[2:]):
            raise ValueError(f"need image [B,C,H,W] and mask [B,1,H,W], got {tuple(image.shape)} and {tuple(mask.shape)}")
        h, w = image.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"image side {h}x{w} must be a multiple of {self.multiple} (pad it, see pad_to_multiple)")
        x0 = torch.cat([image, mask.to(image.dtype)], dim=1)
        skips, x = [], x0
        for down in self.downs:
            x = down(x)
            skips.append(x)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(x, skip)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = F.relu(self.out_norm(self.out_up(x)))
        return self.head(torch.cat([x, x0], dim=1)) + self.skip(x0)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN without batch normalisation; ``forward(image, mask)`` -> patch logits ``[B, 1, h, w]``."""

    def __init__(self, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.config = {"width": int(width), "in_channels": int(in_channels)}
        w = int(width)
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + 1, w, 4, 2, 1), act(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), act(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), act(),
            nn.Conv2d(4 * w, 8 * w, 4, 1, 1), act(),
            nn.Conv2d(8 * w, 1, 4, 1, 1),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask.to(image.dtype)], dim=1))


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """Receptive field of a stack of convolutions given as (kernel, stride) pairs."""
    rf, jump = 1, 1
    for k, s in layers:
        rf += (k - 1) * jump
        jump *= s
    return rf


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad ``[B, C, H, W]`` on the bottom/right to multiples of ``multiple``; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
