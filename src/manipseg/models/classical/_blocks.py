"""Block-grid helpers shared by the classical detectors (vectorised, no loops over pixels)."""
from __future__ import annotations

import cv2
import numpy as np


def block_view(arr: np.ndarray, block: int, pad_value: float = np.nan) -> np.ndarray:
    """Split a 2-D array into a ``(ceil(H/block), ceil(W/block), block*block)`` grid of blocks.

    Every block holds ``block x block`` real samples: where the size is not a multiple of ``block``,
    the last block row/column is taken flush with the array's edge (overlapping its neighbour) rather
    than left partial, so border estimates are as reliable as inner ones. Only an array smaller than
    one block is padded, with ``pad_value`` (use ``nan`` with nan-aware reductions).
    """
    h, w = arr.shape
    if h < block or w < block:
        padded = np.full((max(h, block), max(w, block)), pad_value, dtype=np.float64)
        padded[:h, :w] = arr
        arr, h, w = padded, padded.shape[0], padded.shape[1]
    rows = np.minimum(np.arange(-(-h // block)) * block, h - block)[:, None] + np.arange(block)
    cols = np.minimum(np.arange(-(-w // block)) * block, w - block)[:, None] + np.arange(block)
    blocks = np.asarray(arr, dtype=np.float64)[rows[:, None, :, None], cols[None, :, None, :]]
    return blocks.reshape(rows.shape[0], cols.shape[0], block * block)


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
