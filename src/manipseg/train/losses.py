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


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean per-pixel KL divergence KL(teacher || student) of the two-class maps at ``temperature``, scaled by
    ``temperature**2`` (Hinton et al. 2015), so that its gradient keeps its size across temperatures.

    ``student`` and ``teacher``: logits ``[B, 2, H, W]``; a teacher map of another size is resized (bilinear, on
    its logits) to the student's. Zero when the student reproduces the teacher."""
    if student.dim() != 4 or student.shape[1] != 2 or teacher.dim() != 4 or teacher.shape[1] != 2:
        raise ValueError(f"logits must be [B, 2, H, W], got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if teacher.shape[0] != student.shape[0]:
        raise ValueError(f"batch sizes differ: student {student.shape[0]}, teacher {teacher.shape[0]}")
    teacher = teacher.detach().float()
    if teacher.shape[2:] != student.shape[2:]:
        teacher = F.interpolate(teacher, size=student.shape[2:], mode="bilinear", align_corners=False)
    t = float(temperature)
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * t * t
