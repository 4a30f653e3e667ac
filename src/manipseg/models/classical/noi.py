"""NOI: noise-level inconsistency (Mahdian & Saic, Image and Vision Computing 27(10), 2009).

The luminance is decomposed with a one-level wavelet transform (Daubechies db8, as in the Zampoglou
toolbox's NOI1); the noise standard deviation of each non-overlapping block of the diagonal detail
sub-band HH1 is estimated with the robust median estimator ``sigma = median(|HH1|) / 0.6745``.

From raw noise to probability (what makes the threshold meaningful): a spliced or retouched region
usually carries a noise level different from the rest of the photo, higher or lower. Each block's
log-noise is compared with the image's typical log-noise by a robust z-score,

    z = (log sigma_b - median(log sigma)) / s,   s = max(1.4826 * MAD(log sigma), 1.2533 / sqrt(n)),

where ``1.2533 / sqrt(n)`` is the sampling spread of the median estimator itself over ``n`` coefficients
(a block cannot be called inconsistent by less than its own estimation noise). Then
``prob = clip(|z| / z_max, 0, 1)``: with the default ``z_max = 6`` the default threshold 0.5 means
"noise differs from the image's typical noise by more than 3 robust standard deviations", on every
image alike, so an image with consistent noise gets an empty mask.

``scale="quantile"`` instead maps ``|log(sigma_b / median sigma)|`` with
:func:`manipseg.contract.robust_normalise` (median -> 0, 99.5th percentile -> 1): relative to each
image, so every image gets its most inconsistent blocks near 1, authentic ones included.
"""
from __future__ import annotations

import cv2
import numpy as np
import pywt

from ...contract import Detector, Prediction, robust_normalise
from ._blocks import block_view, upsample_blocks

#: median(|N(0, 1)|), the constant of the median absolute deviation noise estimator.
MAD_CONSTANT = 0.6745
#: standard deviation of 8-bit rounding noise; noise estimates are floored to it.
QUANTISATION_SIGMA = 1.0 / np.sqrt(12.0)


def luminance(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB uint8 image as float64 (what NOI1 analyses)."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float64)


def hh1_subband(gray: np.ndarray, wavelet: str = "db8") -> np.ndarray:
    """Diagonal detail coefficients of a one-level 2-D DWT, ``ceil(H/2) x ceil(W/2)`` of them.

    Symmetric extension avoids the wrap-around edges of periodic modes; the trailing coefficients
    that only see the extension are dropped, so coefficient ``k`` describes pixels ~``2k`` (for db8
    the energy centre of the high-pass filter is within one sub-band pixel of that).
    """
    _, (_, _, hh) = pywt.dwt2(gray, wavelet, mode="symmetric")
    return hh[: -(-gray.shape[0] // 2), : -(-gray.shape[1] // 2)]


def noise_level_map(gray: np.ndarray, block: int = 8, wavelet: str = "db8") -> np.ndarray:
    """Per-block noise standard deviation ``median(|HH1|) / 0.6745`` (blocks of ``block`` sub-band pixels).

    Returns an array of ``ceil(ceil(H/2)/block) x ceil(ceil(W/2)/block)`` estimates; each covers
    ``2*block`` image pixels; the last block row/column is taken flush with the border (see ``block_view``).
    """
    hh = hh1_subband(np.asarray(gray, dtype=np.float64), wavelet)
    blocks = block_view(np.abs(hh), block)
    return np.nanmedian(blocks, axis=2) / MAD_CONSTANT


class NOIDetector(Detector):
    """Noise-level inconsistency: blocks whose wavelet noise level departs from the image's typical level."""

    name = "noi"
    summary = "Noise-level inconsistency (Mahdian & Saic 2009): wavelet HH1 noise, block median estimator."
    threshold = 0.5  # |z| = z_max / 2 = 3 robust standard deviations with the defaults

    def __init__(self, device: str = "cpu", block: int = 8, wavelet: str = "db8", z_max: float = 6.0,
                 scale: str = "robust_z", score_quantile: float = 0.99) -> None:
        super().__init__(device=device, block=block, wavelet=wavelet, z_max=z_max, scale=scale,
                         score_quantile=score_quantile)
        if scale not in ("robust_z", "quantile"):
            raise ValueError(f"NOI scale must be 'robust_z' or 'quantile', got {scale!r}")
        if int(block) < 2:
            raise ValueError(f"NOI block size must be at least 2 sub-band pixels, got {block}")
        if z_max <= 0:
            raise ValueError(f"NOI z_max must be positive, got {z_max}")
        if not 0.0 <= score_quantile <= 1.0:
            raise ValueError(f"NOI score_quantile must be in [0, 1], got {score_quantile}")
        pywt.Wavelet(wavelet)  # raises ValueError naming the unknown wavelet
        self.block = int(block)
        self.wavelet = wavelet
        self.z_max = float(z_max)
        self.scale = scale
        self.score_quantile = float(score_quantile)

    def inconsistency(self, sigma: np.ndarray) -> np.ndarray:
        """Robust |z|-score of each block's log noise level against the image's typical level."""
        log_sigma = np.log(np.maximum(sigma, QUANTISATION_SIGMA))
        centre = np.median(log_sigma)
        spread = 1.4826 * np.median(np.abs(log_sigma - centre))
        spread = max(spread, 1.2533 / np.sqrt(self.block * self.block))
        return np.abs(log_sigma - centre) / spread

    def _predict(self, image: np.ndarray) -> Prediction:
        h, w = image.shape[:2]
        sigma = noise_level_map(luminance(image), self.block, self.wavelet)
        z = self.inconsistency(sigma)
        prob_blocks = robust_normalise(z) if self.scale == "quantile" else np.clip(z / self.z_max, 0.0, 1.0)
        prob = upsample_blocks(prob_blocks, 2 * self.block, h, w)
        score = float(np.quantile(prob_blocks, self.score_quantile))
        return Prediction(prob=np.clip(prob, 0.0, 1.0), score=score,
                          extras={"raw": sigma.astype(np.float32), "raw_block_px": 2 * self.block,
                                  "median_sigma": float(np.median(sigma))})
