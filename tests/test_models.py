"""Networks, weights I/O, device helpers and the tiled GSR detector (small images, random weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from manipseg import registry
from manipseg.contract import ContractError
from manipseg.device import DeviceError, autocast, bf16_faster, bf16_supported, resolve_device
import manipseg.paths

from manipseg.models.gsr import GSRCompactDetector, GSRDetector, GSRVGG16Detector
from manipseg.models.tiling import _ramp, image_score, tile_layout
from manipseg.models.nets import (SRMStemConv, SegNet, _srm_kernels, build_network, fold_batchnorm, guided_residual,
                                  normalise, normalise_image)
from manipseg.models.weights import (WeightsError, load_weights, network_from_weights, read_info, save_weights,
                                     ship)

SMALL = {"compact": dict(width=8, head_channels=16, boundary_channels=16),
         "gsr-vgg16": dict(aspp_width=64, head_channels=16, boundary_channels=16)}


def _net(arch: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(arch, **{**SMALL[arch], **kw})


# -- networks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["compact", "gsr-vgg16"])
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (71, 9)])
def test_output_shapes_any_size(arch, size):
    net = _net(arch).eval()
    x = normalise(torch.rand(2, 3, *size))
    with torch.no_grad():
        out = net(x)
    assert out["seg"].shape == (2, 2, *size)
    assert out["boundary"].shape == (2, 2, *size)
    assert torch.isfinite(out["seg"]).all()


@pytest.mark.parametrize(("arch", "boundary_branch", "gr"), [
    ("compact", True, False), ("compact", False, False), ("compact", True, True), ("compact", False, True),
    ("gsr-vgg16", True, True), ("gsr-vgg16", False, False),  # VGG is slow to set up: both options, 2 runs
])
def test_gradients_reach_every_parameter(arch, boundary_branch, gr):
    net = _net(arch, boundary_branch=boundary_branch, guided_residual=gr).train()
    net = net.to(memory_format=torch.channels_last)
    x = normalise(torch.rand(2, 3, 32, 40)).contiguous(memory_format=torch.channels_last)
    target = torch.zeros(2, 32, 40, dtype=torch.long)
    target[:, 8:24, 10:30] = 1
    out = net(x)
    loss = torch.nn.functional.cross_entropy(out["seg"], target)
    if boundary_branch:
        assert out["boundary"] is not None
        loss = loss + torch.nn.functional.cross_entropy(out["boundary"], target)
    else:
        assert out["boundary"] is None
        assert not any(n.startswith("heads.side") for n, _ in net.named_parameters())
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad
    assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0
    if gr:
        assert any("fusion" in n for n, _ in net.named_parameters())


def test_boundary_features_feed_the_segmentation_head():
    """The segmentation loss alone must train the boundary branch's side convs (the GSR-Net coupling)."""
    net = _net("compact").train()
    out = net(normalise(torch.rand(2, 3, 32, 32)))
    out["seg"][:, 1].mean().backward()
    side_grads = [p.grad for n, p in net.named_parameters() if n.startswith("heads.side")]
    assert side_grads and all(g is not None and g.abs().sum() > 0 for g in side_grads)
    assert net.heads.boundary_cls.weight.grad is None  # the boundary classifier itself is not on that path


