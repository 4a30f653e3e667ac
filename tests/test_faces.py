"""Faces: SBI generation, MTE, AFM, metrics, detection/crops and the `manipseg faces` pipeline."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from manipseg.faces import sbi
from manipseg.faces.detect import Face, box_iou, crop_face, crop_to_image, get_detector
from manipseg.faces.metrics import binary_metrics, eer, roc_auc
from manipseg.faces.model import AdapGRNet, AttentionFusion, ChannelSelfAttention, FaceNetConfig, losses, mte, to_tensors


def template_landmarks(size: int = 128) -> np.ndarray:
    """A plausible 68-point face layout (dlib order) centred in a ``size`` crop."""
    c, r = size / 2, size * 0.3
    t = np.linspace(np.pi, 0, 17)
    jaw = np.stack([c + r * np.cos(t), c + 0.1 * size + r * 1.1 * np.sin(t)], 1)
    brows = np.stack([np.r_[np.linspace(c - r * 0.9, c - r * 0.15, 5), np.linspace(c + r * 0.15, c + r * 0.9, 5)],
                      np.full(10, c - r * 0.45)], 1)
    nose = np.stack([np.r_[np.full(4, c), np.linspace(c - r * 0.2, c + r * 0.2, 5)],
                     np.r_[np.linspace(c - r * 0.3, c + r * 0.15, 4), np.full(5, c + r * 0.3)]], 1)
    eye = lambda cx: np.stack([cx + r * 0.2 * np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)),  # noqa: E731
                               c - r * 0.2 + r * 0.08 * np.sin(np.linspace(0, 2 * np.pi, 6, endpoint=False))], 1)
    mouth = np.stack([c + r * 0.4 * np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                      c + r * 0.65 + r * 0.15 * np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], 1)
    lm = np.concatenate([jaw, brows, nose, eye(c - r * 0.45), eye(c + r * 0.45), mouth]).astype(np.float32)
    assert lm.shape == (68, 2)
    return lm


@pytest.fixture
def face_crop(astronaut):
    return cv2.resize(astronaut[20:220, 140:340], (128, 128), interpolation=cv2.INTER_AREA)


# -- SBI -----------------------------------------------------------------------------------------------
def test_blend_equals_formula_on_hand_made_arrays():
    s = np.array([[[200, 100, 0], [10, 20, 30]]], dtype=np.uint8)
    t = np.array([[[0, 100, 200], [30, 20, 10]]], dtype=np.uint8)
    m = np.array([[0.25, 1.0]], dtype=np.float32)
    out = sbi.blend(s, t, m)
    expected = np.array([[[50, 100, 150], [10, 20, 30]]], dtype=np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_allclose(sbi.blend(s, t, np.zeros((1, 2))), t.astype(np.float32))


def test_self_blend_mask_lies_on_the_face_and_output_follows_the_mask(face_crop):
    lm = template_landmarks()
    hull = sbi.face_hull_mask(lm, (128, 128))
    near = cv2.dilate(hull.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (31, 31))).astype(bool)
    ratios = set()
    for seed in range(12):
        out, mask, label = sbi.self_blend(face_crop, lm, np.random.default_rng(seed))
        assert label == 1 and out.dtype == np.uint8 and out.shape == face_crop.shape
        assert mask.dtype == np.float32 and mask.shape == (128, 128) and 0 <= mask.min() and mask.max() <= 1
        assert mask.max() > 0.2
        mass = mask.sum()
        assert mask[near].sum() / mass > 0.97, "blend mask leaks off the face"
        assert mask[hull].mean() > 0.3 * mask.max(), "blend mask does not cover the face"
        ratios.add(round(float(mask.max()), 2))
    assert ratios <= {0.25, 0.5, 0.75, 1.0} and len(ratios) >= 2


def test_blur_mask_erodes_or_dilates_but_keeps_a_peak_of_one():
    m = np.zeros((128, 128), np.float32)
    m[32:96, 32:96] = 1
    for seed in range(5):
        out = sbi.blur_mask(m, np.random.default_rng(seed))
        assert out.max() == pytest.approx(1.0, abs=1e-5)
        assert out[64, 64] > 0.9 and out[0, 0] < 0.05


def test_frequency_transform_share(face_crop):
    """p_frequency 0: no resampling or sharpening (JPEG off too: the output is the input); 1: always one."""
    off = sbi.SBIConfig(p_frequency=0.0, p_jpeg=0.0)
    on = sbi.SBIConfig(p_jpeg=0.0)
    for seed in range(4):
        np.testing.assert_array_equal(sbi.frequency_transform(face_crop, np.random.default_rng(seed), off), face_crop)
        assert not np.array_equal(sbi.frequency_transform(face_crop, np.random.default_rng(seed), on), face_crop)


def test_face_swap_changes_the_face_only(face_crop, coffee):
    lm = template_landmarks()
    other = cv2.resize(coffee[:300, :300], (128, 128))
    out, mask, label = sbi.face_swap(face_crop, lm, other, lm, np.random.default_rng(0))
    assert label == 1 and out.shape == face_crop.shape
    outside = mask < 1e-6
    np.testing.assert_array_equal(out[outside], face_crop[outside])
    assert np.abs(out.astype(int) - face_crop.astype(int))[mask > 0.9].mean() > 5


@pytest.mark.parametrize("make", ["sbi", "swap"])
def test_blend_mask_scales_with_the_face_not_with_the_photo(face_crop, make):
    """The same face blended in its 128-px crop and inside a 4x larger photo gets a mask of the same
    shape relative to the face (kernels, elastic warp and shift follow the face's crop side)."""
    lm, pad = template_landmarks(), 192
    photo = cv2.copyMakeBorder(face_crop, pad, pad, pad, pad, cv2.BORDER_REFLECT101)
    assert sbi.face_side(lm) == pytest.approx(1.6 * np.ptp(lm, axis=0).max())

    def masks(seed: int) -> tuple[np.ndarray, np.ndarray]:
        if make == "sbi":
            small = sbi.self_blend(face_crop, lm, np.random.default_rng(seed))[1]
            big = sbi.self_blend(photo, lm + pad, np.random.default_rng(seed))[1]
        else:
            small = sbi.face_swap(face_crop, lm, face_crop[:, ::-1], lm, np.random.default_rng(seed))[1]
            big = sbi.face_swap(photo, lm + pad, photo[:, ::-1], lm + pad, np.random.default_rng(seed))[1]
        return small, big[pad:-pad, pad:-pad]

    bands, cores = [], []
    for seed in range(16):  # the draws diverge between the two sizes (the elastic grid follows the image)
        small, big = masks(seed)
        bands.append([((m > 0.05) & (m < 0.95 * m.max())).sum() for m in (small, big)])
        cores.append([(m > 0.5 * m.max()).sum() for m in (small, big)])
    band, core = np.mean(bands, 0), np.mean(cores, 0)
    assert 0.67 < band[1] / band[0] < 1.5, f"soft band of the mask follows the photo size: {band}"
    assert 0.8 < core[1] / core[0] < 1.25, f"blended area follows the photo size: {core}"


# -- MTE and the network -------------------------------------------------------------------------------
def test_mte_residual_of_a_constant_image_is_zero():
    img = np.full((40, 50, 3), 137, np.uint8)
    np.testing.assert_allclose(mte(img), 0.0, atol=1e-6)


def test_mte_equals_he_guided_filter_written_out(coffee):
    """Cross-check against He et al.'s closed form with SciPy box filters (reflect-101 borders)."""
    from scipy.ndimage import uniform_filter

    img = coffee[:64, :64]
    ours = mte(img, radius=2, eps=1e-3)
    p = img.astype(np.float64) / 255

    def box(t):
        return uniform_filter(t, size=(5, 5, 1), mode="mirror")

    mean = box(p)
    a = (box(p * p) - mean ** 2) / (box(p * p) - mean ** 2 + 1e-3)
    b = mean - a * mean
    ref = np.abs(p - (box(a) * p + box(b)))
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert ours.max() > 0.01  # a real picture has traces


def test_afm_weights_sum_to_one_and_attention_is_row_stochastic():
    torch.manual_seed(0)
    afm = AttentionFusion(16)
    f1, f2 = torch.randn(4, 16, 5, 5), torch.randn(4, 16, 5, 5)
    out = afm(f1, f2)
    alpha = out["alpha"]
    assert alpha.shape == (4, 2)
    torch.testing.assert_close(alpha.sum(1), torch.ones(4))
    assert (alpha > 0).all() and (alpha < 1).all()
    att = ChannelSelfAttention().attention(f1)
    assert att.shape == (4, 16, 16)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 16))


