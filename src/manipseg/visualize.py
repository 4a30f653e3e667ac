"""Pictures for people: heatmap overlays and side-by-side grids."""
from __future__ import annotations

import cv2
import numpy as np


#: perceptually uniform, monotone in lightness: dark purple (0) -> red -> yellow (1), so "brighter = more
#: suspicious" reads the same everywhere (a rainbow map such as JET makes mid values green/cyan).
COLORMAP = cv2.COLORMAP_INFERNO


def heatmap(prob: np.ndarray) -> np.ndarray:
    """RGB uint8 heatmap (the perceptual :data:`COLORMAP`) of a [0, 1] probability map."""
    u8 = cv2.convertScaleAbs(np.asarray(prob, dtype=np.float32), alpha=255.0)  # round and saturate, one pass
    return cv2.cvtColor(cv2.applyColorMap(u8, COLORMAP), cv2.COLOR_BGR2RGB)


def draw_legend(img: np.ndarray, label: str = "P(manipulated)") -> np.ndarray:
    """Draw a colour bar with its scale (0 ... 1) and ``label`` in the bottom-right corner, in place.
    Images too small for a readable legend (under 96 x 64 pixels) are left as they are."""
    h, w = img.shape[:2]
    if w < 96 or h < 64:
        return img
    bar_w = max(48, min(256, w // 3))
    bar_h = max(6, min(20, h // 40))
    scale = max(0.3, min(1.0, bar_w / 300))
    thick = 1 if scale < 0.7 else 2
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    (dw, dh), _ = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(3, bar_h // 2)
    row_w = dw + pad + bar_w + pad + dw  # "0" [bar] "1"
    box_w, box_h = max(row_w, tw) + 2 * pad, max(bar_h, dh) + th + base + 3 * pad
    x0, y0 = w - box_w - pad, h - box_h - pad
    if x0 < 0 or y0 < 0:
        return img
    img[y0:y0 + box_h, x0:x0 + box_w] = (img[y0:y0 + box_h, x0:x0 + box_w].astype(np.float32) * 0.35).astype(np.uint8)
    white = (255, 255, 255)
    cv2.putText(img, label, (x0 + pad, y0 + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, white, thick, cv2.LINE_AA)
    by = y0 + box_h - pad - max(bar_h, dh)
    bx = x0 + pad + dw + pad
    ramp = np.repeat(np.linspace(0.0, 1.0, bar_w, dtype=np.float32)[None, :], bar_h, axis=0)
    img[by:by + bar_h, bx:bx + bar_w] = heatmap(ramp)
    ty = by + (bar_h + dh) // 2
    cv2.putText(img, "0", (x0 + pad, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, white, thick, cv2.LINE_AA)
    cv2.putText(img, "1", (bx + bar_w + pad, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, white, thick, cv2.LINE_AA)
    return img


def draw_caption(img: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` on a dark band across the top of ``img``, in place (skipped on tiny images)."""
    h, w = img.shape[:2]
    if w < 96 or h < 64:
        return img
    scale = max(0.35, min(1.0, w / 1400))
    thick = 1 if scale < 0.7 else 2
    while scale > 0.3:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        if tw <= w - 8:
            break
        scale *= 0.9
    pad = max(3, th // 2)
    band = th + base + 2 * pad
    img[:band] = (img[:band].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(img, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


def overlay(image: np.ndarray, prob: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.5,
            legend: bool = False, caption: str | None = None) -> np.ndarray:
    """Blend the heatmap over the photo where ``prob`` is high (weight alpha * prob) and outline ``mask``;
    with ``legend``, a colour bar with its 0-1 scale in the bottom-right corner; ``caption`` (the verdict,
    score and model) on a band across the top. Same size as ``image``."""
    w = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    w *= np.float32(alpha)
    # per-pixel image * (1 - w) + heat * w in one OpenCV pass (3x faster than the float32 NumPy expression
    # on a 12-MP photo), rounded and saturated
    out = cv2.blendLinear(np.ascontiguousarray(image), heatmap(prob), 1.0 - w, w)
    if mask is not None and np.any(mask):
        contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, int(round(max(image.shape[:2]) / 400)))
        out = np.ascontiguousarray(out)
        cv2.drawContours(out, contours, -1, (255, 255, 255), thickness + 2)
        cv2.drawContours(out, contours, -1, (0, 255, 255), thickness)
    if legend:
        out = draw_legend(np.ascontiguousarray(out))
    if caption:
        out = draw_caption(np.ascontiguousarray(out), caption)
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