@pytest.mark.parametrize("arch", ["compact", "gsr-vgg16"])
def test_inference_copy_matches_eval_model(arch):
    """fold_batchnorm (BN folded into convs, fused conv+ReLU) gives the eval model's outputs."""
    net = _net(arch, guided_residual=True).to(memory_format=torch.channels_last)
    net.train()
    net(normalise(torch.rand(4, 3, 48, 48)))  # non-trivial running statistics
    net.eval()
    folded = fold_batchnorm(net)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 1  # only after the side sum
    x = normalise(torch.rand(1, 3, 40, 56)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        a, b = net(x), folded(x)
    torch.testing.assert_close(b["seg"], a["seg"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b["boundary"], a["boundary"], atol=1e-4, rtol=1e-4)
    assert net.training is False and any(p.requires_grad for p in net.parameters())  # the original is untouched


def test_srm_stem_equals_rgb_plus_srm_convolution():
    """The composed 7x7 stem kernel equals conv3x3 over [RGB, SRM residuals] away from the border."""
    torch.manual_seed(0)
    stem = SRMStemConv(4)
    x = torch.randn(1, 3, 30, 30)
    srm = torch.nn.functional.conv2d(x, _srm_kernels().repeat(3, 1, 1).unsqueeze(1), padding=2, groups=3)
    weight = torch.cat([stem.w_rgb, stem.w_srm.reshape(4, 9, 3, 3)], dim=1)  # SRM channel 3c+k = kernel k on colour c
    ref = torch.nn.functional.conv2d(torch.cat([x, srm], dim=1), weight, padding=1)
    with torch.no_grad():
        out = stem(x)
    torch.testing.assert_close(out[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3], atol=1e-4, rtol=1e-4)
    # the SRM part ignores smooth content: a linear ramp has no SRM response, only the RGB part sees it
    ramp = torch.linspace(0, 1, 30).view(1, 1, 1, 30).expand(1, 3, 30, 30)
    with torch.no_grad():
        stem.w_rgb.zero_()
        assert float(stem(ramp)[..., 3:-3, 3:-3].abs().max()) < 1e-5


def test_build_network_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown network architecture"):
        build_network("resnet")
    with pytest.raises(ValueError, match="bad options"):
        build_network("compact", nonsense=3)


def test_normalise_zero_mean_unit_std_per_image_channel():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 20, 30, generator=gen) * torch.tensor([1.0, 50.0, 255.0]).view(1, 3, 1, 1) + 7.0
    y = normalise(x)
    assert torch.allclose(y.mean(dim=(2, 3)), torch.zeros(3, 3), atol=1e-5)
    assert torch.allclose(y.std(dim=(2, 3), unbiased=False), torch.ones(3, 3), atol=1e-4)
    assert torch.allclose(normalise(x * 3.0 + 2.0), y, atol=1e-4)  # scale- and offset-free
    assert torch.equal(normalise(torch.full((1, 3, 8, 8), 5.0)), torch.zeros(1, 3, 8, 8))


def test_guided_residual_of_constant_image_is_zero():
    r = guided_residual(torch.full((2, 3, 24, 24), 0.7))
    assert r.shape == (2, 3, 24, 24)
    assert float(r.abs().max()) < 1e-6


def test_guided_residual_matches_reference_guided_filter():
    """Cross-check against He et al.'s guided filter written with scipy box filters (self-guided, per channel)."""
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 40, 50)).astype(np.float64)
    radius, eps = 2, 0.1
    k = 2 * radius + 1
    ref = []
    for p in img:
        box = lambda a: uniform_filter(a, size=k, mode="mirror")  # noqa: E731  (torch 'reflect' == scipy 'mirror')
        mean, var = box(p), box(p * p) - box(p) ** 2
        a = var / (var + eps)
        b = mean - a * mean
        ref.append(np.abs(p - (box(a) * p + box(b))))
    out = guided_residual(torch.from_numpy(img).float()[None], radius=radius, eps=eps)[0].numpy()
    np.testing.assert_allclose(out, np.stack(ref), atol=1e-4)
    assert out.mean() > 0.05  # noise is mostly residual


# -- device ---------------------------------------------------------------------------------------------
def test_device_helpers():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="invalid device"):
        resolve_device("warp-drive")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no usable CUDA"):
            resolve_device("cuda:0")
    x = torch.rand(1, 3, 8, 8)
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast("cpu", enabled=False) as active:
        assert active is False and conv(x).dtype == torch.float32
    with autocast("cpu", enabled=True) as active:
        assert active == (bf16_supported("cpu") and bf16_faster("cpu"))
        assert conv(x).dtype == (torch.bfloat16 if active else torch.float32)