def test_network_forward_losses_and_backward():
    cfg = FaceNetConfig(size=64, widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1))
    net = AdapGRNet(cfg)
    crops = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(4)]
    rgb, res = to_tensors(crops, cfg)
    out = net(rgb, res)
    assert out["logits"].shape == (4, 2) and out["loc"].shape == (4, 1, 4, 4)
    parts = losses(out, torch.tensor([0, 0, 1, 1]), torch.rand(4, 64, 64))
    assert torch.isfinite(parts["total"])
    parts["total"].backward()
    assert net.rgb.stem[0].weight.grad is not None and net.gr.stem[0].weight.grad is not None


# -- metrics ---------------------------------------------------------------------------------------------
def test_metrics_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # with ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    k = np.argmin(np.abs(fpr - (1 - tpr)))
    assert eer(y, s) == pytest.approx((fpr[k] + 1 - tpr[k]) / 2, abs=0.03)
    assert eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    m = binary_metrics([0, 1, 1], [0.2, 0.7, 0.4])
    assert m["accuracy"] == pytest.approx(2 / 3)


# -- detection, crops, CLI -------------------------------------------------------------------------------
def test_crop_and_back_and_iou():
    face = Face((40, 50, 100, 110), template_landmarks(60) + 40, 1.0)
    img = np.zeros((200, 200, 3), np.uint8)
    crop, lm, m = crop_face(img, face, size=64, margin=0.25)
    assert crop.shape == (64, 64, 3) and lm.shape == (68, 2)
    assert lm.min() >= 0 and lm.max() < 64
    back = crop_to_image(np.ones((64, 64), np.float32), m, img.shape[:2])
    x0, y0, x1, y1 = face.frame_box()
    assert back[int((y0 + y1) / 2), int((x0 + x1) / 2)] == pytest.approx(1.0)
    assert back[5, 195] == 0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_detector_finds_the_astronaut_face(astronaut):
    faces = get_detector("auto").detect(astronaut)
    assert len(faces) >= 1
    x0, y0, x1, y1 = faces[0].box
    assert 150 < (x0 + x1) / 2 < 260 and 60 < (y0 + y1) / 2 < 160  # Eileen Collins' face


@pytest.fixture
def tiny_weights(tmp_path):
    from manipseg.faces.train import ARCH
    from manipseg.models.weights import save_weights

    cfg = FaceNetConfig(size=64, widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1))
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, AdapGRNet(cfg), ARCH, cfg.to_dict(), {"margin": 0.3})
    return path


