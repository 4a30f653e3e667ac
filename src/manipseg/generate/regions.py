"""Region sources: random shapes, elastic deformation, face hulls, and picking annotated regions.

All functions return ``bool`` masks of a given ``(H, W)`` shape and draw randomness only from the
``numpy.random.Generator`` they are given, so the same generator state gives the same mask.
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from .config import GenConfig
from .pool import ObjectSet


def face_hull_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Filled convex hull of facial landmarks (``(N, 2)`` x, y pixel coordinates) as a bool mask."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise ValueError(f"landmarks must be an (N, 2) array with N >= 3, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks contain NaN or infinite coordinates")
    hull = cv2.convexHull(np.rint(pts).astype(np.int32))
    out = np.zeros(shape[:2], dtype=np.uint8)
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool)


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinate grids (x, y) as float32, cached and read-only."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _radius_for(area: float, shape: tuple[int, int]) -> float:
    return math.sqrt(area * shape[0] * shape[1] / math.pi)


def _centre(rng: np.random.Generator, shape: tuple[int, int], r: float) -> tuple[float, float]:
    h, w = shape
    mx, my = min(r, w / 2), min(r, h / 2)
    return float(rng.uniform(mx * 0.6, w - mx * 0.6)), float(rng.uniform(my * 0.6, h - my * 0.6))


def random_polygon(rng: np.random.Generator, shape: tuple[int, int], area: float) -> np.ndarray:
    """A star-shaped random polygon of 3-12 vertices covering roughly ``area`` of the image."""
    r = _radius_for(area, shape)
    cx, cy = _centre(rng, shape, r)
    n = int(rng.integers(3, 13))
    step = 2 * np.pi / n
    angles = rng.uniform(0, 2 * np.pi) + step * (np.arange(n) + rng.uniform(-0.35, 0.35, n))
    r *= math.sqrt(math.pi / (n / 2 * math.sin(step)))  # a regular n-gon of this radius has the area
    radii = r * rng.uniform(0.6, 1.3, n)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    out = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(out, [np.rint(pts).astype(np.int32)], 1)
    return out.astype(bool)


def random_ellipse(rng: np.random.Generator, shape: tuple[int, int], area: float) -> np.ndarray:
    """A rotated ellipse of aspect ratio up to 3 covering roughly ``area`` of the image."""
    r = _radius_for(area, shape)
    aspect = float(rng.uniform(1.0, 3.0))
    a, b = r * math.sqrt(aspect), r / math.sqrt(aspect)
    cx, cy = _centre(rng, shape, r)
    out = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(out, (int(round(cx)), int(round(cy))), (max(1, int(round(a))), max(1, int(round(b)))),
                float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return out.astype(bool)


def random_blob(rng: np.random.Generator, shape: tuple[int, int], area: float) -> np.ndarray:
    """A smooth organic blob: thresholded low-frequency noise under a radial envelope, largest component."""
    h, w = shape
    r = _radius_for(area, shape)
    cx, cy = _centre(rng, shape, r)
    g = 8
    noise = cv2.resize(rng.standard_normal((g, g)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    xx, yy = _grid(h, w)
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / np.float32(max(r, 1.0) ** 2)
    field = np.exp(-d2) + np.float32(0.35) * noise
    target = int(round(area * h * w))
    thr = np.partition(field.ravel(), field.size - max(target, 1))[field.size - max(target, 1)]
    binary = (field >= thr).astype(np.uint8)
    return largest_component(binary)


def largest_component(binary: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(binary.shape, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def elastic_deform(mask: np.ndarray, rng: np.random.Generator, alpha: float = 8.0, sigma: float = 10.0) -> np.ndarray:
    """Elastic deformation: warp ``mask`` by a smooth random displacement field of amplitude ~``alpha`` px.

    The field is drawn on a coarse grid (spacing ~``sigma``) and upsampled bicubically, so it is cheap.
    """
    h, w = mask.shape
    gh, gw = max(2, int(round(h / sigma))), max(2, int(round(w / sigma)))
    dx = cv2.resize(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    xx, yy = _grid(h, w)
    mapx = xx + np.float32(alpha) * dx
    mapy = yy + np.float32(alpha) * dy
    warped = cv2.remap(mask.astype(np.float32), mapx, mapy, interpolation=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped >= 0.5


SHAPES = {"polygon": random_polygon, "ellipse": random_ellipse, "blob": random_blob}


def blend_mask(mask: np.ndarray, rng: np.random.Generator, kernel: tuple[int, int] = (5, 25),
               scale: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """SBI's soft blending mask (Shiohara & Yamasaki's ``get_blend_mask``): the mask is resized to a random
    working resolution (3/4 to 1 of its size) and back, blurred with a Gaussian of odd size ``k1``, cut to its
    plateau (values < 1 zeroed, so it erodes when ``k1`` is large), then blurred again (``k2``, sigma 5-45;
    it dilates). Sizes are given at 256 px and scaled with ``scale`` (default: the mask's shorter side; a face
    in a larger photo passes its crop side, so the blur is relative to the face, not the photo). Returns float32 (H, W) in [0, 1] with
    maximum 1 (all zeros if the mask vanished) and the two kernel sizes."""
    h, w = mask.shape
    f = (min(h, w) if scale is None else float(scale)) / 256.0
    wh, ww = int(rng.integers(round(192 * h / 256), h + 1)), int(rng.integers(round(192 * w / 256), w + 1))
    m = cv2.resize(cv2.resize(mask.astype(np.float32), (max(8, ww), max(8, wh)), interpolation=cv2.INTER_LINEAR),
                   (w, h), interpolation=cv2.INTER_LINEAR)

    def odd() -> int:
        lo, hi = max(3, int(round(kernel[0] * f)) | 1), max(3, int(round(kernel[1] * f)) | 1)
        return int(rng.choice(np.arange(lo, hi + 1, 2)))

    k1, k2 = odd(), odd()
    sigma = float(rng.integers(5, 46)) * f
    m = cv2.GaussianBlur(m, (k1, k1), 0)
    if m.max() <= 0:
        return np.zeros((h, w), np.float32), (k1, k2)
    m = m / m.max()
    m[m < 1] = 0
    m = cv2.GaussianBlur(m, (k2, k2), sigma)
    if m.max() <= 0:
        return np.zeros((h, w), np.float32), (k1, k2)
    return np.clip(m / m.max(), 0, 1).astype(np.float32), (k1, k2)


def area_ok(mask: np.ndarray, lo: float, hi: float) -> bool:
    frac = float(np.count_nonzero(mask)) / mask.size
    return lo <= frac <= hi


def sample_region(rng: np.random.Generator, shape: tuple[int, int], cfg: GenConfig,
                  objects: "ObjectSet | None" = None, max_tries: int = 8) -> tuple[np.ndarray, dict]:
    """One manipulated-region mask (bool, ``shape``) and a description of where it came from.

    ``objects`` are the annotated regions of the image (COCO objects, BSDS segments) at ``shape``;
    they are used with weight ``region_weights["object"]`` when some fit the configured area range.
    The result is never empty and never the whole image (a random ellipse is the last resort).
    """
    lo, hi = cfg.region_area
    usable = [] if objects is None else [int(i) for i in np.flatnonzero((objects.areas >= lo) & (objects.areas <= hi))]
    names = [k for k, v in cfg.region_weights.items() if v > 0 and (k != "object" or usable)]
    if not names:
        names = ["ellipse"]
    weights = np.array([cfg.region_weights.get(k, 1.0) for k in names], dtype=np.float64)
    for _ in range(max_tries):
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        info: dict = {"source": name}
        if name == "object":
            idx = usable[int(rng.integers(len(usable)))]
            mask = objects.mask(idx)  # type: ignore[union-attr]
            info["object"] = objects.ids[idx]  # type: ignore[union-attr]
        else:
            area = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            mask = SHAPES[name](rng, shape, area)
        if rng.random() < cfg.elastic_prob:
            alpha = float(rng.uniform(*cfg.elastic_alpha)) * shape[0] / 256.0
            sigma = float(rng.uniform(*cfg.elastic_sigma)) * shape[0] / 256.0
            mask = elastic_deform(mask, rng, alpha, sigma)
            info["elastic"] = {"alpha": round(alpha, 3), "sigma": round(sigma, 3)}
        if area_ok(mask, lo * 0.5, min(hi * 1.5, 0.9)):
            return mask, info
    area = float(np.sqrt(lo * hi))
    return random_ellipse(rng, shape, area), {"source": "ellipse", "fallback": True}


def sample_regions(rng: np.random.Generator, shape: tuple[int, int], cfg: GenConfig,
                   objects: "ObjectSet | None" = None) -> tuple[np.ndarray, list[dict]]:
    """Union of ``region_count`` regions (see :func:`sample_region`), capped below the whole image."""
    n = int(rng.integers(cfg.region_count[0], cfg.region_count[1] + 1))
    union = np.zeros(shape, dtype=bool)
    infos = []
    for _ in range(max(1, n)):
        m, info = sample_region(rng, shape, cfg, objects)
        if union.any() and np.count_nonzero(union | m) > 0.9 * union.size:
            continue
        union |= m
        infos.append(info)
    return union, infos