def test_bf16_is_chosen_by_measurement_and_cached(tmp_path, monkeypatch):
    """Not by a CPU flag: a CPU whose bf16 is slower than fp32 runs fp32; the answer is cached per CPU."""
    import json

    from manipseg import device as dev

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if not bf16_supported("cpu"):  # nothing to choose: never bf16, and nothing is measured
        monkeypatch.setattr(dev, "measure_bf16_speedup", lambda: pytest.fail("measured without bf16 support"))
        dev.bf16_faster.cache_clear()
        assert dev.bf16_faster("cpu") is False
        dev.bf16_faster.cache_clear()
        return
    monkeypatch.delenv("MANIPSEG_BF16", raising=False)
    for speedup, expect in ((0.7, False), (3.0, True)):
        dev.bf16_faster.cache_clear()
        (tmp_path / "manipseg").mkdir(exist_ok=True)
        (tmp_path / "manipseg" / "bf16.json").unlink(missing_ok=True)
        calls = []
        monkeypatch.setattr(dev, "measure_bf16_speedup", lambda: calls.append(1) or speedup)
        assert dev.bf16_faster("cpu") is expect and calls == [1]
        cached = json.loads((tmp_path / "manipseg" / "bf16.json").read_text())
        assert [v["speedup"] for v in cached.values()] == [speedup]
        dev.bf16_faster.cache_clear()
        assert dev.bf16_faster("cpu") is expect and calls == [1]  # from the cache, not measured again
        with autocast("cpu", enabled=True) as active:
            assert active is expect
    monkeypatch.setenv("MANIPSEG_BF16", "0")
    dev.bf16_faster.cache_clear()
    assert dev.bf16_faster("cpu") is False
    dev.bf16_faster.cache_clear()


# -- weights --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["compact", pytest.param("gsr-vgg16", marks=pytest.mark.slow)])
def test_weights_round_trip(tmp_path, arch):
    net = _net(arch, guided_residual=True)
    net.train()
    net(normalise(torch.rand(2, 3, 24, 24)))  # move BN running statistics away from their defaults
    net.eval()
    path = save_weights(tmp_path / "w.safetensors", net, net.arch, net.arch_kwargs, {"threshold": 0.35, "steps": 7})
    state, info = load_weights(path)
    assert info["arch"] == arch and info["threshold"] == 0.35 and info["training"] == {"steps": 7}
    assert info["arch_kwargs"]["guided_residual"] is True
    net2, _ = network_from_weights(path)
    x = normalise(torch.rand(1, 3, 24, 40))
    with torch.no_grad():
        a, b = net(x), net2(x)
    assert torch.equal(a["seg"], b["seg"]) and torch.equal(a["boundary"], b["boundary"])
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle


def test_corrupted_weights_give_clear_errors(tmp_path):
    net = _net("compact")
    path = save_weights(tmp_path / "w.safetensors", net, net.arch, net.arch_kwargs)
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.safetensors"
    data[-100] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_weights(flipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(WeightsError, match="corrupted or truncated"):
        load_weights(truncated)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightsError, match="without manipseg metadata"):
        load_weights(foreign)


def test_shipping_adds_the_card_and_keeps_the_tensors(tmp_path):
    net = _net("compact")
    run = save_weights(tmp_path / "run.safetensors", net, net.arch, net.arch_kwargs, {"threshold": 0.3, "steps": 9})
    shipped = ship(run, tmp_path / "pkg" / "m.safetensors", "trained 9 steps on nothing")
    state_run, info_run = load_weights(run)
    state, info = load_weights(shipped)  # checksum verified
    assert info["training"] == {"steps": 9, "card": "trained 9 steps on nothing"} and info["threshold"] == 0.3
    assert state.keys() == state_run.keys() and all(torch.equal(state[k], state_run[k]) for k in state)
    assert read_info(shipped)["training"]["card"] == "trained 9 steps on nothing"
    half = ship(run, tmp_path / "pkg" / "h.safetensors", "half", half=True)
    state_half, info_half = load_weights(half)  # its own checksum, of the float16 tensors
    assert info_half["stored_dtype"] == "float16" and half.stat().st_size < 0.6 * shipped.stat().st_size
    assert all(v.dtype == (torch.float16 if state_run[k].is_floating_point() else state_run[k].dtype)
               for k, v in state_half.items())
    net_half, _ = network_from_weights(half)  # loaded back into a float32 network
    net_full, _ = network_from_weights(shipped)
    x = normalise(torch.rand(1, 3, 40, 48))
    with torch.no_grad():
        a, b = net_full(x)["seg"], net_half(x)["seg"]
    assert next(net_half.parameters()).dtype == torch.float32
    assert torch.allclose(a, b, rtol=1e-2, atol=5e-2) and not torch.equal(a, b)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(WeightsError, match="junk.safetensors: cannot read"):
        read_info(tmp_path / "junk.safetensors")