def test_faces_cli_no_face_corrupt_face_and_video(tmp_path, tiny_weights, astronaut):
    from manipseg.cli import main

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1)))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), astronaut[:, :, ::-1])
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for k in range(6):
        writer.write(np.ascontiguousarray(np.roll(cv2.resize(astronaut, (256, 256)), 2 * k, axis=1)[:, :, ::-1]))
    writer.release()
    out = tmp_path / "out"
    code = main(["faces", str(blank), str(corrupt), str(photo), str(video), "--out", str(out),
                 "--weights", str(tiny_weights), "--every", "2", "--no-progress"])
    assert code == 1  # the corrupt file is a failure, the rest succeed
    recs = {r["input"].rsplit("/", 1)[-1]: r for r in map(json.loads, (out / "faces.jsonl").read_text().splitlines())}
    assert recs["blank.png"]["result"] == "no face found" and recs["blank.png"]["faces"] == []
    assert "corrupt.jpg" in recs["corrupt.jpg"]["error"]
    face = recs["astronaut.jpg"]["faces"][0]
    assert 0 <= face["fake_prob"] <= 1 and (out / face["crop"]).is_file() and (out / face["heatmap"]).is_file()
    assert (out / "astronaut.faces.jpg").is_file()
    assert recs["astronaut.jpg"]["threshold"] == 0.5  # the tiny model's stored threshold
    assert recs["astronaut.jpg"]["result"] == ("fake face(s) found" if face["fake_prob"] >= 0.5 else "faces look real")
    vid = recs["clip.avi"]
    assert vid["frames_analysed"] == 3 and len(vid["faces"]) == 1 and vid["faces"][0]["frames"] == 3


# -- training data: extra faces, splits, post-processing, threshold ------------------------------------
def test_eer_threshold_balances_the_two_error_rates():
    from sklearn.metrics import roc_curve

    from manipseg.faces.metrics import eer_threshold

    assert eer_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.8
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    s = rng.normal(y * 1.0, 1.0)
    t = eer_threshold(y, s)
    fpr, fnr = (s[y == 0] >= t).mean(), (s[y == 1] < t).mean()
    rf, rt, _ = roc_curve(y, s)
    best = np.min(np.maximum(rf, 1 - rt))
    assert max(fpr, fnr) == pytest.approx(best, abs=1e-9)
    with pytest.raises(ValueError, match="both classes"):
        eer_threshold([1, 1], [0.2, 0.3])


def test_post_augment_resamples_blurs_and_compresses_like_its_config(face_crop):
    from manipseg.faces.train import TrainConfig, post_augment

    rng = np.random.default_rng(0)
    same = post_augment(face_crop, rng, TrainConfig(p_resample=0, p_blur=0, p_jpeg=0))
    assert np.array_equal(same, face_crop)
    out = post_augment(face_crop, rng, TrainConfig(p_resample=1, resample_scale=(0.5, 0.5), p_blur=0, p_jpeg=0))
    assert out.shape == face_crop.shape and out.dtype == np.uint8
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()  # noqa: E731
    assert lap(out) < 0.7 * lap(face_crop)  # half-resolution detail lost
    assert np.abs(out.astype(int) - face_crop.astype(int)).mean() < 12  # the same picture


def test_collect_faces_split_groups_and_concat(tmp_path, astronaut):
    from manipseg.faces.data import FaceSet, collect_faces, concat, split_groups

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), astronaut[:, :, ::-1])
    cv2.imwrite(str(folder / "b.png"), np.ascontiguousarray(astronaut[:, ::-1, ::-1]))
    cv2.imwrite(str(folder / "blank.png"), np.full((64, 64, 3), 128, np.uint8))
    fs = collect_faces([folder], tmp_path / "cache", size=64, min_side=40)
    assert len(fs) == 2 and fs.crops.shape == (2, 64, 64, 3)
    assert sorted(fs.files) == ["photos/a.png", "photos/b.png"] and len(np.unique(fs.identity)) == 2
    assert fs.lm(0) is None or (fs.lm(0).min() >= 0 and fs.lm(0).max() < 64)
    again = collect_faces([folder], tmp_path / "cache", size=64, min_side=40)  # from the cache
    assert np.array_equal(again.crops, fs.crops) and np.array_equal(again.identity, fs.identity)
    with pytest.raises(ValueError, match="no face of at least"):
        collect_faces([folder], tmp_path / "cache2", size=64, min_side=5000)
    ident = np.repeat(np.arange(20), 3)
    rest, chosen = split_groups(ident, 0.25, seed=3)
    assert len(np.unique(ident[chosen])) == 5 and not set(ident[rest]) & set(ident[chosen])
    assert len(rest) + len(chosen) == len(ident)
    both = concat(fs, FaceSet(fs.crops, fs.landmarks, np.array([0, 0]), fs.files))
    assert len(both) == 4 and len(np.unique(both.identity)) == 3


def test_jitter_moves_the_landmarks_with_the_face(face_crop):
    from manipseg.faces.train import TrainConfig, jitter

    lm = template_landmarks(128)
    cfg = TrainConfig(p_jitter=1.0, jitter=(10.0, 0.08, 0.04))
    img = np.zeros((128, 128, 3), np.uint8)
    for x, y in lm.round().astype(int):
        img[y, x] = 255
    out, moved = jitter(img, lm, np.random.default_rng(5), cfg)
    assert not np.allclose(moved, lm)
    ys, xs = np.nonzero(cv2.dilate(out[..., 0], np.ones((3, 3), np.uint8)) > 20)
    for x, y in moved:  # every moved landmark lands on a (resampled) landmark dot
        assert np.min(np.hypot(xs - x, ys - y)) < 1.5
    same, kept = jitter(face_crop, lm, np.random.default_rng(5), TrainConfig(p_jitter=0.0))
    assert same is face_crop and kept is lm


