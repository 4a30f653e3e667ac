"""Classical detectors (NOI, CFA, ELA): the contract on awkward inputs and known-answer behaviour."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from manipseg import registry
from manipseg.contract import ContractError
from manipseg.models.classical._blocks import block_view, upsample_blocks
from manipseg.models.classical.cfa import CFADetector, em_zero_mean_mixture
from manipseg.models.classical.ela import ELADetector, recompress
from manipseg.models.classical.noi import NOIDetector, noise_level_map

CLASSICAL = ["noi", "cfa", "ela"]


def _mosaic_demosaic(rgb: np.ndarray, pattern: str = "BG") -> np.ndarray:
    """Sample an RGB image through a Bayer CFA and demosaic it with OpenCV's bilinear demosaicer."""
    h, w = rgb.shape[:2]
    # colour index (R=0, G=1, B=2) at the 2x2 cell positions (0,0), (0,1), (1,0), (1,1)
    cells = {"BG": (2, 1, 1, 0), "GB": (1, 2, 0, 1), "RG": (0, 1, 1, 2), "GR": (1, 0, 2, 1)}[pattern]
    mosaic = np.zeros((h, w), np.uint8)
    for (dy, dx), c in zip([(0, 0), (0, 1), (1, 0), (1, 1)], cells):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, c]
    code = {"BG": cv2.COLOR_BayerBG2RGB, "GB": cv2.COLOR_BayerGB2RGB,
            "RG": cv2.COLOR_BayerRG2RGB, "GR": cv2.COLOR_BayerGR2RGB}[pattern]
    return cv2.cvtColor(mosaic, code)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    return recompress(rgb, quality)


def _square_mask(h: int, w: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top:top + size, left:left + size] = True
    return mask


# -- the contract -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("shape", [(8, 8), (9, 13), (31, 17), (130, 67)])
def test_contract_on_odd_and_tiny_sizes(name, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    pred = registry.create(name).predict(image)
    assert pred.prob.shape == shape
    assert pred.prob.dtype == np.float32
    assert np.isfinite(pred.prob).all() and pred.prob.min() >= 0.0 and pred.prob.max() <= 1.0
    assert 0.0 <= pred.score <= 1.0


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_image_gives_empty_map(name, value):
    pred = registry.create(name).predict(np.full((45, 61, 3), value, np.uint8))
    assert pred.prob.shape == (45, 61)
    assert np.all(pred.prob == 0.0)
    assert pred.score == 0.0


@pytest.mark.parametrize("name", CLASSICAL)
def test_grayscale_as_rgb(name, astronaut):
    gray = cv2.cvtColor(astronaut[:200, :150], cv2.COLOR_RGB2GRAY)
    pred = registry.create(name).predict(np.repeat(gray[..., None], 3, axis=2))
    assert pred.prob.shape == (200, 150) and np.isfinite(pred.prob).all()


@pytest.mark.parametrize("name", CLASSICAL)
def test_registry_classes_and_config(name):
    cls = registry.get_class(name)
    assert cls.name == name and cls.summary and 0.0 < cls.threshold < 1.0
    det = cls.from_config({"name": name})
    assert isinstance(det, cls)


@pytest.mark.parametrize("name, option, value", [("noi", "block", 4), ("cfa", "median_size", 3),
                                                 ("ela", "quality", 75)])
def test_options_reach_the_detector(name, option, value):
    det = registry.create(name, **{option: value})
    assert getattr(det, option) == value and det.config[option] == value


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="block"):
        NOIDetector(block=1)
    with pytest.raises(ValueError, match="wavelet"):
        NOIDetector(wavelet="nope")
    with pytest.raises(ValueError, match="even"):
        CFADetector(block=7)
    with pytest.raises(ValueError, match="quality"):
        ELADetector(quality=0)
    with pytest.raises(ContractError):
        NOIDetector().predict(np.zeros((7, 20, 3), np.uint8))


# -- block helpers ----------------------------------------------------------------------------
def test_block_view_matches_loops():
    arr = np.arange(11 * 7, dtype=float).reshape(11, 7)
    view = block_view(arr, 4)
    assert view.shape == (3, 2, 16)
    for r in range(3):
        for c in range(2):
            top, left = min(4 * r, 11 - 4), min(4 * c, 7 - 4)  # last blocks flush with the edge
            np.testing.assert_array_equal(view[r, c], arr[top:top + 4, left:left + 4].ravel())
    tiny = block_view(np.ones((3, 5)), 4)  # smaller than a block: padded with nan
    assert tiny.shape == (1, 2, 16) and np.isnan(tiny).sum() == 4 + 4


def test_upsample_blocks_keeps_geometry():
    blocks = np.zeros((4, 5), np.float32)
    blocks[2, 3] = 1.0
    up = upsample_blocks(blocks, 16, 60, 75)  # last row/column of blocks partial
    assert up.shape == (60, 75)
    peak = np.unravel_index(np.argmax(up), up.shape)
    assert 32 <= peak[0] < 48 and 48 <= peak[1] < 64


# -- NOI --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_noi_estimator_recovers_gaussian_sigma(sigma):
    rng = np.random.default_rng(int(sigma))
    gray = np.clip(np.round(128.0 + sigma * rng.standard_normal((512, 512))), 0, 255)
    estimate = np.median(noise_level_map(gray, block=8))
    assert estimate == pytest.approx(sigma, rel=0.10)
    # same through the detector: a grey RGB image whose luma carries the noise
    image = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    raw = NOIDetector().predict(image).extras["raw"]
    assert np.median(raw) == pytest.approx(sigma, rel=0.10)


