"""Tiled, fully convolutional inference without torch: the image score, the tile layout, blending windows,
whole-image normalisation and the loop that runs a network tile by tile (shared by the torch and ONNX
Runtime paths of :class:`~manipseg.models.gsr.GSRDetector`)."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

SCORE_TOP_FRACTION = 0.01


def image_score(prob: np.ndarray, top_fraction: float = SCORE_TOP_FRACTION) -> float:
    """Mean of the highest ``top_fraction`` of the values of ``prob`` (at least one value)."""
    flat = np.asarray(prob, dtype=np.float32).reshape(-1)
    k = max(1, int(round(flat.size * top_fraction)))
    return float(np.clip(np.partition(flat, flat.size - k)[flat.size - k:].mean(dtype=np.float64), 0.0, 1.0))


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending weights of a tile. At an end that borders another tile, the outer ``overlap/4`` pixels
    (whose context was cut by the tile edge) get weight 0, the next ``overlap/2`` ramp linearly up to 1.
    Two tiles sharing ``overlap`` pixels thus cross-fade with weights summing to 1, and every pixel keeps
    a positive total weight (tiles from :func:`tile_layout` overlap by at least ``overlap``)."""
    d = np.arange(length, dtype=np.float32)
    w = np.ones(length, dtype=np.float32)
    if overlap > 0:
        def up(dist: np.ndarray) -> np.ndarray:
            return np.clip((dist + 0.5 - overlap / 4) / (overlap / 2), 0.0, 1.0)

        if ramp_start:
            w = np.minimum(w, up(d))
        if ramp_end:
            w = np.minimum(w, up(length - 1 - d))
    return w


def tile_layout(size: int, tile: int, overlap: int, align: int = 8) -> tuple[list[int], int]:
    """Tiles covering ``size`` pixels along one axis: ``(starts, length)``.

    Uses the fewest tiles of at most ``tile`` pixels that share at least ``overlap`` pixels, then shrinks
    them to split the axis evenly (less redundant work than fixed-size tiles). Starts are multiples of
    ``align`` (the network stride) so every tile sees the same pixel grid as the whole image; the last
    tile may end a few pixels past the border and is clipped.
    """
    if size <= tile:
        return [0], size
    n = -(-(size - overlap) // (tile - overlap))
    while True:  # rounding to the alignment can cost a few pixels of overlap: then use one more tile
        length = min(tile, -(-((size + (n - 1) * overlap) // n + align) // align) * align)
        last = -(-(size - length) // align) * align
        starts = sorted({int(round(i * last / (n - 1))) // align * align for i in range(n)})
        if all(b - a <= length - overlap for a, b in zip(starts, starts[1:])):
            return starts, length
        n += 1


def normalisation(image: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, offset)`` (float32) that instance-normalise ``image`` (each channel to zero
    mean, unit std; paper §4.1) as ``x * scale + offset``; statistics from OpenCV in double precision."""
    if image.ndim != 3:
        raise ValueError(f"normalise_image expects an H x W x C image, got shape {image.shape}")
    mean, std = cv2.meanStdDev(np.ascontiguousarray(image))
    scale = (1.0 / np.maximum(std.ravel(), eps)).astype(np.float32)
    offset = (-mean.ravel() * scale).astype(np.float32)
    return scale, offset


def normalise_array(image: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """``image`` (H x W x C) instance-normalised (:func:`normalisation`) as a float32 H x W x C array, in one
    pass (what :func:`manipseg.models.nets.normalise` computes, up to float rounding)."""
    scale, offset = normalisation(image, eps)
    out = np.multiply(image, scale, dtype=np.float32)
    out += offset
    return out


#: runs the network on one tile: (HWC tile of the image given to tiled_maps, x0, y0) -> (seg, boundary or
#: None), both float32 maps of the tile's height and width
TileRunner = Callable[[np.ndarray, int, int], "tuple[np.ndarray, np.ndarray | None]"]


def tiled_maps(x: np.ndarray, run: TileRunner, tile: int, overlap: int, max_pixels: int
               ) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Segmentation and boundary maps of the image ``x`` (H x W x C, as ``run`` wants it), whole when it has at
    most ``max_pixels`` pixels, else in overlapping tiles blended with :func:`_ramp` windows; and the tile
    count."""
    h, w = x.shape[:2]
    if h * w <= max_pixels:
        seg, bnd = run(x, 0, 0)
        return seg, bnd, 1
    ys, th = tile_layout(h, tile, overlap)
    xs, tw = tile_layout(w, tile, overlap)
    # Each tile's window is the outer product wy x wx, so the windows' sum over all tiles is the outer
    # product of the 1-D sums: no per-pixel weight sum to accumulate.
    ramps_y = [(y0, min(y0 + th, h), _ramp(min(y0 + th, h) - y0, overlap, y0 > 0, y0 + th < h)) for y0 in ys]
    ramps_x = [(x0, min(x0 + tw, w), _ramp(min(x0 + tw, w) - x0, overlap, x0 > 0, x0 + tw < w)) for x0 in xs]
    sum_y, sum_x = np.zeros(h, np.float32), np.zeros(w, np.float32)
    for y0, y1, wy in ramps_y:
        sum_y[y0:y1] += wy
    for x0, x1, wx in ramps_x:
        sum_x[x0:x1] += wx
    acc = np.zeros((h, w), dtype=np.float32)
    bacc: np.ndarray | None = None
    for y0, y1, wy in ramps_y:
        for x0, x1, wx in ramps_x:
            seg, bnd = run(x[y0:y1, x0:x1], x0, y0)
            weight = wy[:, None] * wx[None, :]
            acc[y0:y1, x0:x1] += np.multiply(seg, weight, dtype=np.float32)
            if bnd is not None:
                if bacc is None:
                    bacc = np.zeros((h, w), dtype=np.float32)
                bacc[y0:y1, x0:x1] += np.multiply(bnd, weight, dtype=np.float32)
    inv_y, inv_x = (1.0 / sum_y)[:, None], (1.0 / sum_x)[None, :]
    for a in (acc, bacc):
        if a is not None:
            a *= inv_y
            a *= inv_x
            np.clip(a, 0.0, 1.0, out=a)
    return acc, bacc, len(ys) * len(xs)
