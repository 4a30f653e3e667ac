"""The generator's losses, paper Eqs. 3-7, on batches ``[B, C, H, W]`` (images in [-1, 1]).

Per-pixel distance is the L1 norm over colour channels, ``||m_i - t_i||_1`` (a *sum* over channels, as
the equations write it), averaged over the pixels of the region — the background (k_i = 0), the pasted
region (k_i = 1) or the edge band (e_i = 1) — counted over the whole batch (N_bg, N_fg, N_edge).
An empty region contributes 0.

- L_bg   (Eq. 3): G(K, M) against the authentic T on background pixels.
- L_grad (Eq. 4): the Laplacian (4-neighbour, replicate border) of G(K, M) against that of S inside K.
- L_edge (Eq. 5): G(K, M) against S on the edge band e = dilate(K) - erode(K).
- L_adv  (Eq. 6): D(K, ·) judges T real and G(K, M) fake. Eq. 6 writes the saturating minimax form;
  like pix2pix [16] (which the paper follows) G minimises the non-saturating ``-log D(K, G(K, M))`` and
  D the binary cross-entropy of both, on every patch logit.
- L_G    (Eq. 7): L_bg + λ_grad L_grad + λ_edge L_edge + λ_adv L_adv, (λ) = (1, 2, 5) in the paper.
  The pixel scale of the L1 terms is not given by the paper; :func:`generator_loss` takes it as
  ``pixel_scale`` (the training default measures them in 8-bit levels, see GanSettings).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..morphology import boundary_of

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """Per-channel 4-neighbour Laplacian of ``[B, C, H, W]`` with replicated borders."""
    c = x.shape[1]
    k = _LAPLACE.to(x.device, x.dtype).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def masked_l1(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean over pixels with ``region`` = 1 of the channel-summed absolute difference (0 if none)."""
    region = region.to(a.dtype)
    per_pixel = (a - b).abs().sum(dim=1, keepdim=True)
    n = region.sum()
    return (per_pixel * region).sum() / n.clamp_min(1.0)


def edge_mask(mask: torch.Tensor, width: int = 5) -> torch.Tensor:
    """e = dilation − erosion of K with a ``width`` x ``width`` square (as the segmenter's boundary)."""
    return boundary_of((mask > 0.5).float(), width)


def loss_bg(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3."""
    return masked_l1(out, target, mask <= 0.5)


def loss_grad(out: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 4."""
    return masked_l1(laplacian(out), laplacian(source), mask > 0.5)


def loss_edge(out: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, width: int = 5) -> torch.Tensor:
    """Eq. 5."""
    return masked_l1(out, source, edge_mask(mask, width) > 0.5)


def adv_generator(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's adversarial term: −log D(K, G(K, M)), mean over patch logits."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def adv_discriminator(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss: −log D(K, T) − log(1 − D(K, G(K, M))), each the mean over patch logits, halved (pix2pix)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


@dataclass(frozen=True)
class Weights:
    """λ of Eq. 7 (the paper's values)."""

    grad: float = 1.0
    edge: float = 2.0
    adv: float = 5.0


def generator_loss(out: torch.Tensor, target: torch.Tensor, source: torch.Tensor, mask: torch.Tensor,
                   fake_logits: torch.Tensor | None, weights: Weights = Weights(),
                   edge_width: int = 5, pixel_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Eq. 7 and its terms. ``fake_logits`` = D(K, G(K, M)) (None: no adversarial term).

    ``pixel_scale`` multiplies the three L1 terms: they measure pixel values, whose scale the paper does
    not fix; 127.5 expresses [-1, 1] images in 8-bit levels (see :class:`manipseg.gan.GanSettings`)."""
    terms = {
        "bg": pixel_scale * loss_bg(out, target, mask),
        "grad": pixel_scale * loss_grad(out, source, mask),
        "edge": pixel_scale * loss_edge(out, source, mask, edge_width),
        "adv": adv_generator(fake_logits) if fake_logits is not None else out.new_zeros(()),
    }
    terms["total"] = terms["bg"] + weights.grad * terms["grad"] + weights.edge * terms["edge"] + weights.adv * terms["adv"]
    return terms
