"""GSR-Net's refinement stage (paper §3.3, Eqs. 8-9) on batches of tensors.

Given the authentic target T, the manipulated image M and the predicted boundary P::

    M' = T ⊙ P + M ⊙ (1 − P)      (8)
    K' = K − K ⊙ P                (9)

and the new boundary is recomputed from K' (dilation − erosion, as for K). M' goes back through the same
network with the labels K' and boundary(K').

Choice made here: P is *binarised* (boundary probability > ``threshold``) so that M' contains real
pixels of T or M, never a blend, and K' stays a binary mask whose boundary is well defined. By default
P is also restricted to K's region dilated by the boundary width (``restrict_to_mask``): outside it,
T and M differ only by whole-image post-processing of the generator (e.g. a final JPEG pass), and
pasting raw T pixels there would create artifacts that the label K' does not mark.
Only samples that have a target T are refined; the others pass through unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..morphology import boundary_of, dilate


@dataclass
class Refined:
    image: torch.Tensor     # M', same dtype as the input images
    mask: torch.Tensor      # K', float {0, 1} [B, 1, H, W]
    boundary: torch.Tensor  # boundary(K'), float {0, 1} [B, 1, H, W]
    replaced: torch.Tensor  # the binary P actually applied, float {0, 1} [B, 1, H, W]


def refine(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, boundary_prob: torch.Tensor,
           has_target: torch.Tensor, threshold: float = 0.5, restrict_to_mask: bool = True,
           boundary_width: int = 5) -> Refined:
    """Apply Eqs. 8-9 to a batch.

    image, target:  ``[B, 3, H, W]`` M and T (any dtype; uint8 is kept exact).
    mask:           ``[B, 1, H, W]`` K in {0, 1}.
    boundary_prob:  ``[B, 1, H, W]`` predicted boundary probability (detached by this function).
    has_target:     ``[B]`` bool; samples without T are returned unchanged.
    """
    if image.shape != target.shape or image.dim() != 4:
        raise ValueError(f"image {tuple(image.shape)} and target {tuple(target.shape)} must be equal [B,3,H,W]")
    b, _, h, w = image.shape
    if mask.shape != (b, 1, h, w) or boundary_prob.shape != (b, 1, h, w):
        raise ValueError(f"mask {tuple(mask.shape)} and boundary {tuple(boundary_prob.shape)} must be [B,1,H,W] "
                         f"= {(b, 1, h, w)}")
    k = (mask > 0.5).float()
    p = (boundary_prob.detach().float() > threshold).float()
    if restrict_to_mask:
        p = p * dilate(k, boundary_width)
    p = p * has_target.to(p.dtype).view(b, 1, 1, 1)
    pick = p.bool().expand_as(image)
    new_image = torch.where(pick, target, image)            # Eq. 8 with binary P
    new_mask = k - k * p                                     # Eq. 9
    return Refined(new_image, new_mask, boundary_of(new_mask, boundary_width), p)
