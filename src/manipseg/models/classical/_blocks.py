"""Block-grid helpers shared by the classical detectors (vectorised, no loops over pixels)."""
from __future__ import annotations

import cv2
import numpy as np


def block_view(arr: np.ndarray, block: int, pad_value: float = np.nan) -> np.ndarray:
    """Reshape a 2-D array into ``(rows, cols, block*block)`` non-overlapping blocks.

    The array is padded at the bottom/right with ``pad_value`` up to a multiple of ``block``, so
    partial border blocks are kept; use ``nan`` padding with ``nan``-aware reductions.
    """
    h, w = arr.shape
    rows, cols = -(-h // block), -(-w // block)
    padded = np.full((rows * block, cols * block), pad_value, dtype=np.float64)
    padded[:h, :w] = arr
    return padded.reshape(rows, block, cols, block).transpose(0, 2, 1, 3).reshape(rows, cols, block * block)


def upsample_blocks(block_map: np.ndarray, block_px: float, height: int, width: int) -> np.ndarray:
    """Upsample a per-block map (each block ``block_px`` image pixels wide) to ``(height, width)``.

    Bilinear (``cv2.INTER_LINEAR``) with block values at block centres, so the map keeps the image's
    geometry even when the last block row/column is partial.
    """
    block_map = np.asarray(block_map, dtype=np.float32)
    rows, cols = block_map.shape
    full_h, full_w = int(round(rows * block_px)), int(round(cols * block_px))
    if full_h < height or full_w < width:
        raise ValueError(f"block grid {rows}x{cols} of {block_px} px does not cover a {height}x{width} image")
    up = cv2.resize(block_map, (full_w, full_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(up[:height, :width], dtype=np.float32)
