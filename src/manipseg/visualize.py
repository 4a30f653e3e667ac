"""Pictures for people: heatmap overlays and side-by-side grids."""
from __future__ import annotations

import cv2
import numpy as np


def heatmap(prob: np.ndarray) -> np.ndarray:
    """RGB uint8 heatmap (OpenCV's JET colour map) of a [0, 1] probability map."""
    u8 = np.clip(np.rint(np.asarray(prob, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)[:, :, ::-1]


def overlay(image: np.ndarray, prob: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend the heatmap over the photo where ``prob`` is high (weight alpha * prob) and outline ``mask``."""
    img = image.astype(np.float32)
    heat = heatmap(prob).astype(np.float32)
    w = (alpha * np.clip(prob, 0.0, 1.0))[:, :, None].astype(np.float32)
    out = np.clip(img * (1.0 - w) + heat * w, 0, 255).astype(np.uint8)
    if mask is not None and np.any(mask):
        contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, int(round(max(image.shape[:2]) / 400)))
        out = np.ascontiguousarray(out)
        cv2.drawContours(out, contours, -1, (255, 255, 255), thickness + 2)
        cv2.drawContours(out, contours, -1, (255, 0, 64), thickness)
    return out


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    g = np.asarray(gray)
    if g.dtype == bool:
        g = g.astype(np.uint8) * 255
    elif g.dtype != np.uint8:
        g = np.clip(np.rint(g.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def grid(rows: list[list[np.ndarray]], cell: int = 192, pad: int = 4) -> np.ndarray:
    """Tile images (RGB uint8, gray uint8/float/bool) into one RGB picture, each cell ``cell`` px high."""
    rendered = []
    for row in rows:
        cells = []
        for im in row:
            im = im if (im.ndim == 3) else gray_to_rgb(im)
            h, w = im.shape[:2]
            cw = max(1, int(round(w * cell / h)))
            cells.append(cv2.resize(im, (cw, cell), interpolation=cv2.INTER_AREA))
        rendered.append(cells)
    width = max(sum(c.shape[1] for c in r) + pad * (len(r) + 1) for r in rendered)
    height = len(rendered) * (cell + pad) + pad
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    y = pad
    for r in rendered:
        x = pad
        for c in r:
            canvas[y:y + cell, x:x + c.shape[1]] = c
            x += c.shape[1] + pad
        y += cell + pad
    return canvas
