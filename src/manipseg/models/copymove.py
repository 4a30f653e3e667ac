"""Copy-move detection: regions duplicated within one image, both the copied source and the pasted target.

Method (keypoint matching, then dense verification):

1. **Working size.** The image is shrunk to at most ``max_pixels`` (default 1 MP) before the
   conversion to luma; the map is computed there and resized back. Keypoints are found on a copy of at
   most ``keypoint_pixels`` (default 1 MP). Photos up to 1 MP are thus analysed at their native pixels:
   real copy-moves are often small objects whose texture detail a downscaled copy loses (see Limits).
   Above 1 MP the cost per image stays nearly constant (SIFT is most of it: about 0.4 s of CPU on one
   thread at 1 MP), so the cost per megapixel falls with the photo's size.
2. **Keypoints.** SIFT (Lowe 2004) with a low contrast threshold (copies are often of textures: grass,
   walls, foliage), ``octave_layers`` scales per octave, up to ``keypoints_per_mp`` per megapixel;
   descriptors become RootSIFT (Arandjelovic & Zisserman 2012: L1-normalise, square root), so
   Euclidean distance compares them by Hellinger kernel.
3. **Self-matching, generalised 2NN (g2NN)** of Amerini et al. 2011: for each keypoint the ``k`` nearest
   descriptors (FLANN kd-trees, ``checks`` leaves per query: fewer checks miss true second
   neighbours, which lets false matches through the ratio test) are sorted by distance ``d_1 <= d_2 <= ...``, neighbours closer than
   ``min_distance`` pixels (the keypoint itself, its other orientations, its own blob) are dropped, and
   neighbours ``1..j`` are kept while ``d_i / d_{i+1} < ratio``: this accepts several copies of one
   patch, where Lowe's plain 2NN test would reject them all. With ``mirrored`` (default) the descriptors
   are also matched as their mirror images would look (a fixed permutation of the SIFT bins, so no
   second SIFT pass; both kinds of query share one index and one search), which finds copies that
   were flipped left-right or up-down before pasting.
3b. **Residual pairs** (``patch_agreement``, default 0.9; None turns them off). Among many near-identical
   objects (a grid of dots, balls, printed logos) every neighbour of a keypoint is about as close as the
   next, so g2NN keeps none, and the copy among them is lost. But a copy repeats its source's very pixels:
   for each keypoint and its ``k`` nearest descriptors, the fine residuals (grey minus its Gaussian blur of
   ``agreement_sigma``) of the ``2 * patch_radius + 1`` square patches around both are correlated
   (translation only, :func:`residual_pairs`; a cheap first test on the central 11 x 11 pixels), and pairs
   at ``patch_agreement`` or more that no transform of step 4 explains are grouped by their displacement
   (:meth:`CopyMoveDetector.translations`); a translation shared by ``patch_min_inliers`` (3) distinct
   keypoints is a candidate copy, verified by steps 5-6 like any other. (One keypoint is not enough: on the
   look-alike contact sheets of ``manipseg.eval.repeated`` 48 of 60 would then be flagged; with 3, none.)
   NoSo (``benchmarks/bench_fusion.py``): the copy-move branch's best-dataset F1 0.503 -> 0.602 (08_mod_02,
   13_mod found); the share of authentic photos with a verified copy: sun-hays 0 %, MISD authentic 1.5 ->
   2.0 % (a sports field's yard marks), repeated-structure photos 2.2 % / 0 %, unchanged. About 0.07 s per 1-MP photo.
4. **Geometric verification.** Every match enters in both directions; sequential RANSAC
   (``cv2.estimateAffinePartial2D``: rotation, uniform scale, translation) extracts up to
   ``max_transforms`` transforms ``A`` (source -> target), each one removing its inliers and their
   reversed twins before the next; mirrored matches are fitted the same way after negating the
   source x coordinate. A transform counts when it has ``min_inliers`` inliers at distinct
   positions, moves them by at least ``min_shift`` pixels and has a plausible scale. This plays the role
   of Amerini's clustering + transform estimation, and of the per-cluster checks compared by Christlein
   et al. 2012.
5. **Dense map.** For each transform the image is warped by ``A`` and compared with itself by zero-mean
   normalised cross-correlation (ZNCC) in a ``window`` x ``window`` box, only inside the bounding box
   of the target inliers widened by ``roi_margin`` times its size on every side; a variance floor
   (``min_std`` grey levels) makes flat areas (sky, walls) score low instead of matching everywhere.
   Pixels with ZNCC >= ``zncc_threshold`` form candidate regions, plus, only near the inliers (their
   convex hull dilated by ``hull_margin`` windows), pixels whose mean absolute difference is at most
   ``flat_diff`` grey levels (the flat parts of a copy). Only connected components that contain an
   inlier keypoint are kept ("grow from the inliers"), closed and hole-filled: that is the target. The source is its pre-image by ``A``. Both go in the map.
6. **Pixel-level verification.** Keypoints also match between two *different* objects that look alike
   (rows of windows, twin bottles, two chairs): their shapes and coarse texture repeat, their pixels do not.
   A copy repeats the very pixels — sensor noise and finest texture — up to resampling and compression. For
   each transform the fine residuals (grey minus its Gaussian blur, sigma 1) of the target region and of
   its source brought onto it are correlated (:meth:`CopyMoveDetector.residual_agreement`); a transform
   whose agreement is below ``min_agreement`` (default 0.65) is rejected and reported in the extras
   (``rejected``; drawn faintly, below the threshold). A transform that is nearly a translation (rotation
   under 3 degrees, scale within 3 %, no reflection: :func:`near_translation`) is scored as that translation
   (the best over +-1 px around the inliers' median displacement): look-alike objects fit such slight
   rotations because their keypoints do not coincide, and lose the agreement their shapes gave them
   (NoSo's look-alike candidates 0.64-0.66 -> 0.26-0.42), while a copy moved without rotation keeps or
   gains it (0.73-0.99; NoSo 02_mod and 06_mod no longer mark their look-alike cards and logos). Measured (2026-12-02, ``benchmarks/bench_fusion.py``): copies under JPEG 70-90
   and 0.9-1.1 scaling keep 0.67-0.99, NoSo's true copies 0.73-0.99, while look-alikes in authentic photos
   score 0.2-0.67 (all 80 ``sun-hays`` photos below 0.62). Digital repeats (tiled watermarks, printed or
   rendered patterns) are pixel-identical and pass, as they would for any copy-move detector.
7. **Probability and score.** A verified transform of strength
   ``s = 0.5 + 0.5 * (1 - exp(-(n - min_inliers) / min_inliers))`` (``n`` distinct inliers) sets its
   source and target pixels to ``s`` (so every verified region is >= 0.5, the default threshold); all
   other pixels are 0. The image score is the largest ``s`` (0 when no transform is verified).

Limits: copies of flat or very small regions (no keypoints; or a single keypoint, as one copied dot),
copies among many near-identical objects that were also resampled or recompressed off the 8 x 8 grid (their
residual pairs decorrelate; step 3b compares without rotation or scaling) and strongly blurred or resampled
copies are missed; a photo re-processed as a whole after the copy (NoSo 06_mod) can fail the verification;
genuinely repeated structures (windows, tiles, printed patterns, collages) are found as copies, as by
any copy-move detector. A smaller working size misses copies of small, finely textured regions: on the 18
real NoSo forgeries best-dataset F1 was 0.50 at the default 1 MP, 0.49 at 1.5 MP, but about 0.17 with
``max_pixels=0.5e6, keypoint_pixels=0.25e6`` (the fast preset: about 0.15 s of CPU per photo at any size,
and nearly as good on generated copy-moves of large textured regions); use it when time matters more.

References:
  I. Amerini, L. Ballan, R. Caldelli, A. Del Bimbo, G. Serra, "A SIFT-based forensic method for
  copy-move attack detection and transformation recovery", IEEE TIFS 6(3), 2011.
  V. Christlein, C. Riess, J. Jordan, C. Riess, E. Angelopoulou, "An evaluation of popular copy-move
  forgery detection approaches", IEEE TIFS 7(6), 2012.
  R. Arandjelovic, A. Zisserman, "Three things everyone should know to improve object retrieval",
  CVPR 2012 (RootSIFT).
"""
from __future__ import annotations