def test_noi_finds_noisier_pasted_region(astronaut):
    clean = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    h, w = clean.shape[:2]
    mask = _square_mask(h, w, 150, 200, 180)
    rng = np.random.default_rng(0)
    forged = clean.astype(np.float64)
    forged[mask] += 8.0 * rng.standard_normal((int(mask.sum()), 1))  # same noise in R, G, B
    forged = np.clip(np.round(forged), 0, 255).astype(np.uint8)
    pred = NOIDetector().predict(forged)
    assert roc_auc_score(mask.ravel(), pred.prob.ravel()) > 0.9
    assert pred.prob[mask].mean() > 3 * pred.prob[~mask].mean()
    assert pred.score > NOIDetector().predict(clean).score


def test_noi_quantile_scale_is_relative_per_image(astronaut):
    clean = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    z_pred = NOIDetector().predict(clean)
    q_pred = NOIDetector(scale="quantile").predict(clean)
    np.testing.assert_array_equal(q_pred.extras["raw"], z_pred.extras["raw"])
    assert q_pred.prob.max() > 0.9  # the image's top blocks always reach (about) 1
    assert np.mean(q_pred.prob < 0.1) > 0.4  # the median block maps to 0
    with pytest.raises(ValueError, match="scale"):
        NOIDetector(scale="minmax")


def test_noi_finds_region_at_odd_border(astronaut):
    """The map must stay aligned at the bottom-right of an odd-sized image (partial blocks)."""
    clean = cv2.GaussianBlur(astronaut[:301, :203], (0, 0), 2.0)
    mask = _square_mask(301, 203, 301 - 64, 203 - 64, 64)
    rng = np.random.default_rng(1)
    forged = clean.astype(np.float64)
    forged[mask] += 8.0 * rng.standard_normal((int(mask.sum()), 1))
    forged = np.clip(np.round(forged), 0, 255).astype(np.uint8)
    pred = NOIDetector().predict(forged)
    assert roc_auc_score(mask.ravel(), pred.prob.ravel()) > 0.9


# -- CFA --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, lattice", [("BG", "(i+j) odd"), ("GB", "(i+j) even")])
def test_cfa_estimates_green_lattice(astronaut, pattern, lattice):
    pred = CFADetector().predict(_mosaic_demosaic(astronaut[:256, :256], pattern))
    assert pred.extras["green_lattice"] == lattice


@pytest.mark.parametrize("source", ["raw", "resampled"])
def test_cfa_finds_region_without_demosaicing_traces(astronaut, source):
    h, w = astronaut.shape[:2]
    demosaiced = _mosaic_demosaic(astronaut, "BG")
    if source == "raw":
        patch = astronaut
    else:
        small = cv2.resize(astronaut, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        patch = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    mask = _square_mask(h, w, 150, 200, 180)
    forged = demosaiced.copy()
    forged[mask] = patch[mask]
    pred = CFADetector().predict(forged)
    assert roc_auc_score(mask.ravel(), pred.prob.ravel()) > 0.8
    assert pred.score > CFADetector().predict(demosaiced).score


def test_cfa_reports_images_without_demosaicing_traces(coffee):
    """skimage's coffee has no bilinear-CFA traces left: no map; re-mosaiced, it has them."""
    pred = CFADetector().predict(coffee)
    assert pred.extras["cfa_traces"] is False and not pred.prob.any() and pred.score == 0.0
    assert pred.extras["mixture"]["separation"] < 0.5
    unchecked = CFADetector(min_separation=0.0).predict(coffee)
    assert unchecked.extras["cfa_traces"] is True and unchecked.prob.any()
    assert CFADetector().predict(_mosaic_demosaic(coffee)).extras["cfa_traces"] is True


def test_cfa_em_recovers_mixture():
    rng = np.random.default_rng(3)
    n = 20000
    tampered = rng.random(n) < 0.3
    x = np.where(tampered, rng.normal(0.0, 0.2, n), rng.normal(2.0, 0.7, n))
    alpha, v1, mu2, v2 = em_zero_mean_mixture(x, tol=1e-6)
    assert alpha == pytest.approx(0.3, abs=0.02)
    assert np.sqrt(v1) == pytest.approx(0.2, rel=0.1)
    assert mu2 == pytest.approx(2.0, abs=0.05)
    assert np.sqrt(v2) == pytest.approx(0.7, rel=0.05)


# -- ELA --------------------------------------------------------------------------------------
def test_ela_finds_uncompressed_region_in_jpeg(astronaut):
    h, w = astronaut.shape[:2]
    background = _jpeg(_jpeg(astronaut, 60), 60)
    mask = _square_mask(h, w, 150, 200, 180)
    forged = background.copy()
    forged[mask] = astronaut[mask]
    pred = ELADetector().predict(forged)
    assert roc_auc_score(mask.ravel(), pred.prob.ravel()) > 0.9
    assert pred.prob[mask].mean() > 3 * pred.prob[~mask].mean()


def test_ela_raw_is_mean_abs_difference(coffee):
    image = coffee[:64, :96]
    raw = ELADetector(quality=75, smooth=0).predict(image).extras["raw"]
    expected = np.abs(image.astype(float) - _jpeg(image, 75).astype(float)).mean(axis=2)
    np.testing.assert_allclose(raw, expected, atol=1e-5)