def test_faces_cli_threshold_override(tmp_path, tiny_weights, astronaut):
    from manipseg.cli import main

    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), astronaut[:, :, ::-1])
    assert main(["faces", str(photo), "--out", str(tmp_path / "o"), "--weights", str(tiny_weights),
                 "--threshold", "1.5"]) == 2
    for thr, verdict in [(1e-6, "fake face(s) found"), (0.999999, "faces look real")]:
        out = tmp_path / f"o{thr}"
        assert main(["faces", str(photo), "--out", str(out), "--weights", str(tiny_weights), "--threshold",
                     str(thr), "--no-progress"]) == 0
        rec = json.loads((out / "faces.jsonl").read_text())
        assert rec["threshold"] == pytest.approx(thr) and rec["result"] == verdict


def test_make_batch_blends_at_the_cached_size_then_shrinks_real_and_fake_alike(face_crop):
    """blend_size: SBIs made on 128-px crops, the network fed 64 px; without post-processing the real is the
    shrunk crop, and the shrunk blend mask lies on the (shrunk) face."""
    from manipseg.faces.data import FaceSet
    from manipseg.faces.train import TrainConfig, make_batch

    lm = template_landmarks(128)
    fs = FaceSet(np.stack([face_crop, face_crop[:, ::-1].copy()]), np.stack([lm, lm]), np.array([0, 1]),
                 np.array(["a.jpg", "b.jpg"]))
    cfg = TrainConfig(p_resample=0, p_blur=0, p_jpeg=0, p_jitter=0, p_colour=0)
    crops, labels, masks = make_batch(fs, np.array([0, 1]), np.random.default_rng(3), cfg, sbi.SBIConfig(), size=64)
    assert [c.shape for c in crops] == [(64, 64, 3)] * 4 and masks.shape == (4, 64, 64)
    assert labels.tolist() == [0, 0, 1, 1] and not masks[:2].any() and masks[2:].max() == pytest.approx(1.0)
    shrunk = [cv2.resize(c, (64, 64), interpolation=i) for c in fs.crops for i in (cv2.INTER_AREA, cv2.INTER_LINEAR)]
    shrunk += [np.ascontiguousarray(c[:, ::-1]) for c in shrunk]  # a random horizontal flip comes first
    for real, fake, mask in zip(crops[:2], crops[2:], masks[2:]):
        assert any(np.array_equal(real, c) for c in shrunk)
        assert fake.shape == real.shape and not np.array_equal(fake, real)
        hull = cv2.dilate(sbi.face_hull_mask(lm / 2, (64, 64)).astype(np.uint8), np.ones((9, 9), np.uint8))
        assert (mask > 0.5).sum() > 300 and hull[mask > 0.5].all()  # the shrunk mask lies on the face


def test_train_config_overrides(tmp_path):
    from manipseg.faces.train import TrainConfig, main

    path = tmp_path / "c.yaml"
    path.write_text("steps: 100\nmodel:\n  size: 128\n  widths: [8, 16, 32, 64]\n")
    cfg = TrainConfig.load(path, ["steps=40", "model.size=160", "jitter=[5, 0.1, 0.02]", "bf16=false"])
    assert cfg.steps == 40 and cfg.model == {"size": 160, "widths": [8, 16, 32, 64]}
    assert cfg.jitter == (5, 0.1, 0.02) and cfg.bf16 is False
    with pytest.raises(ValueError, match="must look like section.key=value"):
        TrainConfig.load(path, ["steps"])
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['stepz'\]"):
        TrainConfig.load(path, ["stepz=3"])
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['sise'\]"):
        TrainConfig.load(None, ["model.sise=3"])
    assert TrainConfig.load(None, ["sbi.p_frequency=0.5"]).sbi == {"p_frequency": 0.5}
    with pytest.raises(ValueError, match=r"unknown sbi option\(s\) \['p_freq'\]"):
        TrainConfig.load(None, ["sbi.p_freq=0.5"])
    with pytest.raises(SystemExit):  # the CLI reports it as a usage error, before any data is touched
        main(["--config", str(path), "--run-dir", str(tmp_path / "run"), "--set", "model.sise=3"])
    assert not (tmp_path / "run").exists()


def test_photo_blend_real_is_the_inference_crop_and_the_sbi_lies_on_the_face(tmp_path, astronaut):
    """photo_blend: the face is cut from its photo at the photo's resolution; without augmentation the real
    crop is bit-identical to crop_face on the photo (what `manipseg faces` sees), the SBI is made there and
    cropped by the same warp, and its mask lies on the face."""
    from manipseg.faces.data import FaceSet, photo_patch
    from manipseg.faces.detect import Face
    from manipseg.faces.train import TrainConfig, build_eval_set, make_batch, photo_pair

    lm = template_landmarks(200) + (150, 10)  # a 200-px face layout placed on the astronaut's face
    face = Face((150, 10, 350, 210), lm, 1.0)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), astronaut[:, :, ::-1])
    crop, crop_lm, m = crop_face(astronaut, face, 64, 0.3)
    fs = FaceSet(crop[None], crop_lm[None], np.array([0]), np.array(["photo.png"]), np.array([str(path)]), m[None])
    patch = photo_patch(fs, 0, 0.3)
    assert patch.image.shape[0] > 200 and np.allclose(np.ptp(patch.landmarks, 0), np.ptp(lm, 0), atol=1e-3)
    cfg = TrainConfig(p_resample=0, p_blur=0, p_jpeg=0, p_jitter=0, p_colour=0, photo_blend=1.0)
    real, fake, mask = photo_pair(patch, np.random.default_rng(1), cfg, sbi.SBIConfig(), 64, augment=False)
    np.testing.assert_array_equal(real, crop)
    assert not np.array_equal(fake, real) and mask.max() > 0.2
    hull = cv2.dilate(sbi.face_hull_mask(crop_lm, (64, 64)).astype(np.uint8), np.ones((9, 9), np.uint8))
    assert hull[mask > 0.5 * mask.max()].all()
    crops, labels, masks = make_batch(fs, np.array([0]), np.random.default_rng(2), cfg, sbi.SBIConfig(), 64,
                                      patches=[patch])
    mirrored = astronaut[:, ::-1].copy()  # the real: the crop, or the crop of the mirrored photo
    flipped_lm = lm.copy()
    flipped_lm[:, 0] = astronaut.shape[1] - 1 - lm[:, 0]
    crop_mirrored = crop_face(mirrored, Face(face.box, flipped_lm, 1.0), 64, 0.3)[0]
    assert labels.tolist() == [0, 1] and any(np.array_equal(crops[0], c) for c in (crop, crop_mirrored))
    assert masks[1].max() == pytest.approx(1.0) and not masks[0].any()
    ev, ev_labels = build_eval_set(fs, cfg=cfg, size=64, patches=[patch])
    assert np.array_equal(ev[0], crop) and ev_labels.tolist() == [0, 1]
    half = dataclasses.replace(cfg, photo_blend=0.5)  # one SBI of each kind: on the crop, on the photo
    ev, ev_labels = build_eval_set(fs, cfg=half, size=64, patches=[patch])
    assert ev_labels.tolist() == [0, 1, 1] and not np.array_equal(ev[1], ev[2])
    with pytest.raises(ValueError, match="no photo paths"):
        photo_patch(FaceSet(crop[None], crop_lm[None], np.array([0]), np.array(["photo.png"])), 0)