import numbers
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from ..contract import Detector, Prediction, check_image



@dataclass
class Transform:
    """A verified copy: ``matrix`` (2x3) maps source pixels to target pixels at working scale."""

    matrix: np.ndarray
    inliers: int
    source_points: np.ndarray  # (n, 2) inlier source positions
    target_points: np.ndarray  # (n, 2) inlier target positions
    strength: float = 0.0
    area: float = 0.0  # fraction of the image marked (source + target)
    agreement: float = 0.0  # residual agreement of target and source (see CopyMoveDetector.residual_agreement)


def rootsift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT: L1-normalise each SIFT descriptor, then take the element-wise square root."""
    d = descriptors.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d)


def mirror_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """The SIFT descriptors the mirror images of the patches would have (at the mirrored orientation).

    OpenCV lays a descriptor out as 4 x 4 spatial cells x 8 orientation bins; mirroring the image
    left-right (keypoint angle ``a`` -> ``180 - a``) reverses the cells' row order and sends bin
    ``o`` to ``-o mod 8`` (checked in the tests against SIFT on the flipped image). Works on RootSIFT too.
    """
    d = descriptors.reshape(-1, 4, 4, 8)[:, ::-1, :, :]
    return np.ascontiguousarray(d[..., (-np.arange(8)) % 8].reshape(-1, 128))


def knn(queries: np.ndarray, database: np.ndarray, k: int, checks: int = 16,
        threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``database`` rows of each query by Euclidean distance: (indices, distances), nearest first.

    FLANN randomised kd-trees (seeded, so repeatable) visiting ``checks`` leaves per query. The index is
    built once and the queries are split over ``threads`` (default: OpenCV's thread count) concurrent
    searches; each query's search is independent of the others, so the result does not depend on the split.
    """
    cv2.setRNGSeed(0)  # FLANN's randomised kd-trees draw from OpenCV's RNG: same image, same matches
    index = cv2.flann_Index(database, {"algorithm": 1, "trees": 4})  # FLANN_INDEX_KDTREE
    k = min(k, len(database))
    params = {"checks": int(checks)}
    threads = max(1, cv2.getNumThreads() if threads is None else int(threads))
    chunks = [c for c in np.array_split(queries, min(threads, max(1, len(queries) // 2000))) if len(c)]
    if len(chunks) > 1:  # knnSearch releases the GIL: the chunks run on separate cores
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            parts = list(pool.map(lambda c: index.knnSearch(np.ascontiguousarray(c), k, params=params), chunks))
        idx, dist2 = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    else:
        idx, dist2 = index.knnSearch(queries, k, params=params)
    return idx.astype(np.int64), np.sqrt(np.maximum(dist2, 0.0))  # FLANN's L2 returns squared distances


def g2nn_matches(points: np.ndarray, descriptors: np.ndarray, k: int = 10, ratio: float = 0.5,
                 min_distance: float = 10.0, queries: np.ndarray | None = None,
                 query_points: np.ndarray | None = None, checks: int = 16,
                 found: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Matches by the generalised 2NN test (Amerini et al. 2011): pairs ``(i, j)``, query ``i``, database row ``j``.

    ``queries`` (default: the descriptors themselves, then pairs are unique with i < j) at
    ``query_points`` (default ``points``) are matched to ``descriptors`` at ``points``; give the
    mirrored descriptors to find mirrored copies. Neighbours within
    ``min_distance`` pixels of the query keypoint are discarded before the test. ``found`` is the result
    of ``knn(queries, descriptors, k + 1, checks)`` when the caller already has it.
    """
    self_match = queries is None
    queries = descriptors if self_match else queries
    query_points = points if query_points is None else query_points
    if len(points) < 3 or len(queries) < 1:
        return np.empty((0, 2), dtype=np.int64)
    idx, dist = knn(queries, descriptors, k + 1, checks) if found is None else found
    dist = dist.astype(np.float32)
    near = np.linalg.norm(points[idx] - query_points[:, None, :], axis=2) < min_distance
    dist[near] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")  # far neighbours first, by distance
    dist = np.take_along_axis(dist, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    # neighbour j is kept when every ratio d_0/d_1, ..., d_j/d_{j+1} is below `ratio` (exact copies,
    # d = 0, pass; a neighbour with no far successor to compare with does not)
    ok = np.isfinite(dist[:, 1:]) & (dist[:, :-1] <= ratio * dist[:, 1:])
    keep = np.cumprod(ok, axis=1).astype(bool)
    rows, cols = np.nonzero(keep)
    if not len(rows):
        return np.empty((0, 2), dtype=np.int64)
    j = idx[rows, cols].astype(np.int64)
    if not self_match:
        return np.unique(np.stack([rows, j], axis=1), axis=0)
    return np.unique(np.stack([np.minimum(rows, j), np.maximum(rows, j)], axis=1), axis=0)


def _distinct(points: np.ndarray, cell: float = 2.0) -> int:
    """Number of distinct positions (SIFT repeats a keypoint once per dominant orientation)."""
    return len(np.unique(np.round(points / cell).astype(np.int64), axis=0))


def fine_residual(gray: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``gray`` minus its Gaussian blur of ``sigma`` pixels (float32): sensor noise and the finest texture."""
    gray = gray.astype(np.float32)
    return gray - cv2.GaussianBlur(gray, (0, 0), sigma)


def residual_pairs(residual: np.ndarray, points: np.ndarray, neighbours: np.ndarray, radius: int = 15,
                   min_corr: float = 0.9, min_distance: float = 10.0, min_rms: float = 0.5) -> np.ndarray:
    """Keypoint pairs ``(i, j)``, ``i < j``, whose fine residuals agree pixel for pixel: the zero-mean
    normalised correlation of the ``2 * radius + 1`` square patches of ``residual`` around both keypoints
    (translation only, at the nearest pixel) is at least ``min_corr``.

    ``neighbours`` (n, k) holds the candidate partners of each keypoint (its nearest descriptors); partners
    nearer than ``max(min_distance, 2 * radius + 1)`` pixels (overlapping patches) and keypoints whose central
    11 x 11 residual RMS is below ``min_rms`` grey levels (flat or clipped: nothing to compare) are skipped. A copy repeats its
    source's noise, so its keypoints pass even among many near-identical objects, where the g2NN ratio test
    cannot single out a partner; two different objects that look alike share shapes, not noise.
    """
    n = len(points)
    if n < 2 or neighbours.size == 0:
        return np.empty((0, 2), np.int64)
    h, w = residual.shape
    side = 2 * radius + 1
    padded = cv2.copyMakeBorder(residual.astype(np.float32), radius, radius, radius, radius, cv2.BORDER_REFLECT)
    xy = np.clip(np.round(points).astype(np.int64), 0, [w - 1, h - 1])

    def patches(which: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Zero-mean (size x size) patches centred on keypoints ``which``, flattened, and their norms."""
        lo = radius - size // 2
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        x = windows[xy[which, 1] + lo, xy[which, 0] + lo].reshape(len(which), -1)
        x -= x.mean(axis=1, dtype=np.float32)[:, None]
        return x, np.sqrt(np.einsum("ij,ij->i", x, x))

    # a cheap first test on the central 11 x 11 pixels (a copy agrees there too), which also says whether
    # a patch has anything to compare
    inner = min(side, 11)
    centre, cnorm = patches(np.arange(n), inner)
    usable = cnorm / inner >= min_rms
    far = np.linalg.norm(points[neighbours] - points[:, None, :], axis=2) >= max(min_distance, side)
    rows, cols = np.nonzero(far & usable[:, None] & usable[neighbours] & (neighbours != np.arange(n)[:, None]))
    j = neighbours[rows, cols]
    pre = np.einsum("ij,ij->i", centre[rows], centre[j]) / np.maximum(cnorm[rows] * cnorm[j], 1e-6)
    rows, j = rows[pre >= min_corr - 0.1], j[pre >= min_corr - 0.1]
    if not len(rows):
        return np.empty((0, 2), np.int64)
    needed, inverse = np.unique(np.concatenate([rows, j]), return_inverse=True)
    full, norm = patches(needed, side)
    a, b = inverse[:len(rows)], inverse[len(rows):]
    corr = np.einsum("ij,ij->i", full[a], full[b]) / np.maximum(norm[a] * norm[b], 1e-6)
    keep = corr >= min_corr
    rows, j = rows[keep], j[keep]
    return np.unique(np.stack([np.minimum(rows, j), np.maximum(rows, j)], axis=1), axis=0)


#: how close to a pure translation a transform must be to be verified as one (CopyMoveDetector.residual_agreement):
#: rotation in degrees, relative scale
NEAR_TRANSLATION = (3.0, 0.03)


def near_translation(matrix: np.ndarray) -> bool:
    """Whether a 2x3 similarity is nearly a pure translation: no reflection, rotation and scale change small."""
    linear = np.asarray(matrix, np.float64)[:, :2]
    det = float(np.linalg.det(linear))
    if det <= 0:
        return False
    angle = abs(float(np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))))
    return angle < NEAR_TRANSLATION[0] and abs(np.sqrt(det) - 1.0) < NEAR_TRANSLATION[1]


def unexplained(points: np.ndarray, pairs: np.ndarray, found: list["Transform"], tolerance: float) -> np.ndarray:
    """The ``pairs`` that no transform in ``found`` maps onto each other (in either direction) within ``tolerance`` px."""
    if not len(pairs) or not found:
        return pairs
    a, b = points[pairs[:, 0]], points[pairs[:, 1]]
    keep = np.ones(len(pairs), bool)
    for t in found:
        m = t.matrix
        keep &= np.linalg.norm(a @ m[:, :2].T + m[:, 2] - b, axis=1) > tolerance
        keep &= np.linalg.norm(b @ m[:, :2].T + m[:, 2] - a, axis=1) > tolerance
    return pairs[keep]


def similarity_maps(gray: np.ndarray, matrix: np.ndarray | None, window: int, min_std: float,
                    warped: np.ndarray | None = None, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ZNCC and mean absolute difference between ``gray`` and ``gray`` warped by ``matrix`` (source -> target).

    Both are local ``window`` x ``window`` box statistics at every target pixel. The variances in the
    ZNCC are floored at ``min_std**2`` so that flat areas give low values. Pixels whose pre-image
    falls outside the image get ZNCC 0 and difference 255. Instead of ``matrix`` the caller may give
    the ``warped`` image and its ``valid`` mask (same shape as ``gray``).
    """
    h, w = gray.shape
    if warped is None or valid is None:
        warped = cv2.warpAffine(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        valid = cv2.warpAffine(np.ones((h, w), np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    box = (window, window)
    m1, m2 = cv2.blur(gray, box), cv2.blur(warped, box)
    v1 = cv2.blur(gray * gray, box) - m1 * m1
    v2 = cv2.blur(warped * warped, box) - m2 * m2
    cov = cv2.blur(gray * warped, box) - m1 * m2
    floor = float(min_std) ** 2
    corr = cov / np.sqrt(np.maximum(v1, floor) * np.maximum(v2, floor))
    diff = cv2.blur(np.abs(gray - warped), box)
    return np.where(valid, corr, 0.0).astype(np.float32), np.where(valid, diff, 255.0).astype(np.float32)


class CopyMoveDetector(Detector):
    """Duplicated regions within the image (SIFT + g2NN + RANSAC + dense ZNCC), source and target both marked."""

    name = "copymove"
    summary = ("Copy-move: SIFT/g2NN self-matching, RANSAC transforms checked pixel by pixel (look-alike objects "
               "rejected), dense ZNCC map of source and target.")
    threshold = 0.5  # every verified region is >= 0.5, everything else is 0
    min_region = 0.0005

    def __init__(self, device: str = "cpu", max_pixels: float = 1.0e6,
                 keypoint_pixels: float = 1.0e6, keypoints_per_mp: int = 16000,
                 contrast_threshold: float = 0.01, ratio: float = 0.5,
                 neighbours: int = 10, min_distance: float = 10.0, min_inliers: int = 7, min_shift: float = 12.0,
                 ransac_threshold: float = 3.0, max_transforms: int = 4, window: int = 7,
                 min_std: float = 3.0, zncc_threshold: float = 0.6, flat_diff: float = 3.0,
                 hull_margin: float = 3.0, min_area: float = 0.0002, mirrored: bool = True,
                 roi_margin: float = 1.0, octave_layers: int = 3, checks: int = 32,
                 min_agreement: float = 0.65, agreement_sigma: float = 1.0,
                 patch_agreement: float | None = 0.9, patch_radius: int = 15, patch_min_inliers: int = 3) -> None:
        super().__init__(device=device, max_pixels=max_pixels,
                         keypoint_pixels=keypoint_pixels, keypoints_per_mp=keypoints_per_mp,
                         contrast_threshold=contrast_threshold, ratio=ratio,
                         neighbours=neighbours, min_distance=min_distance, min_inliers=min_inliers,
                         min_shift=min_shift, ransac_threshold=ransac_threshold, max_transforms=max_transforms,
                         window=window, min_std=min_std, zncc_threshold=zncc_threshold, flat_diff=flat_diff,
                         hull_margin=hull_margin, min_area=min_area, mirrored=mirrored, roi_margin=roi_margin,
                         octave_layers=octave_layers, checks=checks, min_agreement=min_agreement,
                         agreement_sigma=agreement_sigma, patch_agreement=patch_agreement,
                         patch_radius=patch_radius, patch_min_inliers=patch_min_inliers)
        limits = {"max_pixels": (max_pixels, 1e4), "keypoint_pixels": (keypoint_pixels, 1e4),
                  "keypoints_per_mp": (keypoints_per_mp, 1),
                  "neighbours": (neighbours, 1), "min_inliers": (min_inliers, 3), "window": (window, 3),
                  "max_transforms": (max_transforms, 1), "ransac_threshold": (ransac_threshold, 0.1),
                  "roi_margin": (roi_margin, 0.0), "octave_layers": (octave_layers, 1), "checks": (checks, 1),
                  "patch_radius": (patch_radius, 2), "patch_min_inliers": (patch_min_inliers, 1)}
        for key, (value, low) in limits.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"copymove {key} must be a number, got {value!r} ({type(value).__name__}); "
                                 "in YAML write 1500000 or 1.5e+6, not 1.5e6 (read as text)")
            if not value >= low:
                raise ValueError(f"copymove {key} must be at least {low}, got {value}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"copymove g2NN ratio must be in (0, 1), got {ratio}")
        if isinstance(min_agreement, bool) or not isinstance(min_agreement, numbers.Real) or not -1.0 <= min_agreement <= 1.0:
            raise ValueError(f"copymove min_agreement must be a number in [-1, 1] (-1 turns the verification off), "
                             f"got {min_agreement!r}")
        if isinstance(agreement_sigma, bool) or not isinstance(agreement_sigma, numbers.Real) or not agreement_sigma > 0:
            raise ValueError(f"copymove agreement_sigma must be a positive number of pixels, got {agreement_sigma!r}")
        if patch_agreement is not None and (isinstance(patch_agreement, bool) or not isinstance(patch_agreement, numbers.Real)
                                            or not 0.0 < patch_agreement <= 1.0):
            raise ValueError(f"copymove patch_agreement must be a number in (0, 1], or null to turn the residual "
                             f"pairing off, got {patch_agreement!r}")
        if not -1.0 < zncc_threshold < 1.0:
            raise ValueError(f"copymove zncc_threshold must be in (-1, 1), got {zncc_threshold}")
        self.max_pixels = float(max_pixels)
        self.keypoint_pixels = float(keypoint_pixels)
        self.keypoints_per_mp = int(keypoints_per_mp)
        self.contrast_threshold = float(contrast_threshold)
        self.ratio = float(ratio)
        self.neighbours = int(neighbours)
        self.min_distance = float(min_distance)
        self.min_inliers = int(min_inliers)
        self.min_shift = float(min_shift)
        self.ransac_threshold = float(ransac_threshold)
        self.max_transforms = int(max_transforms)
        self.window = int(window) | 1
        self.min_std = float(min_std)
        self.zncc_threshold = float(zncc_threshold)
        self.flat_diff = float(flat_diff)
        self.hull_margin = float(hull_margin)
        self.min_area = float(min_area)
        self.mirrored = bool(mirrored)
        self.roi_margin = float(roi_margin)
        self.octave_layers = int(octave_layers)
        self.checks = int(checks)
        self.min_agreement = float(min_agreement)
        self.agreement_sigma = float(agreement_sigma)
        self.patch_agreement = None if patch_agreement is None else float(patch_agreement)
        self.patch_radius = int(patch_radius)
        self.patch_min_inliers = int(patch_min_inliers)

    # -- steps ----------------------------------------------------------------------------------
    def keypoints(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SIFT keypoint positions (n, 2) and RootSIFT descriptors (n, 128) of a uint8 grey image."""
        budget = max(500, int(self.keypoints_per_mp * gray.size / 1e6))
        sift = cv2.SIFT_create(nfeatures=budget, nOctaveLayers=self.octave_layers,
                               contrastThreshold=self.contrast_threshold)
        kps, desc = sift.detectAndCompute(gray, None)
        if desc is None or not kps:
            return np.empty((0, 2), np.float32), np.empty((0, 128), np.float32)
        return np.array([kp.pt for kp in kps], np.float32), rootsift(desc)

    def transforms(self, points: np.ndarray, pairs: np.ndarray, mirrored: bool = False) -> list[Transform]:
        """Sequential RANSAC over the matches (both directions) -> verified source->target transforms.

        ``mirrored`` pairs are fitted as a similarity after flipping the source x coordinate, so each
        transform is a reflection composed with rotation, scale and translation.
        """
        need = self.min_inliers
        src = np.concatenate([points[pairs[:, 0]], points[pairs[:, 1]]])
        dst = np.concatenate([points[pairs[:, 1]], points[pairs[:, 0]]])
        flip = np.array([-1.0, 1.0], np.float32) if mirrored else np.ones(2, np.float32)
        pair_id = np.concatenate([np.arange(len(pairs)), np.arange(len(pairs))])
        alive = np.ones(len(src), bool)
        found: list[Transform] = []
        for _ in range(self.max_transforms):
            if alive.sum() < need:
                break
            s, d = src[alive], dst[alive]
            matrix, inl = cv2.estimateAffinePartial2D(s * flip, d, method=cv2.RANSAC,
                                                      ransacReprojThreshold=self.ransac_threshold,
                                                      maxIters=2000, confidence=0.995)
            if matrix is None or inl is None:
                break
            inl = inl.ravel().astype(bool)
            if inl.sum() < need:
                break
            ids = pair_id[alive][inl]
            alive &= ~np.isin(pair_id, ids)
            matrix = matrix.astype(np.float64)
            matrix[:, 0] *= flip[0]
            if self._plausible(matrix, s[inl], d[inl], need):
                found.append(Transform(matrix, _distinct(s[inl]), s[inl], d[inl]))
        return found

    def translations(self, points: np.ndarray, pairs: np.ndarray, min_inliers: int) -> list[Transform]:
        """Translations shared by the residual pairs (step 3b): the patches were compared without rotation or
        scaling, so a copy's pairs share one displacement. Greedy: the displacement with the most pairs within
        ``ransac_threshold`` px, its pairs removed, up to ``max_transforms`` times; a translation counts with
        ``min_inliers`` distinct positions at each end and a shift of at least ``min_shift`` px. (A similarity
        fitted by RANSAC to pairs in both directions is degenerate here: on a small cluster of keypoints the
        half-turn about its midpoint maps each end onto the other.)"""
        a, b = points[pairs[:, 0]], points[pairs[:, 1]]
        v = b - a
        back = (v[:, 0] < 0) | ((v[:, 0] == 0) & (v[:, 1] < 0))  # one orientation per pair: v and -v are one copy
        a[back], b[back] = b[back].copy(), a[back].copy()
        v[back] = -v[back]
        alive = np.ones(len(v), bool)
        found: list[Transform] = []
        for _ in range(self.max_transforms):
            idx = np.flatnonzero(alive)
            if len(idx) < min_inliers:
                break
            near = np.linalg.norm(v[idx, None, :] - v[None, idx, :], axis=2) <= self.ransac_threshold
            best = int(np.argmax(near.sum(axis=1)))
            inl = idx[near[best]]
            alive[inl] = False
            shift = np.median(v[inl], axis=0)
            matrix = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
            if self._plausible(matrix, a[inl], b[inl], min_inliers):
                found.append(Transform(matrix, _distinct(a[inl]), a[inl], b[inl]))
        return found

    def _plausible(self, matrix: np.ndarray, s: np.ndarray, d: np.ndarray, min_inliers: int) -> bool:
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        shift = float(np.median(np.linalg.norm(d - s, axis=1)))
        return (_distinct(s) >= min_inliers and _distinct(d) >= min_inliers
                and 0.5 <= scale <= 2.0 and shift >= self.min_shift)

    def _roi(self, t: Transform, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """Box (x0, y0, x1, y1) around the target inliers, widened by ``roi_margin`` times its size."""
        h, w = shape
        lo, hi = t.target_points.min(axis=0), t.target_points.max(axis=0)
        pad = self.roi_margin * (hi - lo) + self.hull_margin * self.window + 4 * self.window
        x0, y0 = np.floor(lo - pad).astype(int)
        x1, y1 = np.ceil(hi + pad).astype(int) + 1
        return max(0, x0), max(0, y0), min(w, x1), min(h, y1)

    def regions(self, gray: np.ndarray, t: Transform) -> tuple[np.ndarray, np.ndarray]:
        """Target and source masks of one transform (bool, working scale).

        Similar pixels are those with ZNCC >= ``zncc_threshold``; near the inliers (their convex hull,
        dilated by ``hull_margin`` windows) pixels whose mean absolute difference is at most
        ``flat_diff`` grey levels also count, so flat parts of a copied region are kept without
        letting a shifted sky match everywhere. Components touching an inlier are the target. The
        comparison is made only in a box around the target inliers (see ``roi_margin``).
        """
        h, w = gray.shape
        x0, y0, x1, y1 = self._roi(t, (h, w))
        shifted = t.matrix.copy()
        shifted[:, 2] -= (x0, y0)  # the warp writes straight into the box
        warped = cv2.warpAffine(gray, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        valid = cv2.warpAffine(np.ones((h, w), np.uint8), shifted, (x1 - x0, y1 - y0),
                               flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
        corr, diff = similarity_maps(gray[y0:y1, x0:x1], None, self.window, self.min_std,
                                     warped=warped, valid=valid)
        bh, bw = corr.shape
        seeds = np.round(t.target_points - (x0, y0)).astype(np.int64)
        seeds[:, 0] = np.clip(seeds[:, 0], 0, bw - 1)
        seeds[:, 1] = np.clip(seeds[:, 1], 0, bh - 1)
        hull = np.zeros((bh, bw), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(seeds.astype(np.int32)), 1)
        k = int(self.hull_margin * self.window) | 1
        hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
        cand = (corr >= self.zncc_threshold) | (hull & (diff <= self.flat_diff))
        cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        _, labels = cv2.connectedComponents(cand, connectivity=4)
        # a keypoint sits on a blob, not always on a similar pixel: look in its neighbourhood too
        r = self.window
        near = cv2.dilate(labels.astype(np.float32), np.ones((r, r), np.uint8))
        keep = np.unique(np.concatenate([labels[seeds[:, 1], seeds[:, 0]], near[seeds[:, 1], seeds[:, 0]]]))
        keep = keep[keep > 0].astype(np.int64)
        target = np.zeros((h, w), bool)
        target[y0:y1, x0:x1] = np.isin(labels, keep)
        if target.any():
            k = 2 * self.window + 1
            target = cv2.morphologyEx(target.astype(np.uint8), cv2.MORPH_CLOSE,
                                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
            contours, _ = cv2.findContours(target.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            filled = np.zeros((h, w), np.uint8)
            target = cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED) > 0  # holes filled
        source = cv2.warpAffine(target.astype(np.uint8), t.matrix, (w, h),
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
        return target, source

    def residual_agreement(self, gray: np.ndarray, t: Transform, target: np.ndarray, sigma: float = 1.0,
                           residual: np.ndarray | None = None) -> float:
        """Correlation of the fine residuals (``gray`` minus its Gaussian blur of ``sigma``) of the target
        region and of its source brought onto it by the transform. A copy repeats the very pixels — its
        sensor noise and finest texture — up to resampling and compression (high agreement); two different
        objects that look alike share only their shapes and coarse texture (low agreement).

        A transform within ``NEAR_TRANSLATION`` of a pure translation (no reflection, rotation under 3 degrees,
        scale within 3 %) is scored as the translation it nearly is: the best agreement over displacements
        within 1 px (half-pixel steps) of the inliers' median displacement. A copy moved without rotation
        matches its source there (better than through a fitted rotation of a fraction of a degree); two
        look-alike objects, whose keypoints fit such a slight rotation or scale because they are *not* the
        same pixels, lose the agreement their shapes gave them (NoSo: true copies 0.73-0.99 either way,
        look-alike candidates 0.64-0.66 -> 0.26-0.42). ``residual``: ``fine_residual(gray, sigma)``, when the
        caller has it (one per image, whatever the number of transforms)."""
        h, w = gray.shape
        x, y, bw, bh = cv2.boundingRect(target.astype(np.uint8))
        pad = int(4 * sigma) + 2
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
        residual = fine_residual(gray, sigma) if residual is None else residual
        a = residual[y0:y1, x0:x1][target[y0:y1, x0:x1]].astype(np.float64)

        def agreement(matrix: np.ndarray) -> float:
            shifted = matrix.copy()
            shifted[:, 2] -= (x0, y0)
            # the residual of the warped image is the warped residual, up to interpolation
            warped = cv2.warpAffine(residual, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
            b = warped[target[y0:y1, x0:x1]].astype(np.float64)
            den = float(np.sqrt((a * a).sum() * (b * b).sum()))
            return float((a * b).sum() / den) if den > 0 else 0.0

        if not near_translation(t.matrix):
            return agreement(t.matrix)
        base = np.median(t.target_points - t.source_points, axis=0)
        steps = np.arange(-1.0, 1.01, 0.5)
        return max(agreement(np.array([[1.0, 0.0, base[0] + dx], [0.0, 1.0, base[1] + dy]]))
                   for dx in steps for dy in steps)

    def strength(self, inliers: int) -> float:
        """0.5 at ``min_inliers`` distinct inliers (or fewer: a copy found by its residual pairs), towards 1 with more."""
        return 0.5 + 0.5 * (1.0 - float(np.exp(-max(0, inliers - self.min_inliers) / self.min_inliers)))

    # -- prediction -----------------------------------------------------------------------------
    def _predict(self, image: np.ndarray) -> Prediction:
        pred = self.predict_working(image)
        h, w = image.shape[:2]
        if pred.prob.shape != (h, w):
            pred.prob = np.clip(cv2.resize(pred.prob, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
        return pred

    def predict_working(self, image: np.ndarray) -> Prediction:
        """The similarity map at the working size (``max_pixels``; the image's own below it), not brought
        back to the image's size. What a fusion that works below the image's resolution needs."""
        image = check_image(image)
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        factor = min(1.0, float(np.sqrt(self.max_pixels / (h * w))))
        if factor < 1.0:  # shrink the colour image first: cheaper than converting all of a large photo
            size = (max(8, round(w * factor)), max(8, round(h * factor)))
            gray = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        else:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        wh, ww = gray.shape
        kfactor = min(1.0, float(np.sqrt(self.keypoint_pixels / (wh * ww))))
        small = gray
        if kfactor < 1.0:
            small = cv2.resize(gray, (max(8, round(ww * kfactor)), max(8, round(wh * kfactor))),
                               interpolation=cv2.INTER_AREA)
        scale = np.array([ww / small.shape[1], wh / small.shape[0]], np.float32)

        def to_work(p: np.ndarray) -> np.ndarray:
            return ((p + 0.5) * scale - 0.5).astype(np.float32) if kfactor < 1.0 else p

        points, desc = self.keypoints(small)
        n = len(points)
        queries, query_points = desc, points
        if self.mirrored:  # mirrored descriptors of the same keypoints: one FLANN index, one search
            queries, query_points = np.concatenate([desc, mirror_descriptors(desc)]), np.concatenate([points, points])
        neighbours = knn(queries, desc, self.neighbours + 1, self.checks) if n >= 3 else None
        pairs = g2nn_matches(points, desc, self.neighbours, self.ratio, self.min_distance, queries=queries,
                             query_points=query_points, checks=self.checks, found=neighbours)
        straight = np.unique(np.sort(pairs[pairs[:, 0] < n], axis=1), axis=0)
        mirror = pairs[pairs[:, 0] >= n] - (n, 0)
        key_points, points = points, to_work(points)
        found = self.transforms(points, straight) if len(straight) >= self.min_inliers else []
        if len(mirror) >= self.min_inliers:
            found += self.transforms(points, mirror, mirrored=True)
        n_matches = len(straight) + len(mirror)
        grayf = gray.astype(np.float32)
        residual = None  # fine_residual(grayf): once per image, for step 3b (when it works on gray) and step 6
        n_residual = 0
        if self.patch_agreement is not None and neighbours is not None:  # step 3b: copies among look-alikes
            # keypoints whose nearest descriptors all look alike (the g2NN test rejects them) but whose fine
            # residuals agree with one of them pixel for pixel, grouped by their displacement
            key_residual = fine_residual(small, self.agreement_sigma)
            if small is gray:
                residual = key_residual
            close = residual_pairs(key_residual, key_points, neighbours[0][:n],
                                   self.patch_radius, self.patch_agreement, self.min_distance)
            close = unexplained(points, close, found, self.ransac_threshold)
            n_residual = len(close)
            if n_residual >= self.patch_min_inliers:
                found += self.translations(points, close[:2048], self.patch_min_inliers)  # bounded memory
        prob = np.zeros((wh, ww), np.float32)
        verified: list[Transform] = []
        rejected: list[Transform] = []
        for t in found:
            target, source = self.regions(grayf, t)
            both = target | source
            t.area = float(both.mean())
            if t.area < self.min_area or not target.any():
                continue
            t.strength = self.strength(t.inliers)
            if residual is None:
                residual = fine_residual(grayf, self.agreement_sigma)
            t.agreement = self.residual_agreement(grayf, t, target, self.agreement_sigma, residual)
            if t.agreement < self.min_agreement:  # look-alike objects, not a copy (step 6): shown faintly
                weak = self.threshold * t.strength * max(0.0, t.agreement) / max(self.min_agreement, 1e-6)
                prob[both] = np.maximum(prob[both], min(weak, 0.998 * self.threshold))
                rejected.append(t)
                continue
            prob[both] = np.maximum(prob[both], t.strength)
            verified.append(t)
        score = max((t.strength for t in verified), default=0.0)
        extras = {"keypoints": int(len(points)), "matches": int(n_matches), "residual_pairs": int(n_residual),
                  "work_scale": factor,
                  "transforms": [{"matrix": (t.matrix / [[1, 1, factor], [1, 1, factor]]).tolist(),
                                  "inliers": t.inliers, "strength": t.strength, "area": t.area,
                                  "agreement": t.agreement}
                                 for t in verified],
                  "rejected": [{"inliers": t.inliers, "area": t.area, "agreement": t.agreement} for t in rejected],
                  "seconds": time.perf_counter() - t0}
        return Prediction(prob=np.clip(prob, 0.0, 1.0), score=float(score), extras=extras).validate(wh, ww)
