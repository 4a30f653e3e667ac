"""Losses of GSR-Net's segment stage: average two-class softmax cross-entropy on both heads (§3.2).

The boundary head's rare positive class is weighted (GSRNet used 0.3 background / 0.7 boundary). Every
loss takes an optional per-sample weight so that a batch can mix samples that take part in a term and
samples that do not (e.g. refined passes only count samples with a target T) without changing shapes,
which keeps DistributedDataParallel ranks in lock-step.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F


def two_class_ce(logits: torch.Tensor, labels: torch.Tensor, class_weights: Sequence[float] | None = None,
                 sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean softmax cross-entropy.

    logits: ``[B, 2, H, W]``; labels: ``[B, 1, H, W]`` or ``[B, H, W]`` in {0, 1};
    class_weights: per-class pixel weights (None = 1, 1); sample_weight: ``[B]`` (None = 1).
    With unit sample weights this equals ``F.cross_entropy(logits, labels, weight=class_weights)``.
    A batch whose weights are all zero gives a zero loss that still depends on ``logits`` (so backward works).
    """
    if logits.dim() != 4 or logits.shape[1] != 2:
        raise ValueError(f"logits must be [B, 2, H, W], got {tuple(logits.shape)}")
    target = labels.reshape(logits.shape[0], *logits.shape[2:]).round().long()
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    if class_weights is None:
        w = torch.ones_like(ce)
    else:
        cw = torch.as_tensor(class_weights, dtype=ce.dtype, device=ce.device)
        w = cw[target]
    if sample_weight is not None:
        w = w * sample_weight.to(ce.dtype).view(-1, 1, 1)
    total = w.sum()
    if total <= 0:
        return (logits.float() * 0.0).sum()
    return (ce * w).sum() / total


def gsr_loss(outputs: Mapping[str, torch.Tensor | None], mask: torch.Tensor, boundary: torch.Tensor,
             seg_weight: float = 1.0, boundary_weight: float = 1.0,
             boundary_class_weights: Sequence[float] | None = (0.3, 0.7),
             seg_class_weights: Sequence[float] | None = None,
             sample_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss of one forward pass: ``{"total", "seg", "boundary"}`` (boundary is 0 without a boundary head)."""
    seg = two_class_ce(outputs["seg"], mask, seg_class_weights, sample_weight)
    bnd_logits = outputs.get("boundary")
    if bnd_logits is None:
        bnd = seg.new_zeros(())
    else:
        bnd = two_class_ce(bnd_logits, boundary, boundary_class_weights, sample_weight)
    return {"total": seg_weight * seg + boundary_weight * bnd, "seg": seg, "boundary": bnd}