def test_crude_paste_mask_is_where_the_pixels_changed(astronaut, coffee):
    target, box = astronaut, (170.0, 70.0, 250.0, 160.0)
    fake, mask, label = sbi.crude_paste(target, box, coffee, (200.0, 100.0, 330.0, 260.0))
    assert label == 1 and fake.shape == target.shape and set(np.unique(mask)) == {0.0, 1.0}  # hard edge
    changed = np.any(fake != target, axis=2)
    assert not changed[mask == 0].any()               # nothing outside the ellipse moved
    assert changed[mask == 1].mean() > 0.95           # the pasted face replaced the one under it
    ys, xs = np.nonzero(mask)
    assert box[0] <= xs.min() and xs.max() < box[2] and box[1] <= ys.min() and ys.max() < box[3]
    soft = sbi.crude_paste(target, box, coffee, (200.0, 100.0, 330.0, 260.0), feather=3.0)[1]
    assert ((soft > 0.05) & (soft < 0.95)).sum() > 100  # a feathered edge
    with pytest.raises(ValueError, match="too small"):
        sbi.crude_paste(target, (10.0, 10.0, 12.0, 12.0), coffee, (0.0, 0.0, 50.0, 50.0))


def test_face_paste_parts_and_colour_match(astronaut, coffee):
    target, box, src_box = astronaut, (170.0, 70.0, 250.0, 160.0), (200.0, 100.0, 330.0, 260.0)
    full = sbi.face_paste(target, box, coffee, src_box)[1]
    upper = sbi.face_paste(target, box, coffee, src_box, part="upper")[1]
    lower = sbi.face_paste(target, box, coffee, src_box, part="lower")[1]
    ys = np.arange(target.shape[0])[:, None]
    cut_u, cut_l = round(70 + 0.55 * 90), round(70 + 0.45 * 90)
    assert upper.sum() < full.sum() and not (upper * (ys >= cut_u)).any() and (upper == full * (ys < cut_u)).all()
    assert lower.sum() < full.sum() and not (lower * (ys < cut_l)).any()
    plain, mask, _ = sbi.face_paste(target, box, coffee, src_box)
    matched = sbi.face_paste(target, box, coffee, src_box, colour_match=True)[0]
    inside = mask > 0.5
    lab = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2LAB)[inside].astype(np.float64).mean(0)  # noqa: E731
    # colour matching brings the pasted face's mean Lab colour to the face it covers
    assert np.abs(lab(matched) - lab(target)).sum() < 0.5 * np.abs(lab(plain) - lab(target)).sum()
    with pytest.raises(ValueError, match="part must be one of"):
        sbi.face_paste(target, box, coffee, src_box, part="nose")
    # crude_paste is face_paste's whole hard-edged ellipse without colour matching
    np.testing.assert_array_equal(sbi.crude_paste(target, box, coffee, src_box)[0], plain)


def test_paste_fakes_in_training_batches_come_from_another_person(astronaut):
    from manipseg.faces.data import FaceSet
    from manipseg.faces.train import TrainConfig, make_batch, paste_fake

    rng = np.random.default_rng(0)
    crops = np.stack([np.full((64, 64, 3), v, np.uint8) for v in (40, 200, 120)])
    crops[:, 20:44, 20:44] += 10  # a "face" in each
    fs = FaceSet(crops, np.full((3, 68, 2), np.nan, np.float32), np.array([0, 1, 0]), np.array(["a", "b", "c"]))
    cfg = TrainConfig(p_paste=1.0, paste_feather=(0.0, 0.0), paste_colour=0.0, paste_partial=0.0, paste_misalign=0.0)
    fake, mask = paste_fake(fs, 0, crops[0], None, rng, cfg)
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert np.all(fake[mask == 1] >= 190)  # the pasted face is person 1's (value 200/210), the only other identity
    assert np.array_equal(fake[mask == 0], crops[0][mask == 0])
    sbi_only, _, _ = make_batch(fs, np.array([0, 1]), np.random.default_rng(3), TrainConfig(), sbi.SBIConfig())
    again, _, _ = make_batch(fs, np.array([0, 1]), np.random.default_rng(3), TrainConfig(p_paste=0.0), sbi.SBIConfig())
    assert all(np.array_equal(a, b) for a, b in zip(sbi_only, again))  # no paste option: the old draws
    pasted, labels, masks = make_batch(fs, np.array([0, 2]), np.random.default_rng(3), cfg, sbi.SBIConfig())
    assert labels.tolist() == [0, 0, 1, 1] and masks[2:].max() == 1.0


