"""Copy-move detector (SIFT + g2NN + RANSAC + dense ZNCC) and the artifact + similarity fusion."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from manipseg import registry
from manipseg.contract import Detector, Prediction
from manipseg.models.copymove import (CopyMoveDetector, Transform, fine_residual, g2nn_matches, knn,
                                      mirror_descriptors, near_translation, residual_pairs, rootsift,
                                      similarity_maps)
from manipseg.models.fused import FusedDetector, align_to_threshold, combine


@pytest.fixture(scope="module", autouse=True)
def _one_opencv_thread():
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(previous)


@pytest.fixture(scope="module")
def detector() -> CopyMoveDetector:
    return CopyMoveDetector()


def copy_move(image, box, shift, angle=0.0, scale=1.0, jpeg=None, mirror=False):
    """Copy the ``box`` (x0, y0, x1, y1) of ``image`` rotated/scaled about its centre and shifted by ``shift``.

    Returns the forgery and the NoSo-style ground truth (copied source + pasted target).
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    region = np.zeros((h, w), np.uint8)
    region[y0:y1, x0:x1] = 1
    matrix = cv2.getRotationMatrix2D(((x0 + x1) / 2, (y0 + y1) / 2), angle, scale)
    if mirror:  # reflect about the box's vertical centre line first
        matrix = matrix @ np.array([[-1.0, 0.0, x0 + x1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    matrix[:, 2] += shift
    warped = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)
    target = cv2.warpAffine(region, matrix, (w, h), flags=cv2.INTER_NEAREST) > 0
    out = image.copy()
    out[target] = warped[target]
    if jpeg is not None:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        assert ok
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out, target | (region > 0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# -- building blocks ------------------------------------------------------------------------------
def test_rootsift_is_hellinger_embedding():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 255, (5, 128)).astype(np.float32)
    r = rootsift(d)
    np.testing.assert_allclose((r * r).sum(axis=1), 1.0, rtol=1e-5)  # unit L2 norm
    p = d / d.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(r[0] @ r[1], np.sqrt(p[0] * p[1]).sum(), rtol=1e-5)  # Bhattacharyya coefficient


def test_g2nn_accepts_multiple_copies_and_rejects_neighbours():
    rng = np.random.default_rng(1)
    desc = rootsift(rng.integers(0, 255, (60, 128)).astype(np.float32))
    points = rng.uniform(0, 1000, (60, 2)).astype(np.float32)
    desc[1] = desc[2] = desc[0]  # one patch, three far-apart copies
    points[:3] = [[100, 100], [500, 100], [100, 700]]
    desc[4] = desc[3]  # a duplicate 3 px away: the same keypoint at another orientation, not a copy
    points[3:5] = [[800, 800], [803, 800]]
    pairs = {tuple(p) for p in g2nn_matches(points, desc, k=8, ratio=0.5, min_distance=10.0)}
    assert pairs == {(0, 1), (0, 2), (1, 2)}


def test_knn_matches_brute_force():
    rng = np.random.default_rng(4)
    database = rootsift(rng.integers(0, 255, (300, 128)).astype(np.float32))
    queries = database[:40] + rng.normal(0, 0.01, (40, 128)).astype(np.float32)
    idx, dist = knn(queries, database, 3, checks=512)
    exact = np.linalg.norm(queries[:, None, :] - database[None], axis=2)
    np.testing.assert_array_equal(idx, np.argsort(exact, axis=1)[:, :3])
    np.testing.assert_allclose(dist, np.sort(exact, axis=1)[:, :3], atol=1e-4)


def test_knn_threaded_search_equals_one_search():
    rng = np.random.default_rng(6)
    database = rootsift(rng.integers(0, 255, (3000, 128)).astype(np.float32))
    queries = np.concatenate([database, database[::-1, ::-1]]) + rng.normal(0, 0.02, (6000, 128)).astype(np.float32)
    one = knn(queries, database, 5, checks=16, threads=1)
    split = knn(queries, database, 5, checks=16, threads=3)  # 3 concurrent searches over one index
    np.testing.assert_array_equal(split[0], one[0])
    np.testing.assert_array_equal(split[1], one[1])


def test_g2nn_with_separate_queries_keeps_query_indices():
    rng = np.random.default_rng(5)
    desc = rootsift(rng.integers(0, 255, (50, 128)).astype(np.float32))
    points = rng.uniform(0, 1000, (50, 2)).astype(np.float32)
    queries = rootsift(rng.integers(0, 255, (3, 128)).astype(np.float32))
    queries[1] = desc[7]  # query 1 looks like database row 7, far away: a match
    queries[2] = desc[9]  # query 2 looks like row 9 but sits on it: no match
    query_points = np.array([[5, 5], [points[7, 0] + 300, points[7, 1]], points[9] + 2], np.float32)
    pairs = g2nn_matches(points, desc, k=8, queries=queries, query_points=query_points)
    assert pairs.tolist() == [[1, 7]]


def test_similarity_maps_match_direct_zncc():
    rng = np.random.default_rng(2)
    gray = cv2.GaussianBlur(rng.normal(128, 40, (64, 80)).astype(np.float32), (0, 0), 1.0)
    matrix = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -3.0]])
    corr, diff = similarity_maps(gray, matrix, window=7, min_std=1.0)
    warped = cv2.warpAffine(gray, matrix, (80, 64))
    y, x = 30, 40
    a, b = gray[y - 3:y + 4, x - 3:x + 4].ravel(), warped[y - 3:y + 4, x - 3:x + 4].ravel()
    expected = np.mean((a - a.mean()) * (b - b.mean())) / np.sqrt(a.var() * b.var())
    assert corr[y, x] == pytest.approx(expected, abs=1e-3)
    assert diff[y, x] == pytest.approx(np.abs(a - b).mean(), abs=1e-3)
    same, zero = similarity_maps(gray, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 7, 1.0)
    assert same[5:-5, 5:-5].min() > 0.999 and zero.max() < 1e-3


