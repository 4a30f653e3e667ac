"""The JPEG trace: generated compression histories and the DCT stream of the network."""
import numpy as np
import pytest
import torch

from manipseg.generate import make_sample
from manipseg.generate.history import apply_history, draw_history, estimate_jpeg_quality_error, jpeg_on_grid
from manipseg.generate.config import HistoryConfig
from manipseg.generate.pool import ImagePool
from manipseg.generate.post import jpeg_roundtrip
from manipseg.io import save_png
from manipseg.models import dct as D


def _blocks_image(q: int = 10, seed: int = 0, odd_block=(5, 7), odd_value: float = 2.5):
    """A 256 x 256 gray image whose 8x8 blocks (grid at 0, 0) have AC coefficients on multiples of ``q`` in
    the first 15 zig-zag frequencies, except frequency (0, 1) of ``odd_block``, set to ``odd_value * q``."""
    rng = np.random.default_rng(seed)
    coeffs = np.zeros((32, 32, 8, 8))
    rows, cols = D.ZIGZAG_AC
    coeffs[:, :, rows, cols] = rng.integers(-2, 3, (32, 32, len(rows))) * q
    coeffs[odd_block[0], odd_block[1], 0, 1] = odd_value * q
    pix = D.DCT8.T @ coeffs @ D.DCT8 + 128.0  # inverse orthonormal DCT
    img = pix.transpose(0, 2, 1, 3).reshape(256, 256)
    assert img.min() > 0 and img.max() < 255
    gray = np.rint(img).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def test_known_answer_on_a_synthetic_double_compressed_block():
    img = _blocks_image()
    grid, steps = D.jpeg_history(img)
    assert grid == (0, 0)
    assert steps[0] == 10 and np.all(steps == 10)
    f = D.dct_features(img)
    assert f.shape == (D.CHANNELS, 32, 32) and f.dtype == np.float32
    assert np.all(f[D.N_FREQ] == 1.0)  # a JPEG history was found everywhere
    odd = f[0, 5, 7]
    rest = np.delete(f[0].ravel(), 5 * 32 + 7)
    assert odd == pytest.approx(0.5, abs=0.06)  # 2.5 q: half-way between two multiples
    assert rest.max() < 0.15 and f[1:D.N_FREQ].max() < 0.15  # pixel rounding: about 1 coefficient unit at most


def test_grid_offset_is_found_and_the_maps_stay_on_the_pixels():
    img = _blocks_image()
    shifted = np.ascontiguousarray(img[2:, 3:])  # crop: the block grid now starts at x = 5, y = 6
    assert D.estimate_grid(D.luminance(shifted)) == (5, 6)
    f = D.dct_features(shifted)
    assert f.shape == (D.CHANNELS, 32, 32)
    # the odd block covered pixels x 56-63, y 40-47 of the original, i.e. x 53-60, y 38-45 of the crop: the
    # stride-8 cells whose centre (8a + 4, 8b + 4) lies in it are marked
    hits = np.argwhere(f[0] > 0.4)
    assert len(hits) >= 1 and all(abs(8 * a + 4 - 41.5) <= 4 and abs(8 * b + 4 - 56.5) <= 4 for a, b in hits)


def test_fallback_without_jpeg_history_is_all_zero():
    from skimage import data

    raw = data.astronaut()  # never JPEG-compressed
    assert not D.dct_features(raw).any()
    assert not D.dct_features(jpeg_roundtrip(raw, 100)).any()  # steps of 1: nothing to measure against
    tiny = raw[:12, :10].copy()
    assert D.dct_features(tiny).shape == (D.CHANNELS, 2, 2)
    q75 = D.dct_features(jpeg_roundtrip(raw, 75))
    assert q75[D.N_FREQ].all() and q75[:D.N_FREQ].mean() < 0.06  # its own history: a good fit everywhere


def test_a_paste_with_another_history_stands_out():
    from skimage import data

    bg = jpeg_roundtrip(data.astronaut(), 75)
    src = jpeg_on_grid(np.ascontiguousarray(data.chelsea()[:300, :400]), 60, 3, 5)
    comp = bg.copy()
    comp[96:224, 152:280] = src[50:178, 50:178]
    f = D.dct_features(jpeg_roundtrip(comp, 90))  # saved again: aligned double compression of the background
    inside = f[:D.N_FREQ, 12:28, 19:35].mean()
    outside = np.concatenate([f[:D.N_FREQ, :10].ravel(), f[:D.N_FREQ, 30:].ravel()]).mean()
    assert inside > 2 * outside