def test_photo_level_paste_is_another_persons_face_pasted_at_the_photo_resolution(tmp_path, astronaut, coffee):
    """With photo_blend and p_paste, the paste is made on the photo patch (the other person's photo patch as
    source), then cropped: the crop's pixels change only where the (warped) mask is, and the fake's mask
    covers the face."""
    from manipseg.faces.data import FaceSet, photo_patch
    from manipseg.faces.detect import Face
    from manipseg.faces.train import TrainConfig, make_batch, photo_pair

    faces, crops, lms, mats, paths = [], [], [], [], []
    for k, (img, x0) in enumerate(((astronaut, 150), (coffee, 200))):
        lm = template_landmarks(180) + (x0, 30)
        path = tmp_path / f"p{k}.png"
        cv2.imwrite(str(path), img[:, :, ::-1])
        crop, crop_lm, m = crop_face(img, Face((x0, 30, x0 + 180, 210), lm, 1.0), 64, 0.3)
        crops.append(crop), lms.append(crop_lm), mats.append(m), paths.append(str(path))
    fs = FaceSet(np.stack(crops), np.stack(lms), np.array([0, 1]), np.array(["p0.png", "p1.png"]), np.array(paths),
                 np.stack(mats))
    patches = [photo_patch(fs, i, 0.3) for i in range(2)]
    cfg = TrainConfig(p_resample=0, p_blur=0, p_jpeg=0, p_jitter=0, p_colour=0, photo_blend=1.0, p_paste=1.0,
                      paste_feather=(0.0, 0.0), paste_colour=0.0, paste_partial=0.0, paste_misalign=0.0)
    real, fake, mask = photo_pair(patches[0], np.random.default_rng(1), cfg, sbi.SBIConfig(), 64, augment=False,
                                  paste_from=(fs, 0, patches))
    np.testing.assert_array_equal(real, crops[0])
    changed = np.abs(fake.astype(int) - real.astype(int)).max(2) > 0
    assert changed[mask > 0.99].mean() > 0.9 and not changed[mask == 0].any()
    assert 0.15 < (mask > 0.5).mean() < 0.8  # the face box's ellipse, not the whole crop
    plain = photo_pair(patches[0], np.random.default_rng(1), dataclasses.replace(cfg, p_paste=0.0),
                       sbi.SBIConfig(), 64, augment=False, paste_from=(fs, 0, patches))
    sbi_fake = photo_pair(patches[0], np.random.default_rng(1), dataclasses.replace(cfg, p_paste=0.0),
                          sbi.SBIConfig(), 64, augment=False)
    assert all(np.array_equal(a, b) for a, b in zip(plain, sbi_fake))  # no pastes: the old draws
    batch, labels, masks = make_batch(fs, np.array([0, 1]), np.random.default_rng(2), cfg, sbi.SBIConfig(), 64,
                                      patches=patches)
    assert labels.tolist() == [0, 0, 1, 1] and masks[2:].max() == pytest.approx(1.0)


def test_union_detector_keeps_every_dlib_face_and_adds_haar_boxes_with_landmarks(astronaut):
    pytest.importorskip("dlib")
    union = get_detector("union")
    dlib_faces = get_detector("dlib").detect(astronaut)
    faces = union.detect(astronaut)
    assert len(faces) >= len(dlib_faces) >= 1
    for f in dlib_faces:  # every dlib face is kept
        assert max(box_iou(f.box, g.box) for g in faces) > 0.99
    assert all(g.landmarks is not None and g.landmarks.shape == (68, 2) for g in faces)
    # plus every Haar box that overlaps no dlib face (IoU < 0.3), with landmarks fitted inside it
    extra = [h for h in get_detector("opencv").detect(astronaut) if all(box_iou(h.box, d.box) < 0.3 for d in dlib_faces)]
    assert len(faces) == len(dlib_faces) + len(extra)


