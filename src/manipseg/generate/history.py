"""Capture histories: what a photo went through before it became part of a composite.

A real splice pastes objects cut from *other* photos, each with its own camera noise, sharpness and JPEG
history, into a target that has its own; the composite is then usually saved again as JPEG. The pasted
region therefore carries another compression history than the background: non-aligned double
compression when its 8x8 grid was shifted by the paste (or destroyed by resampling), aligned double
compression of the background when the composite is saved on the target's grid.

:func:`draw_history` draws one such history from a :class:`~manipseg.generate.config.HistoryConfig`; :func:`apply_history` applies
it to one photo. Everything is deterministic in the generator it is given.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .config import HistoryConfig
from .post import jpeg_roundtrip


def draw_history(rng: np.random.Generator, cfg: HistoryConfig) -> dict[str, Any]:
    """One history: every decision drawn up front (the randomness used does not depend on the image)."""
    h: dict[str, Any] = {}
    if rng.random() < cfg.resample_prob:
        h["resample"] = round(float(rng.uniform(*cfg.resample_scale)), 4)
    if rng.random() < cfg.blur_prob:
        h["blur"] = round(float(rng.uniform(*cfg.blur_sigma)), 4)
    if rng.random() < cfg.sharpen_prob:
        h["sharpen"] = round(float(rng.uniform(*cfg.sharpen_amount)), 4)
    if rng.random() < cfg.noise_prob:
        h["noise"] = round(float(rng.uniform(*cfg.noise_sigma)), 4)
        h["noise_seed"] = int(rng.integers(2**31))
    if rng.random() < cfg.jpeg_prob:
        h["jpeg"] = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        shift = rng.random() < cfg.grid_shift_prob
        h["grid"] = [int(v) for v in rng.integers(0, 8, 2)] if shift else [0, 0]
    return h


def jpeg_on_grid(rgb: np.ndarray, quality: int, dx: int, dy: int) -> np.ndarray:
    """JPEG round trip whose 8x8 block grid starts at pixel ``(dx, dy)`` (0-7) instead of ``(0, 0)``:
    the image is padded by ``(8 - dx) % 8`` columns and ``(8 - dy) % 8`` rows on the top-left, compressed,
    decoded and cropped back (as if it had been cut from a larger JPEG at that offset)."""
    px, py = (8 - int(dx) % 8) % 8, (8 - int(dy) % 8) % 8
    if px == 0 and py == 0:
        return jpeg_roundtrip(rgb, quality)
    padded = cv2.copyMakeBorder(rgb, py, 0, px, 0, cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(jpeg_roundtrip(padded, quality)[py:, px:])


def apply_history(rgb: np.ndarray, history: dict[str, Any]) -> np.ndarray:
    """Apply a :func:`draw_history` history to an RGB uint8 image (same shape out)."""
    x = rgb
    h, w = x.shape[:2]
    if "resample" in history:
        s = float(history["resample"])
        small = cv2.resize(x, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if "blur" in history:
        x = cv2.GaussianBlur(x, (0, 0), float(history["blur"]))
    if "sharpen" in history:
        amt = float(history["sharpen"])
        x = cv2.addWeighted(x, 1 + amt, cv2.GaussianBlur(x, (0, 0), 1.0), -amt, 0)
    if "noise" in history:
        noise = np.random.default_rng(int(history["noise_seed"])).standard_normal(x.shape, dtype=np.float32)
        x = np.clip(x.astype(np.float32) + noise * np.float32(history["noise"]) + np.float32(0.5), 0, 255).astype(np.uint8)
    if "jpeg" in history:
        x = jpeg_on_grid(x, int(history["jpeg"]), *history["grid"])
    return np.ascontiguousarray(x)


def estimate_jpeg_quality_error(rgb: np.ndarray, mask: np.ndarray, quality: int, grid: tuple[int, int] = (0, 0)) -> float:
    """Mean absolute change of the pixels under ``mask`` when re-compressed at ``quality`` on ``grid``.

    A region that was last compressed at that quality on that grid is almost a fixed point of the round
    trip (small error); one with another history changes more. Used by tests and diagnostics to show that
    a pasted region carries another compression history than the background."""
    again = jpeg_on_grid(rgb, quality, *grid).astype(np.float32)
    diff = np.abs(again - rgb.astype(np.float32)).mean(axis=2)
    return float(diff[np.asarray(mask, dtype=bool)].mean())
