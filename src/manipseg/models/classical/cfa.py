"""CFA: demosaicing-trace inconsistency (Ferrara, Bianchi, De Rosa & Piva, IEEE TIFS 7(5), 2012).

A camera samples one colour per pixel through a Bayer colour filter array and interpolates the rest.
On the green channel the acquired pixels form one quincunx lattice and the interpolated ones the other.
Following the paper (and its reference code as shipped in the Zampoglou toolbox, CFA1):

1. prediction error of the green channel with the bilinear kernel,
   ``e = g - K * g``, ``K = [[0, 1/4, 0], [1/4, 0, 1/4], [0, 1/4, 0]]``;
2. local variance of ``e`` over a 7x7 Gaussian window (sigma 1) restricted to the pixel's own lattice
   (the window's taps at odd offsets are zeroed, so acquired pixels only see acquired neighbours);
3. per ``block x block`` block (8, the paper's default): ``L = log(GM_A / GM_I)``, the log ratio of the
   geometric means of that variance over acquired and interpolated positions. Demosaiced regions have
   interpolated pixels that the bilinear predictor reproduces well, so ``L`` is large; regions without
   CFA traces have ``L`` near 0;
4. the distribution of ``L`` is modelled as a two-component Gaussian mixture, a zero-mean component
   (no CFA traces: tampered) and a free one (authentic), fitted by EM;
5. the per-block log-likelihood ratio is median-filtered (5x5 blocks) and turned into the posterior
   ``P(tampered | L) = 1 / (1 + exp(LLR))`` with equal priors: that posterior is ``prob``.

The green lattice (which quincunx holds acquired pixels) is estimated as the one whose prediction
error variance is larger in most blocks, i.e. ``median(L) > 0``; the toolbox picks it by re-demosaicing
with each Bayer pattern, which selects the same green lattice on demosaiced images.
A small constant (``VAR_FLOOR``, 1e-3 grey levels squared, about 1/100 of 8-bit rounding-noise variance)
is added to the variances before the logarithm, so exactly flat pixels do not produce infinite ``L``
(the reference code maps those blocks to ``L = 0`` or drops them instead). Flat or saturated blocks get
``L`` near 0: like in the original method, such blocks carry no CFA evidence and tend to look tampered.

Images whose demosaicing traces were erased everywhere (resized, strongly JPEG-compressed, not from a
Bayer camera) give an "authentic" component with mean ``mu2`` near 0: the fitted map would then only
split blocks by the spread of ``L`` and say nothing about tampering. So the model is checked first:
when the separation ``mu2 / sqrt(v2)`` is below ``min_separation`` (default 0.5; bilinear-demosaiced
photos give about 2, and still about 1 after JPEG quality 85, while photos without CFA traces give
below 0.15), the detector returns an empty map, score 0 and ``extras["cfa_traces"] = False``
(``min_separation=0`` disables the check).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import median_filter
from scipy.special import expit

from ...contract import Detector, Prediction
from ._blocks import block_view, upsample_blocks

BILINEAR_KERNEL = np.array([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])
#: added to local variances before taking logs (grey levels squared); keeps flat pixels finite.
VAR_FLOOR = 1e-3


def lattice_window(size: int = 7, sigma: float = 1.0) -> np.ndarray:
    """Normalised Gaussian window keeping only taps on the centre pixel's quincunx lattice."""
    r = np.arange(size) - size // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    window = np.exp(-0.5 * (xx**2 + yy**2) / sigma**2) * ((xx + yy) % 2 == 0)
    return window / window.sum()


def local_variance_map(green: np.ndarray, window_size: int = 7, sigma: float = 1.0) -> np.ndarray:
    """Local variance of the bilinear prediction error, each pixel using its own lattice's neighbours.

    Borders use reflect-101 extension, which maps every out-of-image tap to a pixel of the same lattice.
    """
    green = np.asarray(green, dtype=np.float64)
    err = green - cv2.filter2D(green, cv2.CV_64F, BILINEAR_KERNEL, borderType=cv2.BORDER_REFLECT_101)
    window = lattice_window(window_size, sigma)
    mean = cv2.filter2D(err, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT_101)
    mean_sq = cv2.filter2D(err * err, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT_101)
    unbias = 1.0 - float(np.sum(window**2))  # weighted-sample variance correction
    return np.maximum(mean_sq - mean**2, 0.0) / unbias


def cfa_feature(var_map: np.ndarray, block: int = 8) -> np.ndarray:
    """Per-block ``L = mean log var (lattice A) - mean log var (lattice B)``; lattice A holds ``(i + j)`` even.

    A block with pixels of one lattice only (images smaller than a block) gets 0.
    """
    h, w = var_map.shape
    log_var = np.log(var_map + VAR_FLOOR)
    on_a = (np.add.outer(np.arange(h), np.arange(w)) % 2 == 0).astype(np.float64)
    on_b = 1.0 - on_a
    sum_a = block_view(log_var * on_a, block, 0.0).sum(axis=2)
    sum_b = block_view(log_var * on_b, block, 0.0).sum(axis=2)
    n_a = block_view(on_a, block, 0.0).sum(axis=2)
    n_b = block_view(on_b, block, 0.0).sum(axis=2)
    both = (n_a > 0) & (n_b > 0)
    feature = np.zeros(n_a.shape)
    feature[both] = sum_a[both] / n_a[both] - sum_b[both] / n_b[both]
    return feature


