"""Test-time attacks for robustness curves (GSR-Net Fig. 5: JPEG 70/50, scale 0.7/0.5).

An attack is written ``kind:value``:

``jpeg:Q``      re-encode as JPEG with quality Q (1..100, OpenCV's encoder, 4:2:0).
``scale:F``     resize the image by F (0 < F <= 4; area interpolation when shrinking, bilinear when
                enlarging). The detector sees the resized image; its probability map is resized back
                to the original size (bilinear) and scored against the original mask, so every attack
                is scored on the same ground-truth pixels.
``blur:SIGMA``  Gaussian blur with standard deviation SIGMA pixels (kernel size from OpenCV's rule).
``noise:STD``   additive Gaussian noise of standard deviation STD grey levels, clipped to 0..255. The
                noise is seeded by the image name, so a run is repeatable and independent of order.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from ..names import Registry, did_you_mean

#: the attacks, each with the values it takes
ATTACKS = Registry("attack", cutoff=0.5)
ATTACKS.add("jpeg", "jpeg", summary="JPEG quality 1..100")
ATTACKS.add("scale", "scale", summary="resize factor 0 < F <= 4")
ATTACKS.add("blur", "blur", summary="Gaussian blur sigma > 0 (pixels)")
ATTACKS.add("noise", "noise", summary="Gaussian noise std > 0 (grey levels)")


class AttackError(ValueError):
    """An attack string that cannot be parsed; the message lists the known attacks."""


@dataclass(frozen=True)
class Attack:
    kind: str
    value: float

    @property
    def name(self) -> str:
        v = int(self.value) if self.kind == "jpeg" or float(self.value).is_integer() else self.value
        return f"{self.kind}:{v}"

    def apply(self, image: np.ndarray, seed_name: str = "") -> np.ndarray:
        """The attacked copy of an (H, W, 3) uint8 RGB image."""
        if self.kind == "jpeg":
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(self.value)])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        if self.kind == "scale":
            h, w = image.shape[:2]
            nh, nw = max(1, int(round(h * self.value))), max(1, int(round(w * self.value)))
            if min(nh, nw) < 8:
                raise ValueError(f"scale {self.value} makes a {w}x{h} image {nw}x{nh}, below the 8x8 minimum")
            interp = cv2.INTER_AREA if self.value < 1 else cv2.INTER_LINEAR
            return cv2.resize(image, (nw, nh), interpolation=interp)
        if self.kind == "blur":
            return cv2.GaussianBlur(image, (0, 0), sigmaX=float(self.value), borderType=cv2.BORDER_REFLECT_101)
        if self.kind == "noise":
            rng = np.random.default_rng(zlib.crc32(f"{self.name}|{seed_name}".encode()))
            noisy = image.astype(np.float32) + rng.normal(0.0, self.value, image.shape).astype(np.float32)
            return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        raise AttackError(f"unknown attack kind {self.kind!r}")

    def restore(self, prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Bring a probability map of the attacked image back to the original (H, W)."""
        h, w = shape
        if prob.shape == (h, w):
            return prob
        out = cv2.resize(prob.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(out, 0.0, 1.0)


def parse_attack(text: str) -> Attack:
    """Parse ``kind:value`` (e.g. ``jpeg:70``, ``scale:0.5``)."""
    known = ", ".join(f"{k}:<{ATTACKS.summary(k)}>" for k in ("jpeg", "scale", "blur", "noise"))
    kind, sep, raw = text.strip().partition(":")
    kind = kind.lower()
    if kind not in ATTACKS:
        hint = did_you_mean(kind, ATTACKS.names(), cutoff=ATTACKS.cutoff)
        raise AttackError(f"unknown attack {text!r}.{hint} Known attacks: {known}")
    what = ATTACKS.summary(kind)
    if not sep or not raw:
        raise AttackError(f"attack {text!r} needs a value: {kind}:<{what}>")
    try:
        value = float(raw)
    except ValueError:
        raise AttackError(f"attack {text!r}: {raw!r} is not a number ({what})") from None
    valid = {"jpeg": value.is_integer() and 1 <= value <= 100, "scale": 0 < value <= 4,
             "blur": 0 < value <= 50, "noise": 0 < value <= 255}[kind]
    if not valid:
        raise AttackError(f"attack {text!r}: value out of range ({what})")
    return Attack(kind, value)


def parse_attacks(texts: list[str] | None) -> list[Attack]:
    """Parse a list of attack strings, dropping duplicates, keeping order."""
    out: list[Attack] = []
    for t in texts or []:
        a = parse_attack(t)
        if a not in out:
            out.append(a)
    return out