def test_face_training_end_to_end_logs_picks_the_best_step_and_resumes_exactly(tmp_path, monkeypatch, astronaut, coffee):
    """faces.train.train() on a tiny face set (the data collection replaced by synthetic crops with landmarks):
    a log row per evaluation, best.safetensors at the best validation AUC, a face-classifier weights file the
    analyser opens; a run stopped at step 4 and resumed to 6 ends bit-identical to an uninterrupted run."""
    from manipseg.faces import train as T
    from manipseg.faces.data import FaceSet
    from manipseg.faces.infer import FaceAnalyzer
    from manipseg.header import read_info

    lm = template_landmarks(64)
    crops = []
    for img in (astronaut, coffee):
        for k in range(4):
            y, x = 20 * k, 30 * k
            crops.append(cv2.resize(np.ascontiguousarray(img[y:y + 300, x:x + 300]), (64, 64), interpolation=cv2.INTER_AREA))
    fs = FaceSet(np.stack(crops), np.repeat(lm[None], 8, 0).astype(np.float32), np.array([0, 0, 1, 1, 2, 2, 3, 3]),
                 np.array([f"f{i}.png" for i in range(8)]))
    train_set, val_set = fs.subset(np.arange(6)), fs.subset(np.arange(6, 8))
    monkeypatch.setattr(T, "split_train_val", lambda cfg, size, cache: (train_set, val_set, {"train_faces": 6}))
    cfg = T.TrainConfig(pairs_per_batch=2, steps=6, eval_every=2, bf16=False, threads=1, warmup=1, p_paste=0.5,
                        model={"size": 64, "widths": [8, 8, 8, 8], "blocks": [1, 1, 1, 1]})
    straight = tmp_path / "straight"
    best = T.train(cfg, straight)
    rows = (straight / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]
    col = rows[0].split(",").index("val_auc")
    aucs = [float(r.split(",")[col]) for r in rows[1:]]
    info = read_info(best)
    assert info["kind"] == "face-classifier" and info["training"]["step"] == 2 * (1 + int(np.argmax(aucs)))
    assert FaceAnalyzer(best).cfg.size == 64
    real_batch, calls = T.make_batch, []

    def crash_at_step_4(*args, **kwargs):  # the 5th batch is step 4's: the run dies after step 4's checkpoint
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_batch(*args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(T, "make_batch", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, run)
    monkeypatch.setattr(T, "make_batch", real_batch)
    resumed = T.train(cfg, run)  # continues from last.pt (step 4)
    assert [r.split(",")[0] for r in (run / "log.csv").read_text().splitlines()[1:]] == ["2", "4", "6"]
    from manipseg.models.weights import load_weights

    a, b = load_weights(run / "last.safetensors")[0], load_weights(straight / "last.safetensors")[0]
    assert resumed.is_file() and all(torch.equal(a[k], b[k]) for k in a)


# -- the photo cue: the default photo network's evidence in the face box ----------------------------------
def test_photo_cue_and_decision_known_answers():
    from manipseg.faces.infer import DECISION, FaceDecision, logit, photo_cue

    prob = np.zeros((100, 200), np.float32)
    prob[20:30, 40:50] = 0.8  # 100 hot pixels inside a 60 x 60 box: its top 1 % (36 pixels) are all hot
    assert photo_cue(prob, (30, 10, 90, 70)) == pytest.approx(0.8)
    assert photo_cue(prob, (100, 50, 160, 90)) == 0.0  # the hot square is outside this box
    assert photo_cue(prob, (-20, -20, 500, 500)) == pytest.approx(0.4)  # clipped: the whole map, 200 top pixels
    assert logit(0.5) == 0.0 and logit(0.9) == pytest.approx(np.log(9)) and logit(1.0) == pytest.approx(np.log(1e7))
    # the classifier alone: its threshold lands on 0.5
    alone = FaceDecision(0.9)
    assert not alone.uses_cue and alone.score(0.9) == pytest.approx(DECISION) and alone.score(0.5) < DECISION
    assert alone.score(0.5, cue=0.99) == alone.score(0.5)  # no cue weight: the cue is not used
    # with the cue: sigmoid(logit p + w logit c - b)
    d = FaceDecision(0.9, cue_weight=2.0, offset=1.0)
    assert d.score(0.5, 0.5) == pytest.approx(1 / (1 + np.exp(1.0)))
    assert d.score(0.9, 0.25) == pytest.approx(1 / (1 + np.exp(-(np.log(9) - 2 * np.log(3) - 1.0))))
    p = 1 / (1 + np.exp(-(1.0 - 2 * logit(0.3))))  # the classifier's probability that the cue 0.3 brings to 0.5
    assert d.score(p, 0.3) == pytest.approx(DECISION) and d.score(p, 0.31) > DECISION > d.score(p, 0.29)
    assert d.score(0.999, 0.0) < DECISION  # a cue of nothing outweighs a sure classifier at weight 2
    assert d.alone() == FaceDecision(0.9) and d.score(0.9) == pytest.approx(DECISION)  # no cue measured
    # a stricter classifier threshold moves the combined offset by the same log-odds
    s = d.with_threshold(0.99)
    assert s.threshold == 0.99 and s.offset == pytest.approx(1.0 + np.log(99) - np.log(9))
    assert s.score(0.99) == pytest.approx(DECISION)
    with pytest.raises(ValueError, match="between 0 and 1"):
        d.with_threshold(1.5)
    assert d.record() == {"threshold": 0.9, "flip": False, "cue_weight": 2.0, "offset": 1.0}


def test_face_calibration_offsets_and_choice_known_answers():
    from sklearn.metrics import roc_auc_score

    from manipseg.faces.calibrate import best, candidates, classifier_threshold, evidence, offset_at_rate
    from manipseg.faces.infer import logit

    scores = np.arange(100, dtype=np.float64)
    b = offset_at_rate(scores, 0.05)
    assert 94 < b < 94.001 and (scores >= b).sum() == 5  # the lowest such value: just above the 6th highest
    assert (scores >= offset_at_rate(scores, 0.0)).sum() == 0 and offset_at_rate(scores, 1.0) == float("inf")
    probs = np.linspace(0.0, 0.99, 100).astype(np.float32)
    t = classifier_threshold(probs, 0.05)
    assert (probs >= np.float32(t)).sum() == 5 and (probs >= np.float32(probs[-6])).sum() == 6
    # reals and two kinds of fakes: the crude ones only the cue sees, the blends only the classifier
    rng = np.random.default_rng(0)

    def ev(n, p, pf, c):
        return np.c_[rng.beta(*p, n), rng.beta(*pf, n), rng.beta(*c, n)]

    data = {"real": ev(200, (2, 5), (2, 5), (2, 8)), "crude": ev(150, (2, 5), (2, 5), (8, 2)),
            "sbi": ev(150, (5, 2), (6, 2), (2, 8))}
    pairs = candidates(data, 0.05, weights=(0.0, 0.5, 1.0, 2.0))
    assert len(pairs) == 8 and all(q["flagged"] <= 0.05 for q in pairs)
    for q in pairs:  # the AUCs are those of the evidence the decision adds up
        real, crude = (evidence(data[k], q["flip"], q["cue_weight"]) for k in ("real", "crude"))
        assert q["auc_crude"] == pytest.approx(roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[real, crude]))
        assert q["flagged"] == pytest.approx(np.mean(real >= q["offset"]))
    # the cue is needed for the crude fakes, the mirrored classifier separates the blends better: taken when
    # its gain is enough, otherwise the best without it
    pick = best(pairs, min_flip_gain=0.0)
    assert pick["cue_weight"] > 0 and pick["flip"]
    plain = best(pairs, min_flip_gain=1.0)
    assert not plain["flip"] and plain["cue_weight"] > 0
    assert plain == max((q for q in pairs if not q["flip"]), key=lambda q: q["auc_crude"] + q["auc_sbi"])
    no_cue = next(q for q in pairs if q["cue_weight"] == 0 and q["flip"])
    assert no_cue["auc_crude"] < 0.6 < 0.9 < pick["auc_crude"]
    assert np.allclose(evidence(data["real"], True, 1.0), logit(data["real"][:, 1]) + logit(data["real"][:, 2]))


