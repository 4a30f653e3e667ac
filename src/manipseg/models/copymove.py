"""Copy-move detection: regions duplicated within one image, both the copied source and the pasted target.

Method (keypoint matching, then dense verification):

1. **Working size.** The luma is resized to at most ``max_pixels`` (default 1.5 MP); the map is computed
   there and resized back. OpenCV's SIFT already doubles the image for its first octave, which is what
   lets small copies in small images produce keypoints.
2. **Keypoints.** SIFT (Lowe 2004) with a low contrast threshold (copies are often of textures: grass,
   walls, foliage), up to ``keypoints_per_mp`` per megapixel; descriptors become RootSIFT (Arandjelovic
   & Zisserman 2012: L1-normalise, square root), so Euclidean distance compares them by Hellinger kernel.
3. **Self-matching, generalised 2NN (g2NN)** of Amerini et al. 2011: for each keypoint the ``k`` nearest
   descriptors (FLANN kd-trees) are sorted by distance ``d_1 <= d_2 <= ...``, neighbours closer than
   ``min_distance`` pixels (the keypoint itself, its other orientations, its own blob) are dropped, and
   neighbours ``1..j`` are kept while ``d_i / d_{i+1} < ratio``: this accepts several copies of one
   patch, where Lowe's plain 2NN test would reject them all. With ``mirrored`` (default) the descriptors
   are also matched as their mirror images would look (a fixed permutation of the SIFT bins, so no
   second SIFT pass), which finds copies that were flipped left-right or up-down before pasting.
4. **Geometric verification.** Every match enters in both directions; sequential RANSAC
   (``cv2.estimateAffinePartial2D``: rotation, uniform scale, translation) extracts up to
   ``max_transforms`` transforms ``A`` (source -> target), each one removing its inliers and their
   reversed twins before the next; mirrored matches are fitted the same way after negating the
   source x coordinate. A transform counts when it has ``min_inliers`` inliers at distinct
   positions, moves them by at least ``min_shift`` pixels and has a plausible scale. This plays the role
   of Amerini's clustering + transform estimation, and of the per-cluster checks compared by Christlein
   et al. 2012.
5. **Dense map.** For each transform the image is warped by ``A`` and compared with itself by zero-mean
   normalised cross-correlation (ZNCC) in a ``window`` x ``window`` box; a variance floor
   (``min_std`` grey levels) makes flat areas (sky, walls) score low instead of matching everywhere.
   Pixels with ZNCC >= ``zncc_threshold`` form candidate regions, plus, only near the inliers (their
   convex hull dilated by ``hull_margin`` windows), pixels whose mean absolute difference is at most
   ``flat_diff`` grey levels (the flat parts of a copy). Only connected components that contain an
   inlier keypoint are kept ("grow from the inliers"), closed and hole-filled: that is the target. The source is its pre-image by ``A``. Both go in the map.
6. **Probability and score.** A verified transform of strength
   ``s = 0.5 + 0.5 * (1 - exp(-(n - min_inliers) / min_inliers))`` (``n`` distinct inliers) sets its
   source and target pixels to ``s`` (so every verified region is >= 0.5, the default threshold); all
   other pixels are 0. The image score is the largest ``s`` (0 when no transform is verified).

Limits: copies of flat or very small regions (no keypoints), copies among many near-identical
objects (the g2NN ratio cannot single them out) and strongly blurred or resampled copies are missed;
genuinely repeated structures (windows, tiles, printed patterns, collages) are found as copies, as by
any copy-move detector. SIFT dominates the run time (about 0.3-0.5 s per working megapixel).

References:
  I. Amerini, L. Ballan, R. Caldelli, A. Del Bimbo, G. Serra, "A SIFT-based forensic method for
  copy-move attack detection and transformation recovery", IEEE TIFS 6(3), 2011.
  V. Christlein, C. Riess, J. Jordan, C. Riess, E. Angelopoulou, "An evaluation of popular copy-move
  forgery detection approaches", IEEE TIFS 7(6), 2012.
  R. Arandjelovic, A. Zisserman, "Three things everyone should know to improve object retrieval",
  CVPR 2012 (RootSIFT).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
from ..contract import Detector, Prediction


@dataclass
class Transform:
    """A verified copy: ``matrix`` (2x3) maps source pixels to target pixels at working scale."""

    matrix: np.ndarray
    inliers: int
    source_points: np.ndarray  # (n, 2) inlier source positions
    target_points: np.ndarray  # (n, 2) inlier target positions
    strength: float = 0.0
    area: float = 0.0  # fraction of the image marked (source + target)


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


def g2nn_matches(points: np.ndarray, descriptors: np.ndarray, k: int = 10, ratio: float = 0.5,
                 min_distance: float = 10.0, queries: np.ndarray | None = None) -> np.ndarray:
    """Self-matches by the generalised 2NN test (Amerini et al. 2011); returns unique pairs ``(i, j)``, i < j.

    ``queries`` (default: the descriptors themselves) are matched to ``descriptors``, query ``i`` being
    at ``points[i]``; give the mirrored descriptors to find mirrored copies. Neighbours within
    ``min_distance`` pixels of the query keypoint are discarded before the test.
    """
    n = len(points)
    if n < 3:
        return np.empty((0, 2), dtype=np.int64)
    k = min(k + 1, n)
    cv2.setRNGSeed(0)  # FLANN's randomised kd-trees draw from OpenCV's RNG: same image, same matches
    index = cv2.flann_Index(descriptors, {"algorithm": 1, "trees": 4})  # FLANN_INDEX_KDTREE
    idx, dist2 = index.knnSearch(descriptors if queries is None else queries, k, params={"checks": 64})
    dist = np.sqrt(np.maximum(dist2, 0.0))  # FLANN's L2 returns squared distances
    near = np.linalg.norm(points[idx] - points[:, None, :], axis=2) < min_distance
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
    return np.unique(np.stack([np.minimum(rows, j), np.maximum(rows, j)], axis=1), axis=0)


def _distinct(points: np.ndarray, cell: float = 2.0) -> int:
    """Number of distinct positions (SIFT repeats a keypoint once per dominant orientation)."""
    return len(np.unique(np.round(points / cell).astype(np.int64), axis=0))


def similarity_maps(gray: np.ndarray, matrix: np.ndarray, window: int,
                    min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """ZNCC and mean absolute difference between ``gray`` and ``gray`` warped by ``matrix`` (source -> target).

    Both are local ``window`` x ``window`` box statistics at every target pixel. The variances in the
    ZNCC are floored at ``min_std**2`` so that flat areas give low values. Pixels whose pre-image
    falls outside the image get ZNCC 0 and difference 255.
    """
    h, w = gray.shape
    warped = cv2.warpAffine(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    valid = cv2.warpAffine(np.ones((h, w), np.float32), matrix, (w, h), flags=cv2.INTER_NEAREST,
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
    summary = "Copy-move: SIFT/g2NN self-matching, RANSAC transforms, dense ZNCC map of source and target."
    threshold = 0.5  # every verified region is >= 0.5, everything else is 0
    min_region = 0.0005

    def __init__(self, device: str = "cpu", max_pixels: float = 1.5e6, keypoint_pixels: float = 1.5e6,
                 keypoints_per_mp: int = 16000,
                 contrast_threshold: float = 0.01, ratio: float = 0.5, neighbours: int = 10,
                 min_distance: float = 10.0, min_inliers: int = 6, min_shift: float = 12.0,
                 ransac_threshold: float = 3.0, max_transforms: int = 4, window: int = 7,
                 min_std: float = 3.0, zncc_threshold: float = 0.6, flat_diff: float = 3.0,
                 hull_margin: float = 3.0, min_area: float = 0.0002, mirrored: bool = True) -> None:
        super().__init__(device=device, max_pixels=max_pixels, keypoint_pixels=keypoint_pixels,
                         keypoints_per_mp=keypoints_per_mp,
                         contrast_threshold=contrast_threshold, ratio=ratio, neighbours=neighbours,
                         min_distance=min_distance, min_inliers=min_inliers, min_shift=min_shift,
                         ransac_threshold=ransac_threshold, max_transforms=max_transforms, window=window,
                         min_std=min_std, zncc_threshold=zncc_threshold, flat_diff=flat_diff,
                         hull_margin=hull_margin, min_area=min_area, mirrored=mirrored)
        checks = {"max_pixels": (max_pixels, 1e4), "keypoint_pixels": (keypoint_pixels, 1e4), "keypoints_per_mp": (keypoints_per_mp, 1),
                  "neighbours": (neighbours, 1), "min_inliers": (min_inliers, 3), "window": (window, 3),
                  "max_transforms": (max_transforms, 1), "ransac_threshold": (ransac_threshold, 0.1)}
        for key, (value, low) in checks.items():
            if not value >= low:
                raise ValueError(f"copymove {key} must be at least {low}, got {value}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"copymove g2NN ratio must be in (0, 1), got {ratio}")
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

    # -- steps ----------------------------------------------------------------------------------
    def keypoints(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SIFT keypoint positions (n, 2) and RootSIFT descriptors (n, 128) of a uint8 grey image."""
        budget = max(500, int(self.keypoints_per_mp * gray.size / 1e6))
        sift = cv2.SIFT_create(nfeatures=budget, contrastThreshold=self.contrast_threshold)
        kps, desc = sift.detectAndCompute(gray, None)
        if desc is None or not kps:
            return np.empty((0, 2), np.float32), np.empty((0, 128), np.float32)
        return np.array([kp.pt for kp in kps], np.float32), rootsift(desc)

    def transforms(self, points: np.ndarray, pairs: np.ndarray, mirrored: bool = False) -> list[Transform]:
        """Sequential RANSAC over the matches (both directions) -> verified source->target transforms.

        ``mirrored`` pairs are fitted as a similarity after flipping the source x coordinate, so each
        transform is a reflection composed with rotation, scale and translation.
        """
        src = np.concatenate([points[pairs[:, 0]], points[pairs[:, 1]]])
        dst = np.concatenate([points[pairs[:, 1]], points[pairs[:, 0]]])
        flip = np.array([-1.0, 1.0], np.float32) if mirrored else np.ones(2, np.float32)
        pair_id = np.concatenate([np.arange(len(pairs)), np.arange(len(pairs))])
        alive = np.ones(len(src), bool)
        found: list[Transform] = []
        for _ in range(self.max_transforms):
            if alive.sum() < self.min_inliers:
                break
            s, d = src[alive], dst[alive]
            matrix, inl = cv2.estimateAffinePartial2D(s * flip, d, method=cv2.RANSAC,
                                                      ransacReprojThreshold=self.ransac_threshold,
                                                      maxIters=2000, confidence=0.995)
            if matrix is None or inl is None:
                break
            inl = inl.ravel().astype(bool)
            if inl.sum() < self.min_inliers:
                break
            ids = pair_id[alive][inl]
            alive &= ~np.isin(pair_id, ids)
            matrix = matrix.astype(np.float64)
            matrix[:, 0] *= flip[0]
            if self._plausible(matrix, s[inl], d[inl]):
                found.append(Transform(matrix, _distinct(s[inl]), s[inl], d[inl]))
        return found

    def _plausible(self, matrix: np.ndarray, s: np.ndarray, d: np.ndarray) -> bool:
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        shift = float(np.median(np.linalg.norm(d - s, axis=1)))
        return (_distinct(s) >= self.min_inliers and _distinct(d) >= self.min_inliers
                and 0.5 <= scale <= 2.0 and shift >= self.min_shift)

    def regions(self, gray: np.ndarray, t: Transform) -> tuple[np.ndarray, np.ndarray]:
        """Target and source masks of one transform (bool, working scale).

        Similar pixels are those with ZNCC >= ``zncc_threshold``; near the inliers (their convex hull,
        dilated by ``hull_margin`` windows) pixels whose mean absolute difference is at most
        ``flat_diff`` grey levels also count, so flat parts of a copied region are kept without
        letting a shifted sky match everywhere. Components touching an inlier are the target.
        """
        h, w = gray.shape
        corr, diff = similarity_maps(gray, t.matrix, self.window, self.min_std)
        hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(t.target_points).astype(np.int32)), 1)
        k = int(self.hull_margin * self.window) | 1
        hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
        cand = (corr >= self.zncc_threshold) | (hull & (diff <= self.flat_diff))
        cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        _, labels = cv2.connectedComponents(cand, connectivity=4)
        seeds = np.round(t.target_points).astype(np.int64)
        seeds[:, 0] = np.clip(seeds[:, 0], 0, w - 1)
        seeds[:, 1] = np.clip(seeds[:, 1], 0, h - 1)
        # a keypoint sits on a blob, not always on a similar pixel: look in its neighbourhood too
        r = self.window
        near = cv2.dilate(labels.astype(np.float32), np.ones((r, r), np.uint8))
        keep = np.unique(np.concatenate([labels[seeds[:, 1], seeds[:, 0]], near[seeds[:, 1], seeds[:, 0]]]))
        keep = keep[keep > 0].astype(np.int64)
        target = np.isin(labels, keep)
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

    def strength(self, inliers: int) -> float:
        return 0.5 + 0.5 * (1.0 - float(np.exp(-(inliers - self.min_inliers) / self.min_inliers)))

    # -- prediction -----------------------------------------------------------------------------
    def _predict(self, image: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        factor = min(1.0, float(np.sqrt(self.max_pixels / (h * w))))
        if factor < 1.0:
            gray = cv2.resize(gray, (max(8, round(w * factor)), max(8, round(h * factor))),
                              interpolation=cv2.INTER_AREA)
        wh, ww = gray.shape
        kfactor = min(1.0, float(np.sqrt(self.keypoint_pixels / (wh * ww))))
        if kfactor < 1.0:
            small = cv2.resize(gray, (max(8, round(ww * kfactor)), max(8, round(wh * kfactor))),
                               interpolation=cv2.INTER_AREA)
            points, desc = self.keypoints(small)
            points = (points + 0.5) * [ww / small.shape[1], wh / small.shape[0]] - 0.5
            points = points.astype(np.float32)
        else:
            points, desc = self.keypoints(gray)
        pairs = g2nn_matches(points, desc, self.neighbours, self.ratio, self.min_distance)
        found = self.transforms(points, pairs) if len(pairs) >= self.min_inliers else []
        n_matches = len(pairs)
        if self.mirrored and len(points) >= 3:
            pairs = g2nn_matches(points, desc, self.neighbours, self.ratio, self.min_distance,
                                 queries=mirror_descriptors(desc))
            n_matches += len(pairs)
            if len(pairs) >= self.min_inliers:
                found += self.transforms(points, pairs, mirrored=True)
        grayf = gray.astype(np.float32)
        prob = np.zeros((wh, ww), np.float32)
        verified: list[Transform] = []
        for t in found:
            target, source = self.regions(grayf, t)
            both = target | source
            t.area = float(both.mean())
            if t.area < self.min_area or not target.any():
                continue
            t.strength = self.strength(t.inliers)
            prob[both] = np.maximum(prob[both], t.strength)
            verified.append(t)
        if (wh, ww) != (h, w):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        score = max((t.strength for t in verified), default=0.0)
        extras = {"keypoints": int(len(points)), "matches": int(n_matches), "work_scale": factor,
                  "transforms": [{"matrix": (t.matrix / [[1, 1, factor], [1, 1, factor]]).tolist(),
                                  "inliers": t.inliers, "strength": t.strength, "area": t.area}
                                 for t in verified],
                  "seconds": time.perf_counter() - t0}
        return Prediction(prob=np.clip(prob, 0.0, 1.0), score=float(score), extras=extras)