def test_mirror_descriptors_match_sift_on_the_flipped_image():
    grey = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    w = grey.shape[1]
    sift = cv2.SIFT_create(nfeatures=200)
    kps, desc = sift.detectAndCompute(grey, None)
    flipped = [cv2.KeyPoint(w - 1 - k.pt[0], k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave)
               for k in kps]
    _, desc_flipped = sift.compute(np.ascontiguousarray(grey[:, ::-1]), flipped)
    err = np.abs(mirror_descriptors(desc) - desc_flipped).mean()
    assert err < 0.2 * np.abs(desc - desc_flipped).mean()  # a wrong permutation is no better than none


# -- detection --------------------------------------------------------------------------------------
CASES = {
    "shift": (data.chelsea, (200, 150, 300, 250), (-180, -120), {}),
    "rotate15-scale1.1": (data.coffee, (40, 260, 160, 380), (380, -200), {"angle": 15, "scale": 1.1}),
    "shift-jpeg85": (data.astronaut, (140, 20, 260, 120), (200, 300), {"jpeg": 85}),
    "rotate-scale-jpeg85": (data.chelsea, (200, 150, 300, 250), (-180, -120),
                            {"angle": 15, "scale": 1.1, "jpeg": 85}),
    "mirrored-rotate10": (data.astronaut, (140, 20, 260, 120), (200, 300), {"angle": 10, "mirror": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_copy_move_marks_source_and_target(detector, case):
    load, box, shift, kw = CASES[case]
    image, truth = copy_move(load(), box, shift, **kw)
    pred = detector.predict(image)
    mask = pred.prob >= detector.threshold
    assert iou(mask, truth) >= 0.6
    assert pred.score >= 0.8
    x0, y0, x1, y1 = box
    source = np.zeros_like(truth)
    source[y0:y1, x0:x1] = True
    assert mask[source].mean() > 0.6 and mask[truth & ~source].mean() > 0.6  # both halves, not one
    best = np.array(pred.extras["transforms"][0]["matrix"])
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    pasted = centre + shift
    # the transform maps the source centre onto the pasted centre, or back (either direction is valid)
    forward = np.linalg.norm(best[:, :2] @ centre + best[:, 2] - pasted)
    backward = np.linalg.norm(best[:, :2] @ pasted + best[:, 2] - centre)
    assert min(forward, backward) < 5


@pytest.mark.parametrize("load", [data.coffee, data.astronaut, data.rocket])
def test_authentic_images_are_left_alone(detector, load):
    pred = detector.predict(load())
    assert pred.score < 0.5
    assert (pred.prob >= detector.threshold).mean() < 0.005


def test_grey_looking_and_large_images(detector):
    image, truth = copy_move(data.chelsea(), (200, 150, 300, 250), (-180, -120))
    grey = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert iou(detector.predict(grey).prob >= 0.5, truth) >= 0.6
    big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # 1353 x 900 > max_pixels
    small = CopyMoveDetector(max_pixels=0.5e6)
    pred = small.predict(big)
    assert pred.prob.shape == big.shape[:2] and pred.extras["work_scale"] < 1.0
    big_truth = cv2.resize(truth.astype(np.uint8), None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST) > 0
    assert iou(pred.prob >= 0.5, big_truth) >= 0.6
    translation = np.abs(np.array(pred.extras["transforms"][0]["matrix"])[:, 2])
    np.testing.assert_allclose(translation, [540, 360], atol=15)  # reported at full resolution


@pytest.mark.parametrize("image", [
    np.zeros((240, 320, 3), np.uint8),
    np.full((100, 100, 3), 200, np.uint8),
    np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8),
    np.random.default_rng(1).integers(0, 255, (17, 30, 3), dtype=np.uint8),
], ids=["black", "flat", "8x8", "17x30"])
def test_degenerate_images_give_empty_maps(detector, image):
    pred = detector.predict(image)
    assert pred.prob.shape == image.shape[:2]
    assert pred.score == 0.0 and pred.prob.max() == 0.0
    assert pred.extras["transforms"] == []


def test_dense_map_window_does_not_clip_the_copy():
    image, _ = copy_move(data.coffee(), (40, 260, 160, 380), (380, -200), angle=15, scale=1.1)
    windowed = CopyMoveDetector().predict(image).prob >= 0.5
    whole = CopyMoveDetector(roi_margin=100.0).predict(image).prob >= 0.5  # box = the whole image
    assert windowed.any() and iou(windowed, whole) > 0.98


def test_working_size_is_capped():
    big = cv2.resize(data.astronaut(), (2048, 1536), interpolation=cv2.INTER_LINEAR)
    pred = CopyMoveDetector().predict(big)
    assert pred.prob.shape == (1536, 2048)
    assert pred.extras["work_scale"] == pytest.approx(np.sqrt(1.0e6 / (2048 * 1536)), rel=1e-6)
    assert pred.extras["keypoints"] <= 16000 * 1.0 + 1  # SIFT ran on at most 1 MP
    fast = CopyMoveDetector(max_pixels=0.5e6, keypoint_pixels=0.25e6).predict(big)
    assert fast.extras["work_scale"] == pytest.approx(np.sqrt(0.5e6 / (2048 * 1536)), rel=1e-6)
    assert fast.extras["keypoints"] <= 16000 * 0.25 + 1


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def _another_instance(obj: np.ndarray, rng: np.random.Generator, gain: float) -> np.ndarray:
    """The same kind of object photographed again: its geometry differs by a smooth deformation of about one
    pixel, its light by ``gain``, its sensor noise is its own. Same shapes and texture, different pixels."""
    h, w = obj.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    flow = [cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 12) for _ in range(2)]
    dx, dy = (f / f.std() for f in flow)
    moved = cv2.remap(obj.astype(np.float32), gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(moved * gain + rng.normal(0, 3, moved.shape), 0, 255).astype(np.uint8)


def test_verifier_rejects_two_instances_of_a_textured_object():
    gravel = np.dstack([data.gravel()] * 3)
    h, w = gravel.shape[:2]
    s = min(h, w) // 4
    obj = gravel[h // 4:h // 4 + s, w // 8:w // 8 + s]
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(gravel, (0, 0), 8)  # a smooth background
    scene[h // 4:h // 4 + s, w // 8:w // 8 + s] = _another_instance(obj, rng, 1.0)
    scene[h // 2:h // 2 + s, w // 2:w // 2 + s] = _another_instance(obj, rng, 1.08)
    scene = _jpeg(scene, 90)
    unverified = CopyMoveDetector(min_agreement=-1.0).predict(scene)
    assert unverified.score >= 0.5 and max(t["inliers"] for t in unverified.extras["transforms"]) >= 50  # SIFT matches them
    verified = CopyMoveDetector().predict(scene)
    assert verified.score == 0.0 and not verified.extras["transforms"]
    assert verified.extras["rejected"] and max(t["agreement"] for t in verified.extras["rejected"]) < 0.5
    assert verified.prob.max() < 0.5  # shown faintly, never in the mask


@pytest.mark.parametrize("name", ["astronaut", "gravel"])
def test_verifier_accepts_a_copy_under_jpeg_80_and_scaling_0_9(detector, name):
    image = getattr(data, name)()
    image = _jpeg(np.dstack([image] * 3) if image.ndim == 2 else image, 90)
    h, w = image.shape[:2]
    s = min(h, w) // 4
    patch = cv2.resize(image[h // 4:h // 4 + s, w // 8:w // 8 + s], None, fx=0.9, fy=0.9, interpolation=cv2.INTER_LINEAR)
    forged = image.copy()
    forged[h // 2:h // 2 + patch.shape[0], w // 2:w // 2 + patch.shape[1]] = patch
    pred = detector.predict(_jpeg(forged, 80))
    assert pred.score >= 0.5
    best = max(pred.extras["transforms"], key=lambda t: t["inliers"])
    assert best["agreement"] >= detector.min_agreement
    target = np.zeros((h, w), bool)
    target[h // 2:h // 2 + patch.shape[0], w // 2:w // 2 + patch.shape[1]] = True
    assert iou(pred.prob >= 0.5, target) > 0.3  # the pasted copy (and its source) are marked


def _dot_grid(copy: bool, seed: int = 0, rows: int = 8, cols: int = 10, step: int = 36):
    """A grid of near-identical dark dots (the same blob, placed to within 1.5 px, each with its own sensor
    noise), as in NoSo's 10_mod / 13_mod; with ``copy`` a 2 x 2 block of dots is copied, noise and all, onto
    another 2 x 2 block. Returns the image (never recompressed) and the source + target ground truth."""
    rng = np.random.default_rng(seed)
    h, w = rows * step + step, cols * step + step
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.full((h, w), 205.0, np.float32)
    for r in range(rows):
        for c in range(cols):
            cy, cx = step + r * step + rng.uniform(-1.5, 1.5), step + c * step + rng.uniform(-1.5, 1.5)
            img -= 120 * np.exp(-(((xx - cx) / 5.0) ** 2 + ((yy - cy) / 4.0) ** 2) / 2)
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), bool)
    if copy:
        b, ys, xs = 2 * step, step // 2, step // 2
        yt, xt = ys + 3 * step, xs + 5 * step
        img[yt:yt + b, xt:xt + b] = img[ys:ys + b, xs:xs + b].copy()
        truth[yt:yt + b, xt:xt + b] = truth[ys:ys + b, xs:xs + b] = True
    return np.dstack([img] * 3), truth


def test_residual_pairs_single_out_a_copy_among_look_alikes(detector):
    for copy in (True, False):
        image, _ = _dot_grid(copy)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        points, desc = detector.keypoints(grey)
        neighbours, _ = knn(desc, desc, detector.neighbours + 1)
        pairs = residual_pairs(fine_residual(grey), points, neighbours, radius=15, min_corr=0.9)
        if not copy:  # 80 look-alike dots, none a copy: their noise differs
            assert len(pairs) == 0
            continue
        shifts = np.abs(points[pairs[:, 1]] - points[pairs[:, 0]])
        assert len(pairs) >= 3 and np.all(np.abs(shifts - (180, 108)).max(axis=1) <= 0.5)  # the copy's shift


def test_a_copy_among_look_alike_dots_is_found_by_its_residual_pairs(detector):
    image, truth = _dot_grid(True, seed=1)
    assert CopyMoveDetector(patch_agreement=None).predict(image).score == 0.0  # g2NN cannot single them out
    pred = detector.predict(image)
    assert pred.score >= 0.5 and pred.extras["residual_pairs"] >= 3
    assert iou(pred.prob >= 0.5, truth) > 0.8
    assert detector.predict(_dot_grid(False, seed=1)[0]).score == 0.0


def test_near_translation_and_its_snapped_agreement(detector):
    assert near_translation(np.array([[1.0, 0.0, 50.0], [0.0, 1.0, -3.0]]))
    assert near_translation(cv2.getRotationMatrix2D((0, 0), 2.0, 1.02))
    assert not near_translation(cv2.getRotationMatrix2D((0, 0), 4.0, 1.0))
    assert not near_translation(cv2.getRotationMatrix2D((0, 0), 0.0, 1.05))
    assert not near_translation(np.array([[1.0, 0.0, 50.0], [0.0, -1.0, 300.0]]))  # a reflection
    # a copy moved by (150, 100) px, verified through a transform fitted with a slight spurious rotation:
    # scored as the translation it nearly is, it keeps its full agreement
    rng = np.random.default_rng(4)
    grey = np.clip(cv2.GaussianBlur(rng.normal(128, 30, (360, 480)), (0, 0), 1.5) + rng.normal(0, 3, (360, 480)),
                   0, 255).astype(np.float32)
    grey[150:250, 200:300] = grey[50:150, 50:150]
    target = np.zeros(grey.shape, bool)
    target[150:250, 200:300] = True
    src = np.array([[60.0, 60.0], [140.0, 60.0], [100.0, 140.0]])
    tilted = cv2.getRotationMatrix2D((250, 200), 1.0, 1.0) @ np.vstack([[1, 0, 150], [0, 1, 100], [0, 0, 1.0]])
    t = Transform(tilted, 3, src, src + (150, 100))
    assert detector.residual_agreement(grey, t, target) > 0.95
    residual = fine_residual(grey)
    through_tilt = cv2.warpAffine(residual, tilted, grey.shape[::-1], flags=cv2.INTER_LINEAR)[target]
    assert np.corrcoef(residual[target], through_tilt)[0, 1] < 0.6  # what the fitted transform alone would give


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="ratio"):
        CopyMoveDetector(ratio=1.5)
    with pytest.raises(ValueError, match="checks"):
        CopyMoveDetector(checks=0)
    with pytest.raises(ValueError, match="roi_margin"):
        CopyMoveDetector(roi_margin=-1.0)
    with pytest.raises(ValueError, match="min_inliers"):
        CopyMoveDetector(min_inliers=1)
    with pytest.raises(ValueError, match="max_pixels must be a number, got '1.5e6'"):
        CopyMoveDetector(max_pixels="1.5e6")  # what YAML makes of 1.5e6
    with pytest.raises(ValueError, match="min_agreement"):
        CopyMoveDetector(min_agreement=1.5)
    with pytest.raises(ValueError, match="patch_agreement"):
        CopyMoveDetector(patch_agreement=1.5)
    with pytest.raises(ValueError, match="patch_min_inliers"):
        CopyMoveDetector(patch_min_inliers=0)


# -- fusion -----------------------------------------------------------------------------------------
def test_threshold_alignment_and_combination():
    p = np.linspace(0, 1, 101, dtype=np.float32)
    a = align_to_threshold(p, 0.2)
    assert a[0] == 0 and a[-1] == 1 and a[20] == pytest.approx(0.5) and np.all(np.diff(a) > 0)
    np.testing.assert_allclose(align_to_threshold(p, 0.5), p, atol=1e-6)
    rng = np.random.default_rng(3)
    x, y = rng.random((2, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(combine(x, y, "max"), np.maximum(x, y))
    np.testing.assert_allclose(combine(x, y, "noisy-or"), x + y - x * y, atol=1e-6)
    assert np.all(combine(x, y, "noisy-or") >= combine(x, y, "max") - 1e-6)
    np.testing.assert_array_equal(combine(x, y, "max", weight=0.0), x)
    with pytest.raises(ValueError, match="mode"):
        combine(x, y, "mean")


@pytest.mark.parametrize("mode", ["max", "noisy-or"])
def test_fused_combines_noi_and_copymove(mode):
    image, truth = copy_move(data.chelsea(), (200, 150, 300, 250), (-180, -120))
    fused = registry.create("fused") if mode == "max" else FusedDetector(mode=mode)
    assert fused.artifact.name == "noi" and fused.similarity.name == "copymove"
    pa, ps = fused.artifact.predict(image), fused.similarity.predict(image)
    assert ps.score >= 0.5  # a verified copy: the artifact map is halved, kept below the fused threshold
    pred = fused.predict(image)
    halved = np.minimum(0.5 * align_to_threshold(pa.prob, fused.artifact.threshold), np.nextafter(np.float32(0.5), 0))
    expected = combine(halved, align_to_threshold(ps.prob, fused.similarity.threshold), mode)
    np.testing.assert_allclose(pred.prob, expected, atol=1e-6)
    assert pred.extras["mask_from"] == "similarity"
    np.testing.assert_array_equal(pred.prob >= 0.5, ps.prob >= 0.5)  # the mask is the copy's
    unfollowed = FusedDetector(mode=mode, artifact_weight_on_copy=1.0).predict(image)
    plain = combine(align_to_threshold(pa.prob, fused.artifact.threshold),
                    align_to_threshold(ps.prob, fused.similarity.threshold), mode)
    np.testing.assert_allclose(unfollowed.prob, plain, atol=1e-6)
    if mode == "max":
        np.testing.assert_allclose(unfollowed.prob, np.maximum(pa.prob, ps.prob), atol=1e-6)  # both thresholds 0.5
    assert pred.score >= max(pa.score, ps.score) - 1e-6
    assert iou(pred.prob >= fused.threshold, truth) >= iou(pa.prob >= 0.5, truth)


def test_fused_mask_without_a_copy_is_the_artifact_detector_s():
    image = data.chelsea()
    fused = registry.create("fused")
    pa, ps = fused.artifact.predict(image), fused.similarity.predict(image)
    assert ps.score < 0.5
    pred = fused.predict(image)
    assert pred.extras["mask_from"] == "both"
    np.testing.assert_array_equal(pred.prob >= 0.5, pa.prob >= fused.artifact.threshold)


class _Confident(Detector):
    """A stand-in network, sure of itself in the bottom-right corner of any image (score 0.99): what a learned
    detector's false positive on a copy-move looks like."""

    name, threshold, min_region = "confident", 0.5, 0.0

    def __init__(self) -> None:
        self.config, self.device = {}, "cpu"

    def _predict(self, image: np.ndarray) -> Prediction:
        prob = np.zeros(image.shape[:2], np.float32)
        prob[-60:, -60:] = 0.99
        return Prediction(prob=prob, score=0.99)


def test_fused_mask_follows_a_verified_copy_even_below_the_network_s_score():
    image, _ = _dot_grid(True, seed=1)
    fused = FusedDetector(artifact=_Confident())
    ps = fused.similarity.predict(image)
    assert 0.5 <= ps.score < 0.99  # a verified copy of few keypoints, less sure than the network
    pred = fused.predict(image)
    assert pred.extras["mask_from"] == "similarity" and pred.score == pytest.approx(0.99)
    np.testing.assert_array_equal(pred.prob >= 0.5, ps.prob >= 0.5)  # the network's corner is not in the mask
    corner = pred.prob[-60:, -60:]
    assert corner.max() < 0.5 and corner.min() > 0.4  # but shown in the heatmap


def test_fused_parallel_path_gives_the_sequential_result():
    image, _ = copy_move(data.chelsea(), (200, 150, 300, 250), (-180, -120))
    sequential = FusedDetector(parallel_pixels=1e12).predict(image)
    parallel = FusedDetector(parallel_pixels=1).predict(image)  # similarity in a second thread
    np.testing.assert_array_equal(parallel.prob, sequential.prob)
    assert parallel.score == sequential.score and parallel.extras["similarity"]["seconds"] > 0


def test_fused_configuration():
    fused = FusedDetector.from_config({"name": "fused", "artifact": "ela", "similarity_weight": 0.5})
    assert fused.artifact.name == "ela" and fused.similarity_weight == 0.5
    with pytest.raises(ValueError, match="mode"):
        FusedDetector(mode="average")
    with pytest.raises(ValueError, match="similarity_weight"):
        FusedDetector(similarity_weight=2.0)
    with pytest.raises(ValueError, match="artifact_weight_on_copy"):
        FusedDetector(artifact_weight_on_copy=-0.1)
    with pytest.raises(FileNotFoundError):
        FusedDetector.from_pretrained("no-such-weights.safetensors")
    with pytest.raises(registry.UnknownDetectorError):
        FusedDetector(artifact="nio")


def test_large_photos_are_fused_at_the_branches_working_size():
    """When both branches work below the photo's size (the network's view, the copy-move working size), the
    maps are fused on the finer working grid and brought to the photo's size once: the same mask as fusing
    full-size maps, up to the interpolation at region edges."""
    import cv2

    image, truth = copy_move(data.chelsea(), (200, 150, 300, 250), (-180, -120))
    h, w = image.shape[:2]
    copymove = registry.create("copymove", max_pixels=60000)
    small = copymove.predict_working(image)
    assert small.prob.shape[0] * small.prob.shape[1] <= 60000 and small.prob.shape[0] < h
    full = copymove.predict(image)  # the standalone detector: its working map brought to the photo's size
    back = np.clip(cv2.resize(small.prob, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
    np.testing.assert_array_equal(full.prob, back)
    assert full.score == small.score >= 0.5  # the copy is found at the working size
    network = registry.create("gsr-compact", max_side=160, min_side=0)
    assert network.working_scale(h, w) < 1.0
    view = network.predict_working(image)
    assert view.prob.shape == (160, round(w * 160 / h))
    fused = FusedDetector(artifact=network, similarity=copymove)
    pred = fused.predict(image)
    assert pred.prob.shape == (h, w) and pred.prob.dtype == np.float32
    assert pred.score == pytest.approx(max(view.score, small.score))  # "max" of the branches' scores
    # the reference: full-size maps fused as for small photos
    pa = network.predict(image)
    halved = np.minimum(0.5 * align_to_threshold(pa.prob, network.threshold), np.nextafter(np.float32(0.5), 0))
    reference = combine(halved, align_to_threshold(full.prob, copymove.threshold), "max")
    assert iou(pred.prob >= 0.5, reference >= 0.5) > 0.97
    assert np.abs(pred.prob - reference).mean() < 0.01
    assert iou(pred.prob >= 0.5, truth) > 0.5
    # below the working sizes the maps are fused at the photo's size, as before
    assert FusedDetector(artifact=network).predict(image[:150, :200]).prob.shape == (150, 200)