def test_predict_crops_flip_judges_a_face_and_its_mirror_alike():
    from manipseg.faces.model import AdapGRNet, FaceNetConfig
    from manipseg.faces.train import predict_crops

    torch.manual_seed(0)
    net = AdapGRNet(FaceNetConfig(size=64)).eval()
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(crop[:, ::-1])
    p, h = predict_crops(net, [crop, mirror], bf16=False)
    assert abs(p[0] - p[1]) > 1e-4  # the network alone is not symmetric
    pf, hf = predict_crops(net, [crop, mirror], bf16=False, flip=True)
    assert pf[0] == pytest.approx(pf[1], abs=1e-5) and np.allclose(hf[0], hf[1][:, ::-1], atol=1e-5)
    # the average of the two views' logits: between the two probabilities
    assert min(p) - 1e-6 <= pf[0] <= max(p) + 1e-6


class _HotCorner:
    """A stand-in photo network: sure of itself in the image's top-left 120 x 120 pixels."""

    name = "hot-corner"
    runtime = "int8"

    def predict(self, image):
        from manipseg.contract import Prediction

        prob = np.zeros(image.shape[:2], np.float32)
        prob[:120, :120] = 0.9
        return Prediction(prob=prob, score=0.9)


def test_face_calibration_turns_the_cue_on_for_its_weights_only(tmp_path, tiny_weights, astronaut, caplog):
    from manipseg.faces.infer import FaceAnalyzer, calibration_path
    from manipseg.header import read_header

    cal = calibration_path(tiny_weights)
    sha = read_header(tiny_weights)["sha256"]

    def write(**kw):
        cal.write_text(json.dumps({"weights_sha256": sha, "threshold": 0.999999, "cue_weight": 10.0, "offset": 5.0,
                                   "flip": False, "cue_network": {"detector": "hot-corner", "precision": "int8"},
                                   **kw}))

    write()
    an = FaceAnalyzer(tiny_weights)
    assert an.decision.uses_cue and an.decision.cue_weight == 10.0 and an.threshold == pytest.approx(0.999999)
    an._photo_net = _HotCorner()
    face = an.detector.detect(astronaut)[0]
    moved = np.zeros_like(astronaut)  # the astronaut's face moved into the network's hot corner, then away
    x0, y0, x1, y1 = (int(v) for v in face.box)
    w, h = x1 - x0, y1 - y0
    moved[:h, :w] = astronaut[y0:y1, x0:x1]
    hot = an.analyse(moved)
    assert hot and hot[0].cue == pytest.approx(0.9) and hot[0].score >= 0.5  # the cue decides: fake
    rec = hot[0].record()
    assert rec["photo_cue"] == pytest.approx(0.9) and rec["score"] >= 0.5 and rec["fake_prob"] < 0.999999
    assert an.thresholds() == {"threshold": 0.999999, "flip": False, "cue_weight": 10.0, "offset": 5.0}
    cold = an.analyse(astronaut)
    assert cold[0].cue == 0.0 and cold[0].score < 0.5  # nothing from the cue: not fake
    # the cue turned off by the user: the calibrated classifier alone
    plain = FaceAnalyzer(tiny_weights, photo_cue=False)
    plain._photo_net = _HotCorner()
    assert not plain.decision.uses_cue and plain.threshold == pytest.approx(0.999999)
    assert plain.analyse(moved)[0].cue is None and plain.analyse(moved)[0].score < 0.5
    assert FaceAnalyzer(tiny_weights, calibrated=False).threshold == 0.5  # the file ignored: the weights' own
    # the mirror image averaged when the calibration says so
    write(flip=True)
    mirrored = FaceAnalyzer(tiny_weights, photo_cue=False)
    crop = mirrored.analyse(astronaut)[0].crop
    assert mirrored.decision.flip and mirrored.classify([crop])[0][0] == pytest.approx(
        mirrored.classify([np.ascontiguousarray(crop[:, ::-1])])[0][0], abs=1e-3)
    # the same file for other weights: the cue stays off, with a warning
    write(weights_sha256="0" * 64, threshold=0.3)
    with caplog.at_level("WARNING"):
        off = FaceAnalyzer(tiny_weights)
    assert not off.decision.uses_cue and off.threshold == 0.5 and "other face weights" in caplog.text
    # a network at another precision than the calibration's: the cue turns itself off, the calibrated
    # classifier threshold (same weights) stays
    write(threshold=0.3, cue_network={"detector": "gsr-vgg16", "precision": "fp32"})
    other = FaceAnalyzer(tiny_weights)
    other._photo_net = _HotCorner()
    assert other.threshold == pytest.approx(0.3) and other.decision.uses_cue
    assert other.analyse(moved)[0].cue is None and not other.decision.uses_cue and other.threshold == pytest.approx(0.3)
    for text in ("{not json", json.dumps({"weights_sha256": sha, "threshold": 0.3, "cue_threshold": 0.5})):
        cal.write_text(text)  # not JSON, or a file of the first version (max of two thresholds)
        with pytest.raises(ValueError, match="not a face calibration file"):
            FaceAnalyzer(tiny_weights)
