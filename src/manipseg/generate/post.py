"""Post-processing chain applied after a manipulation: resize round-trip, blur, noise, JPEG.

The same drawn parameters (and the same noise) are applied to every array passed, so the forgery, its
authentic target and its aligned source stay comparable pixel for pixel.
"""
from __future__ import annotations

import cv2
import numpy as np

from .config import PostConfig


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` and decode again (RGB uint8 in and out)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def resize_roundtrip(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Down-sample by ``scale`` (area) and back up (bilinear): resampling traces, same geometry."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(8, int(round(w * scale))), max(8, int(round(h * scale)))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def apply_post(rng: np.random.Generator, arrays: list[np.ndarray | None],
               cfg: PostConfig) -> tuple[list[np.ndarray | None], list[dict]]:
    """Apply the chain to each non-None array with one set of drawn parameters; returns (arrays, ops)."""
    if not cfg.enabled:
        return arrays, []
    ops: list[dict] = []
    steps = []
    # draw every decision up front so the amount of randomness consumed does not depend on the arrays
    if rng.random() < cfg.resize_prob:
        s = float(rng.uniform(*cfg.resize_scale))
        steps.append(("resize", s))
        ops.append({"op": "resize", "scale": round(s, 4)})
    if rng.random() < cfg.blur_prob:
        sig = float(rng.uniform(*cfg.blur_sigma))
        steps.append(("blur", sig))
        ops.append({"op": "blur", "sigma": round(sig, 4)})
    noise_seed = None
    if rng.random() < cfg.noise_prob:
        sig = float(rng.uniform(*cfg.noise_sigma))
        noise_seed = int(rng.integers(2**31))
        steps.append(("noise", sig))
        ops.append({"op": "noise", "sigma": round(sig, 4)})
    if rng.random() < cfg.jpeg_prob:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        steps.append(("jpeg", q))
        ops.append({"op": "jpeg", "quality": q})
    if not steps:
        return arrays, ops
    out: list[np.ndarray | None] = []
    noise = None
    for arr in arrays:
        if arr is None:
            out.append(None)
            continue
        x = arr
        for name, p in steps:
            if name == "resize":
                x = resize_roundtrip(x, p)
            elif name == "blur":
                x = cv2.GaussianBlur(x, (0, 0), p)
            elif name == "noise":
                if noise is None or noise.shape != x.shape:
                    noise = np.random.default_rng(noise_seed).standard_normal(x.shape, dtype=np.float32) * np.float32(p)
                x = np.clip(x.astype(np.float32) + noise + np.float32(0.5), 0, 255).astype(np.uint8)
            else:
                x = jpeg_roundtrip(x, p)
        out.append(x)
    return out, ops
