"""Synthetic manipulation engine: every kind changes only pixels inside K, deterministically."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from pathlib import Path

import cv2
import numpy as np
import pytest

from manipseg.generate import (KINDS, GenConfig, ImagePool, SourceError, SyntheticDataset, derive_seed,
                               elastic_deform, face_hull_mask, make_sample, random_blob, random_ellipse,
                               random_polygon, self_blend)
from manipseg.generate.core import _colour_transfer
from manipseg.generate.post import apply_post
from manipseg.generate.config import PostConfig
from manipseg.postprocess import boundary_of

SIZE = 128
NO_POST = {"post": {"enabled": False}}
ALL_POST = {"post": {"jpeg_prob": 1.0, "resize_prob": 1.0, "blur_prob": 1.0, "noise_prob": 1.0}}
FORGERY_KINDS = [k for k in KINDS if k != "authentic"]


@pytest.fixture(scope="module")
def src_dir(tmp_path_factory) -> Path:
    """Four skimage photos, plus an annotations folder that must not be taken for photos."""
    from skimage import data

    d = tmp_path_factory.mktemp("sources")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(d / f"{name}.png"), getattr(data, name)()[:, :, ::-1])
    (d / "masks").mkdir()
    cv2.imwrite(str(d / "masks" / "astronaut.png"), np.zeros((64, 64), np.uint8))
    return d


@pytest.fixture(scope="module")
def pool(src_dir) -> ImagePool:
    return ImagePool(src_dir, size=SIZE)


def _changed(a: np.ndarray, b: np.ndarray, tol: int = 0) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > tol


def _digest(s) -> str:
    h = hashlib.sha256()
    for a in (s.image, s.mask, s.boundary, s.target, s.source):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps(s.meta, sort_keys=True).encode())
    return h.hexdigest()


def test_pool_finds_photos_and_skips_annotation_folders(pool):
    assert len(pool) == 4
    assert all("masks" not in i for i in pool.ids)
    img = pool.image(0)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert pool.image(0, 64).shape == (64, 64, 3)


def test_pool_bad_sources_are_clear(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        ImagePool(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(SourceError, match="not a folder"):
        ImagePool(tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        ImagePool(tmp_path / "empty")


def test_pool_reads_coco_yolo_and_bsds_annotations(tmp_path):
    """Known-answer regions from the three annotation formats, through resize + centre crop."""
    from skimage import data

    photo = cv2.resize(data.coffee(), (200, 100))[:, :, ::-1]  # 200 x 100: shorter side 100 -> crop x 50..150
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images/train/a.png"), photo)
    cv2.imwrite(str(tmp_path / "images/val/b.png"), photo)
    # COCO: a 40x40 square at x 60..100, y 30..70 of image a
    coco = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 7, "image_id": 1, "iscrowd": 0, "segmentation": [[60, 30, 100, 30, 100, 70, 60, 70]]},
                            {"id": 8, "image_id": 1, "iscrowd": 1, "segmentation": {"counts": [1], "size": [100, 200]}}]}
    (tmp_path / "instances_train.json").write_text(json.dumps(coco))
    # YOLO-seg: the same square of image b in normalised coordinates
    (tmp_path / "yolo-seg-labels/val").mkdir(parents=True)
    (tmp_path / "yolo-seg-labels/val/b.txt").write_text("3 0.3 0.3 0.5 0.3 0.5 0.7 0.3 0.7\n")
    # BSDS: two annotators' label maps for image a
    (tmp_path / "segmentations/train").mkdir(parents=True)
    lab = np.ones((100, 200), np.uint16)
    lab[:, 100:] = 2
    cv2.imwrite(str(tmp_path / "segmentations/train/a_0.png"), lab)
    p = ImagePool(tmp_path, size=100)
    assert p.ids == [f"{tmp_path.name}/images/train/a.png", f"{tmp_path.name}/images/val/b.png"]
    objs_a = p.objects(0)
    assert objs_a.ids == ["coco:7", "bsds:0:1", "bsds:0:2"]  # crowd RLE skipped
    sq = objs_a.mask(0)
    ys, xs = np.nonzero(sq)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 50, 30, 70)  # x shifted by the 50 px crop
    assert objs_a.areas[1] == pytest.approx(0.5) and objs_a.areas[2] == pytest.approx(0.5)
    objs_b = p.objects(1)
    assert objs_b.ids == ["yolo:0"]
    assert np.array_equal(objs_b.mask(0), sq)


def test_pool_views_keep_native_pixels_and_move_regions_with_them(tmp_path):
    """A scale-1 view is an exact window of the photo; regions are cut from the same window."""
    from skimage import data

    from manipseg.generate.pool import View

    photo = data.astronaut()  # 512 x 512
    (tmp_path / "images/train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images/train/a.png"), photo[:, :, ::-1])
    coco = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 5, "image_id": 1, "iscrowd": 0, "segmentation": [[400, 420, 440, 420, 440, 460, 400, 460]]}]}
    (tmp_path / "instances_train.json").write_text(json.dumps(coco))
    p = ImagePool(tmp_path, size=128)
    img, objs = p.get(0, 128, View(scale=1.0, fx=1.0, fy=1.0))  # bottom-right window: x, y 384..512
    assert np.array_equal(img, photo[384:, 384:])
    ys, xs = np.nonzero(objs.mask(0))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (16, 56, 36, 76)
    half, _ = p.get(0, 128, View(scale=0.5, fx=0.0, fy=0.0))  # 256 x 256 photo, top-left window
    assert np.abs(half.astype(int) - cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)[:128, :128]).max() == 0
    tiny, _ = p.get(0, 128, View(scale=0.01))  # below the fitting scale: raised to it
    assert np.array_equal(tiny, p.image(0, 128))
    cfg = {"crop_prob": 1.0, "crop_scales": [1.0]}
    a, b = make_sample("copymove", 11, p, 128, cfg), make_sample("copymove", 11, p, 128, cfg)
    assert _digest(a) == _digest(b)
    assert not np.array_equal(a.target, p.image(0, 128))  # a native window, not the fitted photo


def test_shapes_hit_requested_area_and_hull_matches_skimage():
    from skimage.morphology import convex_hull_image

    rng = np.random.default_rng(0)
    for fn in (random_polygon, random_ellipse, random_blob):
        for area in (0.02, 0.1):
            m = fn(rng, (128, 128), area)
            assert m.dtype == bool and m.any() and not m.all()
            assert 0.25 * area < m.mean() < 3 * area, (fn.__name__, area, m.mean())
    blob = random_blob(rng, (128, 128), 0.1)
    warped = elastic_deform(blob, rng, alpha=6, sigma=10)
    assert not np.array_equal(warped, blob)
    assert abs(warped.mean() - blob.mean()) < 0.3 * blob.mean()
    pts = rng.uniform(20, 100, (30, 2))
    hull = face_hull_mask(pts, (128, 128))
    ref_pts = np.zeros((128, 128), bool)
    ref_pts[np.rint(pts[:, 1]).astype(int), np.rint(pts[:, 0]).astype(int)] = True
    ref = convex_hull_image(ref_pts)
    iou = (hull & ref).sum() / (hull | ref).sum()
    assert iou > 0.95
    with pytest.raises(ValueError):
        face_hull_mask(np.zeros((2, 2)), (10, 10))


@pytest.mark.parametrize("kind", FORGERY_KINDS)
def test_changes_lie_inside_k_without_post(kind, pool):
    kinds_seen_objects = []
    for seed in range(6):
        s = make_sample(kind, seed, pool, size=SIZE, config=NO_POST)
        frac = s.mask.mean()
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert s.mask.dtype == bool and 0.002 <= frac <= 0.9
        assert np.array_equal(s.boundary, boundary_of(s.mask, 5))
        assert s.target is not None
        changed = _changed(s.image, s.target)
        assert changed.any(), "the manipulation changed nothing"
        if kind == "sbi":
            # K = alpha >= 0.1: outside it a pixel moved < 10% of the way to the source (plus rounding)
            limit = 0.1 * np.abs(s.source.astype(np.float32) - s.target.astype(np.float32)) + 1.0
            diff = np.abs(s.image.astype(np.float32) - s.target.astype(np.float32))
            assert np.all(diff[~s.mask] <= limit[~s.mask])
            expect = s.alpha[:, :, None] * s.source + (1 - s.alpha[:, :, None]) * s.target
            assert np.abs(s.image - expect).max() <= 0.51
            assert s.meta["blend_ratio"] in (0.25, 0.5, 0.75, 1.0)
        elif kind == "composite":
            # K = combined alpha >= 0.1 (feathered edges): outside it a pixel moved < 10 % of the way
            diff = np.abs(s.image.astype(np.float32) - s.target.astype(np.float32)).max(axis=2)
            assert np.all(s.alpha[~s.mask] < 0.1)
            assert np.all(diff <= s.alpha * 255.0 + 1.0)
            assert np.array_equal(s.mask, s.alpha >= 0.1)
        else:
            assert not (changed & ~s.mask).any(), "pixels outside K changed"
        if kind in ("splice", "copymove", "enhance"):  # Eq. 1 holds exactly
            assert np.array_equal(s.image, np.where(s.mask[:, :, None], s.source, s.target))
        kinds_seen_objects.append(s.meta.get("regions"))
    assert kinds_seen_objects


def test_copymove_can_mark_the_source_region_too(pool):
    plain = make_sample("copymove", 2, pool, size=SIZE, config=NO_POST)
    both = make_sample("copymove", 2, pool, size=SIZE, config={**NO_POST, "copymove_mask_source": True})
    assert np.array_equal(plain.image, both.image)
    assert (both.mask >= plain.mask).all() and both.mask.sum() > plain.mask.sum()
    x0, y0, x1, y1 = plain.meta["copied_from_bbox"]
    extra = both.mask & ~plain.mask
    ys, xs = np.nonzero(extra)
    assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
    assert not _changed(both.image, both.target)[extra].any()  # the copied-from pixels are authentic


def test_authentic_is_unmodified(pool):
    s = make_sample("authentic", 3, pool, size=SIZE, config=NO_POST)
    assert not s.mask.any() and not s.boundary.any()
    assert np.array_equal(s.image, s.target)
    assert any(np.array_equal(s.image, pool.image(i)) for i in range(len(pool)))


@pytest.mark.parametrize("kind", FORGERY_KINDS)
def test_changes_lie_near_k_with_post(kind, pool):
    """With every post-processing step on (applied to M, T and S alike), changes spill out of K by at
    most a JPEG chroma block (16 px), the blur and the resampling footprint."""
    margin = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * 20 + 1, 2 * 20 + 1))
    for seed in range(3):
        s = make_sample(kind, seed, pool, size=SIZE, config=ALL_POST)
        assert [op["op"] for op in s.meta["post"]] == ["resize", "blur", "noise", "jpeg"]
        near = cv2.dilate(s.mask.astype(np.uint8), margin).astype(bool)
        diff = np.abs(s.image.astype(np.float32) - s.target.astype(np.float32)).max(axis=2)
        if kind == "sbi":
            limit = 0.1 * np.abs(s.source.astype(np.float32) - s.target.astype(np.float32)).max(axis=2) + 6
            assert np.all(diff[~near] <= limit[~near])
        else:
            assert diff[~near].max(initial=0) == 0
        assert diff[s.mask].mean() > diff[~s.mask].mean()


def test_post_chain_identical_on_identical_inputs(coffee):
    img = cv2.resize(coffee, (96, 96))
    rng = np.random.default_rng(5)
    cfg = PostConfig(jpeg_prob=1, resize_prob=1, blur_prob=1, noise_prob=1)
    (a, b, none), ops = apply_post(rng, [img, img.copy(), None], cfg)
    assert none is None and np.array_equal(a, b) and not np.array_equal(a, img)
    assert 60 <= ops[-1]["quality"] <= 95
    (same,), ops_off = apply_post(rng, [img], PostConfig(enabled=False))
    assert same is img and ops_off == []


def test_poisson_keeps_source_gradients_inside_k(pool):
    """Eq. 2: inside K (5 px from the seam; OpenCV erodes the guidance mask by 3 px) the Laplacian of M
    equals the source's up to rounding, and differs from the target's; outside K nothing changed."""
    checked = 0
    for seed in range(6):
        s = make_sample("poisson", seed, pool, size=SIZE, config={**NO_POST, "poisson_mixed_prob": 0.0})
        inner = cv2.erode(s.mask.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
        clipped = ((s.image == 0) | (s.image == 255)).any(axis=2).astype(np.uint8)
        ok = inner & ~cv2.dilate(clipped, np.ones((3, 3), np.uint8)).astype(bool)
        if ok.sum() < 50:
            continue

        def lap(a):
            return cv2.Laplacian(a.astype(np.float32), cv2.CV_32F)[ok]
        err_source = np.abs(lap(s.image) - lap(s.source)).mean()
        err_target = np.abs(lap(s.image) - lap(s.target)).mean()
        assert err_source < 1.5 and err_source < err_target / 3
        checked += 1
    assert checked >= 3


def test_removal_methods_and_exemplar(pool):
    methods = set()
    for seed in range(8):
        s = make_sample("removal", seed, pool, size=SIZE, config={**NO_POST, "removal_methods": {"exemplar": 1.0}})
        methods.add(s.meta["method"])
        assert s.source is None
        assert not (_changed(s.image, s.target) & ~s.mask).any()
    assert "exemplar" in methods
    for m in ("telea", "ns"):
        s = make_sample("removal", 1, pool, size=SIZE, config={**NO_POST, "removal_methods": {m: 1.0}})
        assert s.meta["method"] == m


def test_colour_transfer_matches_reference_statistics():
    rng = np.random.default_rng(1)
    src = np.clip(rng.normal((60, 90, 160), 12, (500, 3)), 0, 255).astype(np.uint8)
    ref = np.clip(rng.normal((170, 120, 60), 25, (800, 3)), 0, 255).astype(np.uint8)
    out = _colour_transfer(src, ref, "colour", 1.0)

    def lab(x):
        return cv2.cvtColor(x.reshape(-1, 1, 3).astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    lo, lr = lab(out), lab(ref)
    assert np.allclose(lo.mean(0), lr.mean(0), atol=1.5)
    assert np.allclose(lo.std(0), lr.std(0), rtol=0.2, atol=1.0)
    light = lab(_colour_transfer(src, ref, "light", 1.0))
    assert abs(light[:, 0].mean() - lr[:, 0].mean()) < 1.5
    assert np.allclose(light[:, 1:].mean(0), lab(src)[:, 1:].mean(0), atol=1.5)  # chroma untouched


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes(kind, pool, src_dir):
    a = make_sample(kind, 11, pool, size=SIZE)
    fresh = ImagePool(src_dir, size=SIZE)  # a new pool (empty cache) must not matter
    b = make_sample(kind, 11, fresh, size=SIZE)
    assert _digest(a) == _digest(b)
    if kind != "authentic":
        assert _digest(make_sample(kind, 12, pool, size=SIZE)) != _digest(a)


def _digests_in_worker(args) -> list[str]:
    src, kinds = args
    p = ImagePool(src, size=SIZE)
    return [_digest(make_sample(k, 100 + i, p, size=SIZE)) for i, k in enumerate(kinds)]


def test_same_bytes_across_processes(pool, src_dir):
    kinds = list(KINDS)
    here = [_digest(make_sample(k, 100 + i, pool, size=SIZE)) for i, k in enumerate(kinds)]
    with mp.get_context("spawn").Pool(2) as workers:
        there = workers.map(_digests_in_worker, [(str(src_dir), kinds)] * 2)
    assert there[0] == here and there[1] == here


def test_dataset_items_and_dataloader(pool):
    import torch

    ds = SyntheticDataset(pool, ["splice", "sbi", "authentic", "removal"], size=SIZE, length=6, seed=4)
    item = ds[1]
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.uint8
    assert item["mask"].shape == (1, SIZE, SIZE) and item["mask"].dtype == torch.float32
    assert item["boundary"].dtype == torch.float32 and item["target"].dtype == torch.uint8
    ref = make_sample(ds.kind_of(1), derive_seed(4, 1), pool, size=SIZE)
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), ref.image)
    assert np.array_equal(item["mask"][0].numpy() > 0.5, ref.mask)
    assert bool(item["has_source"]) == (ref.source is not None)
    assert ds.kinds[int(item["kind"])] == ref.meta["kind"]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork" if "fork" in mp.get_all_start_methods() else "spawn")
    batches = list(loader)
    stacked = torch.cat([b["image"] for b in batches])
    assert torch.equal(stacked, torch.stack([ds[i]["image"] for i in range(6)]))
    with pytest.raises(ValueError, match="unknown"):
        SyntheticDataset(pool, ["splice", "nope"], length=2)


def test_self_blend_on_a_face_hull(astronaut):
    """SBI for the face pipeline: a non-square photo, a convex hull of (made-up) landmarks."""
    img = np.ascontiguousarray(astronaut[20:220, 120:420])  # 200 x 300, the face is around x 80..200
    pts = np.array([[95, 60], [175, 55], [200, 110], [170, 175], [120, 180], [90, 120]], dtype=float)
    hull = face_hull_mask(pts, img.shape[:2])
    s = self_blend(img, hull, seed=4, config=NO_POST)
    assert s.image.shape == img.shape and s.mask.shape == hull.shape
    near = cv2.dilate(hull.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
    assert s.mask.any() and not (s.mask & ~near).any()  # K stays around the hull (deformation + blur)
    limit = 0.1 * np.abs(s.source.astype(np.float32) - s.target.astype(np.float32)) + 1.0
    diff = np.abs(s.image.astype(np.float32) - s.target.astype(np.float32))
    assert np.all(diff[~s.mask] <= limit[~s.mask])
    again = self_blend(img, hull, seed=4, config=NO_POST)
    assert np.array_equal(again.image, s.image) and np.array_equal(again.mask, s.mask)
    with pytest.raises(ValueError, match="empty"):
        self_blend(img, np.zeros(hull.shape, bool), seed=0)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown generator config"):
        GenConfig.from_dict({"regoin_area": (0.1, 0.2)})
    with pytest.raises(ValueError, match="post-processing"):
        GenConfig.from_dict({"post": {"jpg": 1}})
    assert GenConfig.from_dict({"region_area": [0.05, 0.1]}).region_area == (0.05, 0.1)


def test_shared_data_objects_are_used(shared_data):
    nat = shared_data / "natural"
    p = ImagePool([nat / "coco", nat / "bsds500"], size=SIZE)
    assert len(p) == 756  # 256 COCO + 500 BSDS photos; the 2696 BSDS label PNGs are not photos
    with_objects = [i for i in (0, 130, 300, 600) if len(p.objects(i))]
    assert len(with_objects) == 4
    cfg = {**NO_POST, "region_weights": {"object": 1.0}}
    used = 0
    for kind in FORGERY_KINDS:
        s = make_sample(kind, 5, p, size=SIZE, config=cfg)
        used += sum(r["source"] == "object" for r in s.meta["regions"])
        assert 0.002 <= s.mask.mean() <= 0.9
        if kind not in ("sbi", "composite"):
            assert not (_changed(s.image, s.target) & ~s.mask).any()
    assert used >= 4
