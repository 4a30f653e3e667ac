"""ELA: error level analysis (Krawetz, "A Picture's Worth", Black Hat 2007).

The image is re-compressed as JPEG at quality ``quality`` (OpenCV's encoder) and compared with itself:
regions that were already compressed at or below that quality change little, while regions pasted from
an uncompressed or differently compressed source change more. The absolute difference is averaged
over the colour channels and smoothed with a box filter the size of a JPEG block (8 px), then mapped to
[0, 1] with :func:`manipseg.contract.robust_normalise` (the image's median error level maps to 0, its
99.5th percentile to 1), so the default threshold 0.5 means "half-way from the typical error level to
the image's extreme error level".
"""
from __future__ import annotations

import cv2
import numpy as np

from ...contract import Detector, Prediction, robust_normalise


def recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of an RGB uint8 image through OpenCV at the given quality."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {image.shape[1]}x{image.shape[0]} image")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def error_level(image: np.ndarray, quality: int = 90, smooth: int = 8) -> np.ndarray:
    """Per-pixel error level: mean over channels of |image - JPEG(image, quality)|, box-smoothed."""
    diff = cv2.absdiff(image, recompress(image, quality)).astype(np.float32).mean(axis=2)
    if smooth > 1:
        diff = cv2.blur(diff, (smooth, smooth), borderType=cv2.BORDER_REFLECT)
    return diff


class ELADetector(Detector):
    """Error level analysis: regions whose JPEG re-compression error stands out from the rest."""

    name = "ela"
    summary = "Error level analysis: difference to a JPEG re-compression."
    threshold = 0.5

    def __init__(self, device: str = "cpu", quality: int = 90, smooth: int = 8) -> None:
        super().__init__(device=device, quality=quality, smooth=smooth)
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"ELA quality must be in 1..100, got {quality}")
        if int(smooth) < 0:
            raise ValueError(f"ELA smooth (box filter size in pixels) must be >= 0, got {smooth}")
        self.quality = int(quality)
        self.smooth = int(smooth)

    def _predict(self, image: np.ndarray) -> Prediction:
        raw = error_level(image, self.quality, self.smooth)
        prob = robust_normalise(raw)
        # Image score: how far the strongest error levels stand above the typical one (0 if uniform).
        median, high = np.percentile(raw, [50.0, 99.5])
        score = float((high - median) / high) if high > 1e-6 else 0.0
        return Prediction(prob=prob, score=score, extras={"raw": raw})
