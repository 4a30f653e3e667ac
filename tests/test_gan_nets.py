"""The generator, the 70x70 PatchGAN, weights files and the inference wrappers."""
import numpy as np
import pytest
import torch

from manipseg.gan import (Blender, BlenderGAN, GanSettings, edge_mask, GeneratorWeightsError, Inpainter, PatchDiscriminator,
                          UNetGenerator, load_generator_file, save_generator)
from manipseg.gan.nets import pad_to_multiple, receptive_field


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_patchgan_receptive_field_is_70x70():
    assert receptive_field([(4, 2), (4, 2), (4, 2), (4, 1), (4, 1)]) == 70
    torch.manual_seed(0)
    d = PatchDiscriminator(width=4).double()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    x = torch.randn(1, 3, 160, 160, dtype=torch.float64, requires_grad=True)
    k = torch.zeros(1, 1, 160, 160, dtype=torch.float64, requires_grad=True)
    out = d(x, k)
    i, j = out.shape[2] // 2, out.shape[3] // 2
    out[0, 0, i, j].backward()
    g = (x.grad.abs().sum(1)[0] + k.grad.abs()[0, 0]) > 0
    rows, cols = np.nonzero(g.numpy())
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    assert g.sum() == 70 * 70           # every pixel of the window counts, none outside it
    # the mask channel is an input: D is conditioned on K
    assert k.grad.abs().sum() > 0


def test_generator_shapes_and_size_check():
    g = UNetGenerator(width=8, depth=3, max_width=32)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    k = torch.zeros(2, 1, 32, 48)
    y = g(x, k)
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="multiple of 8"):
        g(torch.zeros(1, 3, 30, 32), torch.zeros(1, 1, 30, 32))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in g.modules())


def _toy_sample(size=32):
    """A copy-paste: T and S two different colour ramps, K a square."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.stack([xx, yy, 0.5 * np.ones_like(xx)]) * 1.6 - 0.8
    s = np.stack([0.6 - 0.5 * yy, 0.7 * np.ones_like(xx), 0.2 + 0.6 * xx])
    k = np.zeros((1, size, size))
    k[:, 10:22, 8:20] = 1
    m = k * s + (1 - k) * t
    f = lambda a: torch.tensor(a, dtype=torch.float32)[None]  # noqa: E731
    return f(m), f(k), f(t), f(s)


def test_overfit_keeps_background():
    """A few hundred alternating G/D updates (Eq. 7, paper weights) on one copy-paste, from a random
    G: G reproduces T on the background. The edge band around K is excluded: L_edge (Eq. 5) pulls its
    outer half towards S."""
    torch.manual_seed(0)
    m, k, t, s = _toy_sample()
    pair = BlenderGAN(GanSettings(generator={"width": 8, "depth": 3, "max_width": 32},
                                  discriminator={"width": 4}, lr=1e-3))
    far = ((k < 0.5) & (edge_mask(k, 5) < 0.5)).expand_as(t)
    with torch.no_grad():
        before = (pair.G(m, k) - t).abs()[far].mean().item()
    for _ in range(250):
        stats, _ = pair.step(m, k, t, s)
    pair.G.eval()
    with torch.no_grad():
        out = pair.G(m, k)
    err = (out - t).abs()[far].mean().item()
    assert before > 0.2
    assert err < 0.06                         # < 4 of 255 levels on average ([-1, 1] scale)
    assert np.isfinite(stats["d_loss"]) and stats["g_bg"] < 0.3


def test_identity_init_starts_as_the_input():
    m, k, _, _ = _toy_sample()
    g = UNetGenerator(width=8, depth=3, max_width=32, identity_init=True)
    with torch.no_grad():
        assert torch.allclose(g(m, k), m, atol=1e-6)


def test_weights_roundtrip_and_role_check(tmp_path):
    torch.manual_seed(1)
    g = UNetGenerator(width=4, depth=2, max_width=8)
    path = save_generator(tmp_path / "g.safetensors", g, "blender", {"step": 7})
    g2, meta = load_generator_file(path, "blender")
    assert meta["step"] == 7 and meta["role"] == "blender"
    for (n1, a), (n2, b) in zip(g.state_dict().items(), g2.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    with pytest.raises(GeneratorWeightsError, match="expected a 'inpainter'"):
        load_generator_file(path, "inpainter")
    with pytest.raises(GeneratorWeightsError, match="not found"):
        load_generator_file(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(GeneratorWeightsError, match="not a readable"):
        load_generator_file(bad)


def test_generator_files_use_the_one_weights_format_with_kind_and_checksum(tmp_path):
    """save_generator writes manipseg.models.weights' format (kind gan-generator, checksum): a flipped byte is
    caught, a segmenter loader refuses the file by name, and the GAN's earlier header format still loads."""
    import json

    from safetensors.torch import save_file

    from manipseg.header import read_info
    from manipseg.models.weights import WeightsError, network_from_weights

    torch.manual_seed(3)
    g = UNetGenerator(width=4, depth=2, max_width=8)
    path = save_generator(tmp_path / "g.safetensors", g, "inpainter", {"step": 2})
    info = read_info(path)
    assert info["kind"] == "gan-generator" and info["arch"] == "gan-unet" and info["training"]["role"] == "inpainter"
    with pytest.raises(WeightsError, match="gan-generator"):
        network_from_weights(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(GeneratorWeightsError, match="checksum mismatch"):
        load_generator_file(tmp_path / "bad.safetensors")
    legacy = tmp_path / "legacy.safetensors"
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(legacy),
              metadata={"format": "manipseg-gan", "role": "inpainter", "generator": json.dumps(g.config),
                        "meta": json.dumps({"step": 2})})
    old, meta = load_generator_file(legacy, "inpainter")
    new, meta_new = load_generator_file(path, "inpainter")
    assert meta == meta_new == {"step": 2, "role": "inpainter"}
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


def test_blender_and_inpainter_keep_pixels_outside_their_regions():
    torch.manual_seed(2)
    g = UNetGenerator(width=4, depth=2, max_width=8)
    img = torch.rand(2, 3, 30, 37)                    # not a multiple of 4: padded internally
    k = torch.zeros(2, 1, 30, 37)
    k[:, :, 10:18, 12:20] = 1
    out = Blender(g, composite_width=3)(img, k)
    assert out.shape == img.shape and 0 <= out.min() and out.max() <= 1
    band = torch.zeros_like(k)
    band[:, :, 7:21, 9:23] = 1                        # K dilated by 3 pixels
    assert torch.equal(out * (1 - band), img * (1 - band))
    assert (out - img).abs()[band.bool().expand_as(img)].max() > 0
    full = Blender(g, composite_width=0)(img, k)      # G's whole image: the background is G's too
    assert (full - img).abs()[(band < 1).expand_as(img)].max() > 0
    filled = Inpainter(g)(img, k)
    assert torch.equal(filled * (1 - k), img * (1 - k))
    with pytest.raises(ValueError, match="masks"):
        Blender(g)(img, k[:, :, :10])


def test_pad_to_multiple():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    y, (h, w) = pad_to_multiple(x, 4)
    assert y.shape == (2, 3, 8, 8) and (h, w) == (5, 6)
    assert torch.equal(y[..., :5, :6], x)