def em_zero_mean_mixture(x: np.ndarray, tol: float = 1e-3, max_iter: int = 500) -> tuple[float, float, float, float]:
    """EM fit of ``alpha * N(0, v1) + (1 - alpha) * N(mu2, v2)`` (Ferrara et al.'s model of ``L``).

    Returns ``(alpha, v1, mu2, v2)``. Starts like the reference code: ``alpha = 0.5``, ``mu2 = mean(x)``,
    ``v2 = var(x)``, ``v1 = v2 / 10``; iterates until ``alpha`` changes by less than ``tol``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    floor = 1e-12 + 1e-9 * float(np.var(x))
    alpha, mu2, v2 = 0.5, float(np.mean(x)), float(np.var(x))
    v1 = v2 / 10.0
    for _ in range(max_iter):
        log_f1 = np.log(alpha) - 0.5 * x**2 / v1 - 0.5 * np.log(v1)
        log_f2 = np.log1p(-alpha) - 0.5 * (x - mu2) ** 2 / v2 - 0.5 * np.log(v2)
        r1 = expit(log_f1 - log_f2)  # responsibility of the zero-mean (tampered) component
        r2 = 1.0 - r1
        alpha_new = float(np.clip(r1.mean(), 1e-6, 1.0 - 1e-6))
        v1 = max(float(np.sum(r1 * x**2) / max(r1.sum(), 1e-12)), floor)
        mu2 = float(np.sum(r2 * x) / max(r2.sum(), 1e-12))
        v2 = max(float(np.sum(r2 * (x - mu2) ** 2) / max(r2.sum(), 1e-12)), floor)
        converged = abs(alpha_new - alpha) < tol
        alpha = alpha_new
        if converged:
            break
    return alpha, v1, mu2, v2


class CFADetector(Detector):
    """Demosaicing-trace inconsistency: blocks whose green channel lacks Bayer interpolation traces."""

    name = "cfa"
    summary = "Demosaicing (CFA) trace inconsistency (Ferrara et al. 2012)."
    threshold = 0.5  # prob is a posterior with equal priors

    def __init__(self, device: str = "cpu", block: int = 8, window: int = 7, window_sigma: float = 1.0,
                 median_size: int = 5, min_separation: float = 0.5) -> None:
        super().__init__(device=device, block=block, window=window, window_sigma=window_sigma,
                         median_size=median_size, min_separation=min_separation)
        if int(block) < 2 or int(block) % 2:
            raise ValueError(f"CFA block size must be an even number >= 2 (whole Bayer cells), got {block}")
        if int(window) < 3 or int(window) % 2 == 0:
            raise ValueError(f"CFA variance window must be an odd number >= 3, got {window}")
        if int(median_size) < 1:
            raise ValueError(f"CFA median_size must be >= 1 block, got {median_size}")
        self.block = int(block)
        self.window = int(window)
        self.window_sigma = float(window_sigma)
        self.median_size = int(median_size)
        self.min_separation = float(min_separation)

    def _predict(self, image: np.ndarray) -> Prediction:
        h, w = image.shape[:2]
        var_map = local_variance_map(image[..., 1], self.window, self.window_sigma)
        feature = cfa_feature(var_map, self.block)
        lattice = 0 if np.median(feature) >= 0 else 1
        if lattice:
            feature = -feature
        extras = {"raw": feature.astype(np.float32), "raw_block_px": self.block,
                  "green_lattice": "(i+j) even" if lattice == 0 else "(i+j) odd"}
        empty = Prediction(prob=np.zeros((h, w), dtype=np.float32), score=0.0, extras=extras)
        if float(np.var(feature)) < 1e-10:  # no variation at all (e.g. constant image): no evidence
            extras["cfa_traces"] = False
            return empty
        alpha, v1, mu2, v2 = em_zero_mean_mixture(feature)
        separation = float(mu2 / np.sqrt(v2))
        extras.update(mixture={"alpha": alpha, "v1": v1, "mu2": mu2, "v2": v2, "separation": separation},
                      cfa_traces=bool(self.min_separation <= 0.0 or separation >= self.min_separation))
        if not extras["cfa_traces"]:  # no demosaicing traces anywhere: nothing to localise against
            return empty
        # log N(L; mu2, v2) - log N(L; 0, v1): evidence for "authentic" over "tampered"
        llr = 0.5 * np.log(v1 / v2) - 0.5 * ((feature - mu2) ** 2 / v2 - feature**2 / v1)
        llr = median_filter(llr, size=self.median_size, mode="nearest")
        prob_blocks = expit(-llr)
        prob = upsample_blocks(prob_blocks, self.block, h, w)
        # Image score: expected fraction of blocks without CFA traces (a high quantile would be ~1 on
        # any photo with flat or saturated areas, which carry no CFA evidence).
        score = float(np.mean(prob_blocks))
        return Prediction(prob=np.clip(prob, 0.0, 1.0), score=score, extras=extras)