def test_jpeg_on_grid_shifts_the_block_grid():
    from skimage import data

    img = data.camera()[:128, :128]
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    assert np.array_equal(jpeg_on_grid(rgb, 70, 0, 0), jpeg_roundtrip(rgb, 70))
    for dx, dy in ((3, 0), (0, 5), (7, 2)):
        out = jpeg_on_grid(rgb, 50, dx, dy)
        assert out.shape == rgb.shape
        assert D.estimate_grid(D.luminance(out)) == (dx, dy)


def test_history_is_deterministic_and_complete():
    rng = np.random.default_rng(3)
    cfg = HistoryConfig(jpeg_prob=1.0, blur_prob=1.0, noise_prob=1.0, sharpen_prob=1.0, resample_prob=1.0)
    h = draw_history(rng, cfg)
    assert set(h) == {"jpeg", "grid", "blur", "noise", "noise_seed", "sharpen", "resample"}
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[:64, :80])
    a, b = apply_history(img, h), apply_history(img, h)
    assert np.array_equal(a, b) and a.shape == img.shape and not np.array_equal(a, img)


@pytest.fixture(scope="module")
def photo_pool(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("pool")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        save_png(folder / f"{name}.png", getattr(data, name)())
    return ImagePool([folder], size=256)


def test_generated_composite_pastes_carry_another_compression_history(photo_pool):
    """The pasted objects of a composite do not fit the target's JPEG (quality and grid); its background does."""
    cfg = {"composite_edges": {"hard": 1.0}, "composite_harmonise_prob": 0.0,
           "history": {"jpeg_prob": 1.0, "jpeg_quality": [80, 80], "grid_shift_prob": 1.0, "blur_prob": 0.0,
                       "noise_prob": 0.0, "sharpen_prob": 0.0, "resample_prob": 0.0},
           "post": {"enabled": False}}
    checked = 0
    for seed in range(6):
        s = make_sample("composite", seed, photo_pool, 256, cfg)
        th = s.meta["target_history"]
        assert th["jpeg"] == 80 and all(o["history"]["jpeg"] == 80 for o in s.meta["objects"])
        inner = s.mask & ~np.pad(~s.mask, 4, constant_values=True)[4:-4, 4:-4]  # 4 px inside the objects
        outer = ~np.pad(s.mask, 6, constant_values=False)[6:-6, 6:-6]
        for dy in range(-6, 7, 3):
            for dx in range(-6, 7, 3):
                outer &= ~np.roll(s.mask, (dy, dx), axis=(0, 1))
        if inner.sum() < 200:
            continue
        grid = tuple(th["grid"])
        inside = estimate_jpeg_quality_error(s.image, inner, 80, grid)
        outside = estimate_jpeg_quality_error(s.image, outer, 80, grid)
        assert inside > 2 * outside, (seed, inside, outside)
        checked += 1
    assert checked >= 3


def test_dct_stream_network_starts_as_the_network_without_it_and_needs_its_input():
    from manipseg.models.nets import build_network, normalise

    torch.manual_seed(0)
    plain = build_network("compact", width=8, head_channels=8, boundary_channels=8).eval()
    with_dct = build_network("compact", width=8, head_channels=8, boundary_channels=8, dct_stream=True).eval()
    with_dct.load_state_dict(plain.state_dict(), strict=False)
    img = jpeg_roundtrip(_blocks_image(), 90)[:100, :90]
    x = normalise(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    d = torch.from_numpy(D.dct_batch(img[None]))
    assert d.shape == (1, D.CHANNELS, 13, 12)
    with torch.no_grad():
        assert torch.equal(with_dct(x, d)["seg"], plain(x)["seg"])
        with pytest.raises(ValueError, match="DCT stream"):
            with_dct(x)
    assert with_dct.arch_kwargs["dct_stream"] is True and "dct_stream" not in plain.arch_kwargs


def test_dct_detector_runs_tiled_and_untiled(tmp_path):
    from skimage import data

    from manipseg.models.gsr import GSRDetector
    from manipseg.models.nets import build_network
    from manipseg.models.weights import save_weights

    torch.manual_seed(1)
    net = build_network("compact", width=8, head_channels=8, boundary_channels=8, dct_stream=True)
    with torch.no_grad():
        net.dct_fuse[0].weight.normal_(0, 0.2)  # make the stream matter
    path = save_weights(tmp_path / "dct.safetensors", net, "compact", net.arch_kwargs, {"threshold": 0.5})
    img = jpeg_roundtrip(np.ascontiguousarray(data.astronaut()[:200, :232]), 80)
    whole = GSRDetector.from_weights(path, bf16=False).predict(img)
    tiled = GSRDetector.from_weights(path, bf16=False, tile=128, overlap=32, max_pixels=64 * 64).predict(img)
    assert whole.prob.shape == tiled.prob.shape == img.shape[:2]
    assert tiled.extras["tiles"] > 1
    assert np.isfinite(tiled.prob).all()
