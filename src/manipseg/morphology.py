"""Binary morphology of ``[B, 1, H, W]`` mask tensors (torch), shared by training (refinement, Eqs. 8-9) and the
GAN losses; the numpy / OpenCV masks' counterpart is :func:`manipseg.postprocess.boundary_of`."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dilate(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Binary dilation of ``[B, 1, H, W]`` masks with a ``width`` x ``width`` square (OpenCV's border rule)."""
    if width <= 1:
        return mask
    lo, hi = width // 2, (width - 1) // 2  # OpenCV anchors even kernels at width // 2
    padded = F.pad(mask, (lo, hi, lo, hi), value=float("-inf"))
    return F.max_pool2d(padded, kernel_size=width, stride=1)


def erode(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Binary erosion with a ``width`` x ``width`` square; pixels outside the image do not erode."""
    return -dilate(-mask, width)


def boundary_of(mask: torch.Tensor, width: int = 5) -> torch.Tensor:
    """Dilation minus erosion of ``[B, 1, H, W]`` binary masks; equals :func:`manipseg.postprocess.boundary_of`."""
    mask = mask.float()
    return dilate(mask, width) - erode(mask, width)