# -- detector -------------------------------------------------------------------------------------------
def test_image_score_and_tiles():
    prob = np.zeros((100, 100), np.float32)
    assert image_score(prob) == 0.0
    prob[:10, :10] = 0.9  # exactly 1 % of the pixels
    assert image_score(prob) == pytest.approx(0.9, abs=1e-6)
    prob[50, 50] = 1.0  # one isolated pixel moves the score by less than 1 %
    assert image_score(prob) < 0.91
    rng = np.random.default_rng(0)
    for _ in range(300):
        size, tile = int(rng.integers(65, 6000)), int(rng.choice([64, 128, 1024, 2048]))
        overlap = int(rng.integers(0, tile // 2))
        starts, length = tile_layout(size, tile, overlap)
        assert starts[0] == 0 and starts[-1] + length >= size and length <= tile
        assert all(s % 8 == 0 for s in starts)
        assert all(b - a <= length - overlap for a, b in zip(starts, starts[1:]))
        total = np.zeros(size)
        for s in starts:
            e = min(s + length, size)
            total[s:e] += _ramp(e - s, overlap, s > 0, e < size)
        assert total.min() > 0
    assert tile_layout(4000, 1024, 128) == ([0, 768, 1544, 2312, 3088], 912)  # 5 even tiles, not 4 + a sliver


class _LocalNet(torch.nn.Module):
    """A network with a 3x3 receptive field: tiled inference must reproduce it exactly."""

    arch = "local"

    def __init__(self) -> None:
        super().__init__()
        self.seg, self.bnd = torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Conv2d(3, 2, 1)

    def head_logits(self, x):  # what GSRDetector calls: logits at the heads' resolution (here the input's)
        return self.seg(x), self.bnd(x), tuple(x.shape[-2:])

    to_input = staticmethod(SegNet.to_input)


@pytest.mark.parametrize("size", [(300, 411), (129, 500), (511, 512)])
def test_tiling_and_blending_are_exact_for_a_local_network(astronaut, size):
    torch.manual_seed(0)
    net = _LocalNet()
    img = astronaut[: size[0], : size[1]]
    whole = GSRDetector(model=net, bf16=False, min_side=0).predict(img)
    tiled = GSRDetector(model=net, bf16=False, min_side=0, tile=128, overlap=32).predict(img)
    assert tiled.extras["tiles"] >= 10
    np.testing.assert_allclose(tiled.prob, whole.prob, atol=1e-6)
    np.testing.assert_allclose(tiled.extras["boundary"], whole.extras["boundary"], atol=1e-6)


def test_tiled_inference_matches_untiled(astronaut):
    net = _net("compact").eval()
    img = astronaut[:300, :411]
    whole = GSRDetector(model=net, bf16=False, min_side=0).predict(img)
    tiled = GSRDetector(model=net, bf16=False, min_side=0, tile=256, overlap=120).predict(img)
    assert whole.extras["tiles"] == 1 and tiled.extras["tiles"] == 6
    diff = np.abs(whole.prob - tiled.prob)
    assert whole.prob.std() > 0.05  # the maps are not trivially flat
    assert diff.mean() < 0.005 and np.percentile(diff, 99) < 0.05, (diff.mean(), np.percentile(diff, 99))
    assert np.abs(whole.extras["boundary"] - tiled.extras["boundary"]).mean() < 0.005


def test_detector_probability_is_the_softmax_of_the_network_output(astronaut):
    """Inference up-samples one logit difference and takes its sigmoid: the same as forward()'s softmax."""
    torch.manual_seed(3)
    net = _net("compact").eval()
    img = astronaut[:101, :157]  # not a multiple of the stride: padding and crop
    det = GSRDetector(model=net, bf16=False, min_side=0)
    pred = det.predict(img)
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        out = det.model(normalise(x))
    np.testing.assert_allclose(pred.prob, torch.softmax(out["seg"], 1)[0, 1].numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.extras["boundary"], torch.softmax(out["boundary"], 1)[0, 1].numpy(), atol=1e-5)
    lean = GSRDetector(model=net, bf16=False, min_side=0, boundary=False).predict(img)
    assert "boundary" not in lean.extras
    np.testing.assert_array_equal(lean.prob, pred.prob)


def test_normalise_image_equals_normalise(astronaut):
    x = torch.from_numpy(astronaut.copy()).permute(2, 0, 1)[None]
    fast = normalise_image(astronaut)
    assert fast.shape == x.shape and fast.dtype == torch.float32
    torch.testing.assert_close(fast, normalise(x), atol=1e-5, rtol=1e-5)
    flat = np.full((20, 30, 3), 77, np.uint8)  # a constant channel maps to zeros, as in normalise
    assert torch.count_nonzero(normalise_image(flat)) == 0


def test_detector_contract(tmp_path, astronaut, monkeypatch):
    net = _net("compact")
    path = save_weights(tmp_path / "m.safetensors", net, net.arch, net.arch_kwargs, {"threshold": 0.42})
    det = registry.load_detector(str(path))
    assert isinstance(det, GSRCompactDetector) and det.threshold == pytest.approx(0.42)
    img = astronaut[:97, :131]
    pred = det.predict(img)
    assert pred.prob.shape == (97, 131) and pred.prob.dtype == np.float32
    assert 0.0 <= pred.prob.min() and pred.prob.max() <= 1.0
    assert pred.score == pytest.approx(image_score(pred.prob))
    assert pred.extras["boundary"].shape == (97, 131)
    np.testing.assert_array_equal(det.predict(img).prob, pred.prob)  # deterministic (eval mode)
    assert det.predict(astronaut[:8, :9]).prob.shape == (8, 9)  # the contract's smallest images
    with pytest.raises(ContractError):
        det.predict(img.astype(np.float32))
    with pytest.raises(ContractError, match="expects 'gsr-vgg16'"):
        GSRVGG16Detector.from_pretrained(path)
    monkeypatch.setattr(manipseg.paths, "WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(ContractError, match="no trained weights are bundled"):
        registry.create("gsr-compact")
    with pytest.raises(ContractError, match="needs trained weights"):
        GSRCompactDetector()


# -- packaged backbones (optional extra) ----------------------------------------------------------------
def test_hed_backbone_detects_edges(astronaut):
    """Loaded HED weights, run as HED (VGG convs + side outputs + fusion), must find the image's edges."""
    pytest.importorskip("h5py")
    from manipseg.models.pretrained import PretrainedError, load_packaged_vgg16, packaged_file

    try:
        path = packaged_file("hed")
    except PretrainedError as exc:
        pytest.skip(str(exc))
    import h5py
    import torch.nn.functional as F

    net = build_network("gsr-vgg16", **SMALL["gsr-vgg16"])
    report = load_packaged_vgg16(net, "hed")
    assert len(report["loaded"]) == 26 and all(".bn." in k for k in report["not_in_source"])
    with pytest.raises(Exception, match="only the 'gsr-vgg16'"):
        load_packaged_vgg16(_net("compact"), "hed")
    img = astronaut[100:228, 150:278].astype(np.float32)
    x = torch.from_numpy(img - np.array([122.67892, 116.66877, 104.00699], np.float32)).permute(2, 0, 1)[None]
    with h5py.File(path, "r") as f:
        dsn = [(torch.from_numpy(f[f"dsn{i}/vars/0"][()]).permute(3, 2, 0, 1), torch.from_numpy(f[f"dsn{i}/vars/1"][()]))
               for i in range(1, 6)]
        fuse = (torch.from_numpy(f["fuse/vars/0"][()]).permute(3, 2, 0, 1), torch.from_numpy(f["fuse/vars/1"][()]))
    sides, h = [], x
    blocks = [["conv1_1", "conv1_2"], ["conv2_1", "conv2_2"], ["conv3_1", "conv3_2", "conv3_3"],
              ["conv4_1", "conv4_2", "conv4_3"], ["conv5_1", "conv5_2", "conv5_3"]]
    with torch.no_grad():
        for i, names in enumerate(blocks):
            if i:
                h = F.max_pool2d(h, 2, 2)
            for n in names:
                h = F.relu(F.conv2d(h, net.vgg[n].conv.weight, net.vgg[n].conv.bias, padding=1))
            sides.append(F.interpolate(F.conv2d(h, *dsn[i]), size=(128, 128), mode="bilinear"))
        edges = torch.sigmoid(F.conv2d(torch.cat(sides, 1), *fuse))[0, 0].numpy()
    import cv2

    gray = cv2.cvtColor(astronaut[100:228, 150:278], cv2.COLOR_RGB2GRAY).astype(np.float32)
    sobel = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    assert np.corrcoef(edges.ravel(), sobel.ravel())[0, 1] > 0.4


def test_craft_backbone_loads_with_batch_norm():
    from manipseg.models.pretrained import PretrainedError, load_packaged_vgg16

    net = build_network("gsr-vgg16", **SMALL["gsr-vgg16"])
    try:
        report = load_packaged_vgg16(net, "craft")
    except PretrainedError as exc:
        pytest.skip(str(exc))
    assert len(report["loaded"]) == 12 * 7  # conv1_1..conv5_2: conv weight, bias and 5 batch-norm tensors
    assert all(k.startswith("conv5_3.") for k in report["not_in_source"])
    assert not torch.allclose(net.vgg["conv3_1"].bn.running_var, torch.ones(256))
    via_option = build_network("gsr-vgg16", init="craft", **SMALL["gsr-vgg16"])
    assert torch.equal(via_option.vgg["conv2_1"].conv.weight, net.vgg["conv2_1"].conv.weight)
    assert "init" not in via_option.arch_kwargs and via_option.init_report["loaded"] == report["loaded"]


def test_working_size_resizes_only_photos_outside_it_and_returns_maps_at_their_size(tmp_path, astronaut):
    """min_side / max_side: a photo whose shorter side is below min_side is analysed up-sampled (bicubic) and its
    maps brought back (area), one above max_side down-sampled (area) and brought back (linear) — the same as doing
    it by hand — while a photo within the bounds is analysed at its own pixels; 0 turns a bound off."""
    import cv2

    net = _net("compact")
    path = save_weights(tmp_path / "m.safetensors", net, net.arch, net.arch_kwargs)
    plain = GSRCompactDetector(weights=path, runtime="torch", bf16=False, min_side=0, max_side=0)
    assert plain.min_side is None and plain.max_side is None
    det = GSRCompactDetector(weights=path, runtime="torch", bf16=False, min_side=96, max_side=200)
    small = np.ascontiguousarray(astronaut[100:164, 120:216])  # 64 x 96: up-sampled by 1.5
    pred = det.predict(small)
    assert pred.prob.shape == (64, 96) and pred.extras["working_scale"] == pytest.approx(1.5)
    by_hand = cv2.resize(plain.predict(cv2.resize(small, (144, 96), interpolation=cv2.INTER_CUBIC)).prob, (96, 64),
                         interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(pred.prob, by_hand, atol=1e-6)
    assert not np.allclose(pred.prob, plain.predict(small).prob, atol=1e-3)
    within = np.ascontiguousarray(astronaut[:120, :150])
    np.testing.assert_array_equal(det.predict(within).prob, plain.predict(within).prob)
    big = np.ascontiguousarray(astronaut[:400, :300])  # shorter side 300: down-sampled by 2/3 to 200 x 267
    pred = det.predict(big)
    assert pred.prob.shape == (400, 300) and pred.extras["working_scale"] == pytest.approx(2 / 3)
    by_hand = cv2.resize(plain.predict(cv2.resize(big, (200, 267), interpolation=cv2.INTER_AREA)).prob, (300, 400),
                         interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(pred.prob, np.clip(by_hand, 0, 1), atol=1e-6)
    with pytest.raises(ContractError, match="min_side"):
        GSRCompactDetector(weights=path, min_side=2.5)
    with pytest.raises(ContractError, match="max_side"):
        GSRCompactDetector(weights=path, max_side=4)
    with pytest.raises(ContractError, match="must not exceed"):
        GSRCompactDetector(weights=path, min_side=512, max_side=256)
