"""The manipulations: splice, copy-move, Poisson, removal (inpainting), enhance, self-blending, authentic.

Every kind returns a :class:`Sample` whose mask ``K`` contains every pixel the manipulation changed
(before post-processing; after it, changes can spill over by the blur / JPEG-block / resampling margin):

- ``splice``, ``copymove``, ``enhance``: ``M = K*S + (1-K)*T`` exactly (paper Eq. 1), ``K`` binary
  (``copymove_mask_source`` adds the unchanged copied-from region to K, NoSo-style).
- ``poisson``: ``K`` is the region whose pixels OpenCV's ``seamlessClone`` re-synthesised from the
  source gradients (paper Eq. 2); outside ``K`` the target is kept bit for bit.
- ``removal``: ``K`` is the (dilated) hole that was inpainted.
- ``sbi``: ``M = a*S + (1-a)*T`` with a soft alpha ``a``; ``K = a >= sbi_alpha_threshold`` (default 0.1):
  outside ``K`` a pixel moved less than 10 % of the way towards the source.
- ``composite``: 1-4 objects, each cut from *another* photo with its own capture history (camera noise,
  blur / sharpening, resampling, a JPEG at its own quality on a shifted 8x8 grid,
  :mod:`manipseg.generate.history`), colour-matched to the paste site or not, pasted with a hard,
  feathered or haloed edge into a target with its own history: ``M = a*S + (1-a)*T`` per object, ``K`` =
  the union of the pasted objects (``a >= 0.5``; a halo's rim belongs to ``K``). The post-processing chain
  (typically a final JPEG save) then acts on the composite, making the background doubly compressed on its
  own grid and the objects on another.
- ``authentic``: the unmodified image, ``K`` empty.

Randomness comes only from a ``numpy.random.Generator`` seeded by ``(seed, kind)``, so a sample is a
pure function of (kind, seed, pool contents, size, config), byte for byte given the same NumPy and
OpenCV builds (other versions of OpenCV's JPEG codec, inpainting or seamlessClone may differ slightly).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from ..postprocess import boundary_of
from .config import KINDS, GenConfig, as_config
from .history import apply_history, draw_history
from .pool import ImagePool, View
from .post import apply_post
from .regions import sample_regions
from .sbi import EmptyBlendMask, regions_preset, self_blend_core


#: smallest and largest accepted area of K, as fractions of the image
MIN_AREA, MAX_AREA = 0.002, 0.9


@dataclass
class Sample:
    """One generated training example (see the module docstring for what ``mask`` means per kind)."""

    image: np.ndarray  # uint8 HxWx3, the forgery M
    mask: np.ndarray  # bool HxW, K
    boundary: np.ndarray  # bool HxW, dilation - erosion of K
    target: np.ndarray | None = None  # uint8 HxWx3, authentic image T at the same geometry
    source: np.ndarray | None = None  # uint8 HxWx3, S aligned so that M = K*S + (1-K)*T
    alpha: np.ndarray | None = None  # float32 HxW soft blend weights (sbi only): M = a*S + (1-a)*T
    meta: dict[str, Any] = field(default_factory=dict)


class _Retry(Exception):
    """The drawn parameters gave an unusable K; draw again."""


def rng_for(kind: str, seed: int) -> np.random.Generator:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(kind.encode())]))


def _check_area(k: np.ndarray) -> None:
    frac = np.count_nonzero(k) / k.size
    if not (MIN_AREA <= frac <= MAX_AREA):
        raise _Retry(f"area {frac:.4f}")


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) exclusive bounding box of a non-empty mask."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return x, y, x + w, y + h


def _pick_two(rng: np.random.Generator, n: int) -> tuple[int, int]:
    t = int(rng.integers(n))
    if n == 1:
        return t, t
    s = int(rng.integers(n - 1))
    return t, s + (s >= t)


def _affine(rng: np.random.Generator, mask: np.ndarray, scale: float, angle: float, flip: bool,
            min_shift: float = 0.0) -> tuple[np.ndarray, dict]:
    """2x3 matrix scaling/rotating/flipping ``mask``'s bounding box about its centre and moving it to a
    random place where it fits; with ``min_shift`` the move is at least that many box sizes if possible."""
    h, w = mask.shape
    x0, y0, x1, y1 = _bbox(mask)
    cx, cy = (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0
    a = np.vstack([cv2.getRotationMatrix2D((cx, cy), angle, scale), [0, 0, 1]])
    if flip:
        a = a @ np.array([[-1.0, 0, 2 * cx], [0, 1, 0], [0, 0, 1]])
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=np.float64) @ a.T
    bw, bh = np.ptp(corners[:, 0]), np.ptp(corners[:, 1])
    lo_x, hi_x = min(bw / 2, w / 2), max(w - bw / 2, w / 2)
    lo_y, hi_y = min(bh / 2, h / 2), max(h - bh / 2, h / 2)
    need = min_shift * max(x1 - x0, y1 - y0)
    best, best_d = (cx, cy), -1.0
    for _ in range(12):
        dx, dy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
        d = math.hypot(dx - cx, dy - cy)
        if d > best_d:
            best, best_d = (dx, dy), d
        if d >= need:
            break
    a[0, 2] += best[0] - cx
    a[1, 2] += best[1] - cy
    params = {"scale": round(scale, 4), "angle": round(angle, 3), "flip": bool(flip),
              "shift": [round(best[0] - cx, 2), round(best[1] - cy, 2)]}
    return a[:2], params


def _warp(img: np.ndarray, a: np.ndarray, nearest: bool = False) -> np.ndarray:
    h, w = img.shape[:2]
    if nearest:
        return cv2.warpAffine(img, a, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpAffine(img, a, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _composite(k: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.where(k[:, :, None], s, t)


def _geometry_jitter(rng: np.random.Generator, cfg: GenConfig) -> tuple[float, float, bool]:
    return (float(rng.uniform(*cfg.jitter_scale)), float(rng.uniform(-cfg.jitter_rotate, cfg.jitter_rotate)),
            bool(rng.random() < cfg.flip_prob))


def _get(rng: np.random.Generator, pool: ImagePool, index: int, size: int, cfg: GenConfig):
    """Photo ``index`` with its regions: fitted to ``size`` or, with probability ``crop_prob``, a random
    window at a scale drawn from ``crop_scales`` (1 = native pixels, as a detector sees a real photo)."""
    if cfg.crop_prob > 0 and rng.random() < cfg.crop_prob:
        view = View(scale=float(rng.choice(cfg.crop_scales)), fx=float(rng.random()), fy=float(rng.random()))
        return pool.get(index, size, view)
    return pool.get(index, size)


# ----- kinds ---------------------------------------------------------------------------------------

def _splice_parts(rng, pool: ImagePool, size: int, cfg: GenConfig, meta: dict):
    """Shared by splice / poisson / enhance: T, the aligned source S and K (not yet composited)."""
    ti, si = _pick_two(rng, len(pool))
    t = _get(rng, pool, ti, size, cfg)[0]
    s_img, s_objs = _get(rng, pool, si, size, cfg)
    region, infos = sample_regions(rng, (size, size), cfg, s_objs)
    scale, angle, flip = _geometry_jitter(rng, cfg)
    a, params = _affine(rng, region, scale, angle, flip)
    k = _warp(region.astype(np.uint8), a, nearest=True).astype(bool)
    _check_area(k)
    s = _warp(s_img, a)
    meta.update(target_id=pool.ids[ti], source_id=pool.ids[si], regions=infos, geometry=params)
    return t, s, k


def _splice(rng, pool, size, cfg, meta):
    t, s, k = _splice_parts(rng, pool, size, cfg, meta)
    return _composite(k, s, t), k, t, s


def _copymove(rng, pool, size, cfg, meta):
    ti = int(rng.integers(len(pool)))
    t, objs = _get(rng, pool, ti, size, cfg)
    region, infos = sample_regions(rng, (size, size), cfg, objs)
    scale = float(rng.uniform(*cfg.copymove_scale))
    angle = float(rng.uniform(-cfg.copymove_rotate, cfg.copymove_rotate))
    flip = bool(rng.random() < cfg.flip_prob)
    a, params = _affine(rng, region, scale, angle, flip, min_shift=cfg.copymove_min_shift)
    k = _warp(region.astype(np.uint8), a, nearest=True).astype(bool)
    _check_area(k)
    s = _warp(t, a)
    x0, y0, x1, y1 = _bbox(region)
    meta.update(target_id=pool.ids[ti], source_id=pool.ids[ti], regions=infos, geometry=params,
                copied_from_bbox=[x0, y0, x1, y1], mask_includes_source=cfg.copymove_mask_source)
    out = _composite(k, s, t)
    if cfg.copymove_mask_source:
        k = k | region
        _check_area(k)
    return out, k, t, s


def _poisson_paste(s: np.ndarray, t: np.ndarray, k: np.ndarray, mixed: bool = False) -> np.ndarray:
    """Poisson-blend the aligned source ``s`` into ``t`` over ``k`` (OpenCV ``seamlessClone`` on the
    bounding box only); pixels outside ``k`` are returned unchanged, bit for bit."""
    p = 4  # padding so the mask never touches the patch border (OpenCV clears the outer pixel ring)
    x0, y0, x1, y1 = _bbox(k)
    tp = cv2.copyMakeBorder(t, p, p, p, p, cv2.BORDER_REFLECT_101)
    sp = cv2.copyMakeBorder(s, p, p, p, p, cv2.BORDER_REFLECT_101)
    kp = cv2.copyMakeBorder(k.astype(np.uint8) * 255, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    win = (slice(y0, y1 + 2 * p), slice(x0, x1 + 2 * p))
    bw, bh = x1 - x0, y1 - y0
    # seamlessClone puts the mask's bounding box at centre - size // 2: this centre keeps it in place
    centre = (p + bw // 2, p + bh // 2)
    blended = cv2.seamlessClone(sp[win], tp[win], kp[win], centre, cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE)
    out = t.copy()
    kk = k[y0:y1, x0:x1]
    out[y0:y1, x0:x1][kk] = blended[p:p + bh, p:p + bw][kk]
    return out


def _poisson(rng, pool, size, cfg, meta):
    t, s, k = _splice_parts(rng, pool, size, cfg, meta)
    mixed = bool(rng.random() < cfg.poisson_mixed_prob)
    meta["clone"] = "mixed" if mixed else "normal"
    return _poisson_paste(s, t, k, mixed), k, t, s


def _exemplar_fill(t: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Fill ``hole`` with the patch of ``t`` whose surroundings best match the hole's surroundings
    (masked SSD template matching on a ring around the hole, at half resolution), Poisson-blended into
    place. Returns None when no candidate patch avoids the hole."""
    h, w = hole.shape
    ring_w = max(3, int(round(min(h, w) / 32)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_w + 1, 2 * ring_w + 1))
    ring = cv2.dilate(hole.astype(np.uint8), kernel).astype(bool) & ~hole
    x0, y0, x1, y1 = _bbox(hole | ring)
    if (x1 - x0) * 2 > w and (y1 - y0) * 2 > h:
        return None
    f = 2  # search at half resolution
    small = cv2.resize(t, (w // f, h // f), interpolation=cv2.INTER_AREA).astype(np.float32)
    sx0, sy0 = x0 // f, y0 // f
    sx1, sy1 = max(sx0 + 2, -(-x1 // f)), max(sy0 + 2, -(-y1 // f))
    tmpl = small[sy0:sy1, sx0:sx1]
    ring_s = cv2.resize(ring.astype(np.uint8), (w // f, h // f), interpolation=cv2.INTER_NEAREST)[sy0:sy1, sx0:sx1]
    hole_s = (cv2.resize(hole.astype(np.float32), (w // f, h // f), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    hole_dil = cv2.dilate(hole_s, np.ones((3, 3), np.uint8)).astype(np.float32)
    if not ring_s.any():
        return None
    score = cv2.matchTemplate(small, tmpl, cv2.TM_SQDIFF, mask=np.repeat(ring_s[:, :, None], 3, axis=2).astype(np.float32))
    tmpl_hole = hole_dil[sy0:sy1, sx0:sx1]
    overlap = cv2.matchTemplate(hole_dil, tmpl_hole, cv2.TM_CCORR)
    score = np.where((overlap > 0.5) | ~np.isfinite(score), np.inf, score)
    if not np.isfinite(score).any():
        return None
    # a little randomness among near-best candidates keeps fills diverse
    flat = score.ravel()
    order = np.argsort(flat, kind="stable")[:5]
    order = order[np.isfinite(flat[order])]
    pick = int(order[int(rng.integers(len(order)))])
    py, px = divmod(pick, score.shape[1])
    dx, dy = px * f - x0, py * f - y0
    a = np.array([[1.0, 0, dx], [0, 1.0, dy]])
    shifted = cv2.warpAffine(t, a, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    return _poisson_paste(shifted, t, hole)


def _removal(rng, pool, size, cfg, meta):
    ti = int(rng.integers(len(pool)))
    t, objs = _get(rng, pool, ti, size, cfg)
    region, infos = sample_regions(rng, (size, size), replace(cfg, region_area=cfg.removal_area), objs)
    d = int(rng.integers(cfg.removal_dilate[0], cfg.removal_dilate[1] + 1))
    kern = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1))
    k = cv2.dilate(region.astype(np.uint8), kern).astype(bool)
    _check_area(k)
    names = sorted(cfg.removal_methods)
    w = np.array([cfg.removal_methods[n] for n in names], dtype=np.float64)
    method = names[int(rng.choice(len(names), p=w / w.sum()))]
    radius = int(rng.integers(cfg.inpaint_radius[0], cfg.inpaint_radius[1] + 1))
    out = _exemplar_fill(t, k, rng) if method == "exemplar" else None
    if out is None:
        if method == "exemplar":
            method = "telea"
        m = 2 * radius + 8
        x0, y0, x1, y1 = _bbox(k)
        x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(size, x1 + m), min(size, y1 + m)
        crop = np.ascontiguousarray(t[y0:y1, x0:x1])
        kc = k[y0:y1, x0:x1]
        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        filled = cv2.inpaint(crop, kc.astype(np.uint8), radius, flag)
        out = t.copy()
        out[y0:y1, x0:x1][kc] = filled[kc]
    meta.update(target_id=pool.ids[ti], regions=infos, dilate=d, method=method,
                inpaint_radius=radius if method != "exemplar" else None)
    return out, k, t, None


def _colour_transfer(src_px: np.ndarray, ref_px: np.ndarray, mode: str, strength: float) -> np.ndarray:
    """Reinhard-style statistics transfer in Lab of ``src_px`` (N x 3 uint8 RGB) towards ``ref_px``;
    ``mode`` "colour" matches all channels, "light" only lightness. Blended with ``strength``."""
    s = cv2.cvtColor(src_px.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    r = cv2.cvtColor(ref_px.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    ms, ss = s.mean(0), s.std(0) + 1e-3
    mr, sr = r.mean(0), r.std(0) + 1e-3
    gain = np.clip(sr / ss, 0.5, 2.0)
    moved = (s - ms) * gain + mr
    if mode == "light":
        moved[:, 1:] = s[:, 1:]
    out = s + np.float32(strength) * (moved - s)
    out[:, 0] = np.clip(out[:, 0], 0, 100)
    rgb = cv2.cvtColor(out.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_Lab2RGB).reshape(-1, 3)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _enhance(rng, pool, size, cfg, meta):
    t, s, k = _splice_parts(rng, pool, size, cfg, meta)
    mode = "colour" if rng.random() < 0.6 else "light"
    strength = float(rng.uniform(*cfg.enhance_strength))
    rw = max(4, size // 12)
    ring = cv2.dilate(k.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rw + 1, 2 * rw + 1))).astype(bool) & ~k
    ref = t[ring] if np.count_nonzero(ring) >= 16 else t[~k]
    s = s.copy()
    s[k] = _colour_transfer(s[k], ref, mode, strength)
    meta["enhance"] = {"mode": mode, "strength": round(strength, 4), "reference": "ring" if ref.shape[0] != np.count_nonzero(~k) else "background"}
    return _composite(k, s, t), k, t, s


def _self_blend_core(rng: np.random.Generator, img: np.ndarray, region: np.ndarray, cfg: GenConfig, meta: dict):
    """SBI on any H x W image and region (:func:`manipseg.generate.sbi.self_blend_core`, the regions preset):
    returns (M, K, target, source, alpha); fills ``meta``."""
    try:
        b = self_blend_core(rng, img, region, regions_preset(cfg))
    except EmptyBlendMask as why:
        raise _Retry(str(why)) from why
    k = b.alpha >= cfg.sbi_alpha_threshold
    _check_area(k)
    meta.update(**b.info, alpha_threshold=cfg.sbi_alpha_threshold)
    return b.image, k, b.target, b.source, b.alpha


def _sbi(rng, pool, size, cfg, meta):
    ti = int(rng.integers(len(pool)))
    img, objs = _get(rng, pool, ti, size, cfg)
    region, infos = sample_regions(rng, (size, size), cfg, objs)
    meta.update(target_id=pool.ids[ti], source_id=pool.ids[ti], regions=infos)
    out, k, tgt, src, alpha = _self_blend_core(rng, img, region, cfg, meta)
    meta["_alpha"] = alpha
    return out, k, tgt, src


def self_blend(image: np.ndarray, region: np.ndarray, seed: int, config: GenConfig | dict | None = None,
               max_tries: int = 20) -> Sample:
    """Self-Blended Image of ``image`` (uint8 H x W x 3, any size) over ``region`` (bool H x W, e.g. a
    :func:`face_hull_mask`), with SBI's source-target augmentation and mask generation; the config's
    post-processing chain is applied as in :func:`make_sample`. Deterministic in (image, region, seed, config)."""
    image = np.asarray(image)
    region = np.asarray(region, dtype=bool)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or region.shape != image.shape[:2]:
        raise ValueError(f"need a uint8 HxWx3 image and an HxW region, got {image.shape} {image.dtype} and {region.shape}")
    if not region.any():
        raise ValueError("region is empty")
    cfg = as_config(config)
    rng = rng_for("sbi", seed)
    for attempt in range(max_tries):
        meta: dict[str, Any] = {"kind": "sbi", "seed": int(seed), "size": list(image.shape[:2])}
        try:
            out, k, tgt, src, alpha = _self_blend_core(rng, image, region, cfg, meta)
        except _Retry:
            continue
        meta["attempt"] = attempt
        (out, tgt, src), meta["post"] = apply_post(rng, [out, tgt, src], cfg.post)
        return Sample(image=out, mask=k, boundary=boundary_of(k, cfg.boundary_width), target=tgt, source=src,
                      alpha=alpha, meta=meta)
    raise RuntimeError(f"self-blending gave an unusable mask {max_tries} times; use a larger region")


def _edge_alpha(rng: np.random.Generator, k: np.ndarray, cfg: GenConfig, scale: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """(alpha, K, info) of one pasted object with a drawn edge treatment (see the module docstring)."""
    names = sorted(n for n, w in cfg.composite_edges.items() if w > 0)
    if not names:
        raise ValueError("composite_edges needs at least one edge kind with a positive weight")
    unknown = set(names) - {"hard", "feather", "halo"}
    if unknown:
        raise ValueError(f"unknown composite_edges {sorted(unknown)}; known: feather, halo, hard")
    w = np.array([cfg.composite_edges[n] for n in names], dtype=np.float64)
    edge = names[int(rng.choice(len(names), p=w / w.sum()))]
    info: dict[str, Any] = {"edge": edge}
    if edge == "halo":
        r = max(1, int(round(int(rng.integers(cfg.composite_halo[0], cfg.composite_halo[1] + 1)) * scale)))
        k = cv2.dilate(k.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)
        info["halo"] = r
    alpha = k.astype(np.float32)
    if edge == "feather":
        sig = float(rng.uniform(*cfg.composite_feather)) * scale
        alpha = cv2.GaussianBlur(alpha, (0, 0), sig)
        info["feather"] = round(sig, 3)
    return alpha, k, info


def _composite_kind(rng, pool, size, cfg, meta):
    if len(pool) < 2:
        raise ValueError("the composite kind needs at least two photos (objects come from other photos)")
    ti = int(rng.integers(len(pool)))
    t_raw = _get(rng, pool, ti, size, cfg)[0]
    t_hist = draw_history(rng, cfg.history)
    t = apply_history(t_raw, t_hist)
    n = int(rng.integers(cfg.composite_objects[0], cfg.composite_objects[1] + 1))
    scale = size / 256.0
    obj_cfg = replace(cfg, region_area=cfg.composite_area, region_count=(1, 1))
    out = t.astype(np.float32)
    keep = np.ones((size, size), dtype=np.float32)  # weight of the target left in each pixel
    objects = []
    for _ in range(max(1, n)):
        si = int(rng.integers(len(pool) - 1))
        si += si >= ti
        s_img, s_objs = _get(rng, pool, si, size, cfg)
        region, infos = sample_regions(rng, (size, size), obj_cfg, s_objs)
        sc, angle, flip = _geometry_jitter(rng, cfg)
        a, params = _affine(rng, region, sc, angle, flip)
        s_hist = draw_history(rng, cfg.history)
        s = _warp(apply_history(s_img, s_hist), a)  # the paste resamples the source (and its JPEG grid)
        k = _warp(region.astype(np.uint8), a, nearest=True).astype(bool)
        alpha, k, edge = _edge_alpha(rng, k, cfg, scale)
        harm = None
        if rng.random() < cfg.composite_harmonise_prob:
            strength = float(rng.uniform(*cfg.composite_harmonise))
            mode = "colour" if rng.random() < 0.5 else "light"
            ring = cv2.dilate(k.astype(np.uint8), np.ones((max(3, size // 16),) * 2, np.uint8)).astype(bool) & ~k
            if k.any() and np.count_nonzero(ring) >= 16:
                s = s.copy()
                s[k] = _colour_transfer(s[k], t[ring], mode, strength)
                harm = {"mode": mode, "strength": round(strength, 4)}
        if not k.any() or np.count_nonzero((keep < 0.9) | k) > MAX_AREA * k.size:
            continue
        a3 = alpha[:, :, None]
        out = a3 * s.astype(np.float32) + (1 - a3) * out
        keep *= 1.0 - alpha
        objects.append({"source_id": pool.ids[si], "regions": infos, "geometry": params, "history": s_hist,
                        "harmonise": harm, **edge})
    alpha_all = (1.0 - keep).astype(np.float32)
    k_all = alpha_all >= 0.1
    _check_area(k_all)
    m = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    meta.update(target_id=pool.ids[ti], target_history=t_hist, objects=objects,
                regions=[r for o in objects for r in o["regions"]], _alpha=alpha_all)
    return m, k_all, t, None


def _authentic(rng, pool, size, cfg, meta):
    ti = int(rng.integers(len(pool)))
    t = _get(rng, pool, ti, size, cfg)[0]
    meta.update(target_id=pool.ids[ti])
    return t.copy(), np.zeros((size, size), dtype=bool), t, None


_KIND_FUNCS = {"splice": _splice, "copymove": _copymove, "poisson": _poisson, "removal": _removal,
               "enhance": _enhance, "sbi": _sbi, "composite": _composite_kind, "authentic": _authentic}


def make_sample(kind: str, seed: int, pool: ImagePool, size: int = 256,
                config: GenConfig | dict | None = None, max_tries: int = 20) -> Sample:
    """Generate one sample of ``kind``; a pure function of (kind, seed, pool contents, size, config).

    ``meta`` is JSON-serialisable. Draws that give an unusable K (too small, nearly the whole image) are
    redrawn from the same generator, at most ``max_tries`` times.
    """
    if kind not in _KIND_FUNCS:
        raise ValueError(f"unknown manipulation kind {kind!r}; choose from {', '.join(KINDS)}")
    if len(pool) == 0:
        raise ValueError("the image pool is empty")
    cfg = as_config(config)
    rng = rng_for(kind, seed)
    last = ""
    for attempt in range(max_tries):
        meta: dict[str, Any] = {"kind": kind, "seed": int(seed), "size": int(size)}
        try:
            image, k, target, source = _KIND_FUNCS[kind](rng, pool, size, cfg, meta)
        except _Retry as why:
            last = str(why)
            continue
        meta["attempt"] = attempt
        alpha = meta.pop("_alpha", None)
        (image, target, source), ops = apply_post(rng, [image, target, source], cfg.post)
        meta["post"] = ops
        return Sample(image=np.ascontiguousarray(image), mask=k, boundary=boundary_of(k, cfg.boundary_width),
                      target=None if target is None else np.ascontiguousarray(target),
                      source=None if source is None else np.ascontiguousarray(source), alpha=alpha, meta=meta)
    raise RuntimeError(f"could not draw a usable {kind} region in {max_tries} tries (last: {last}); "
                       "widen region_area in the config or use larger images")
