"""Mask post-processing of the paper's §4.1: threshold, dilate, drop small connected components."""
from __future__ import annotations

import cv2
import numpy as np


def prob_to_mask(prob: np.ndarray, threshold: float = 0.5, dilate: int = 5, min_region: float = 0.001) -> np.ndarray:
    """Binary mask (bool, H x W) from a probability map.

    threshold:  pixels with ``prob >= threshold`` are candidates.
    dilate:     side of the square structuring element used to dilate the candidates (0 or 1 = none);
                dilation joins fragments of one region before small ones are dropped.
    min_region: connected components (8-connectivity) smaller than this fraction of the image are dropped.
    """
    binary = (np.asarray(prob) >= threshold).astype(np.uint8)
    if dilate and dilate > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (int(dilate), int(dilate)))
        binary = cv2.dilate(binary, kernel)
    if min_region > 0 and binary.any():
        min_area = max(1, int(round(min_region * binary.size)))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
        binary = keep[labels].astype(np.uint8)
    return binary.astype(bool)


def boundary_of(mask: np.ndarray, width: int = 5) -> np.ndarray:
    """Boundary mask: dilation minus erosion of ``mask`` with a ``width`` x ``width`` square (GSR-Net used 5)."""
    m = np.asarray(mask).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (int(width), int(width)))
    return (cv2.dilate(m, kernel) - cv2.erode(m, kernel)).astype(bool)
