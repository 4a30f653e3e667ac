"""GSR-Net generator losses (Eqs. 3-7) on hand-made tensors with known values."""
import math

import cv2
import numpy as np
import pytest
import torch

from manipseg.gan.losses import (Weights, adv_discriminator, adv_generator, edge_mask, generator_loss, laplacian,
                                 loss_bg, loss_edge, loss_grad, masked_l1)


def _square_mask(h=8, w=8, y0=2, y1=6, x0=2, x1=6):
    k = torch.zeros(1, 1, h, w)
    k[..., y0:y1, x0:x1] = 1
    return k


def test_laplacian_matches_opencv_replicate():
    rng = np.random.default_rng(0)
    img = rng.random((9, 11, 3)).astype(np.float32)
    ref = cv2.Laplacian(img, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REPLICATE)
    ours = laplacian(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # a quadratic ramp x^2 has Laplacian 2 away from the borders
    x = torch.arange(10.0).repeat(10, 1) ** 2
    lap = laplacian(x[None, None])[0, 0]
    assert torch.allclose(lap[1:-1, 1:-1], torch.full((8, 8), 2.0))


def test_loss_bg_counts_only_background_and_sums_channels():
    k = _square_mask()                        # 16 foreground, 48 background pixels
    target = torch.zeros(1, 3, 8, 8)
    out = torch.full((1, 3, 8, 8), 0.5)       # |diff| 0.5 per channel -> 1.5 per pixel
    out = out + k * 10                        # huge errors inside K must not count
    assert loss_bg(out, target, k).item() == pytest.approx(1.5)
    # half the background perfect -> mean over N_bg halves
    out2 = out.clone()
    out2[..., :4, :] = torch.where(k[..., :4, :] > 0, out2[..., :4, :], torch.zeros(1))
    n_bg_top = int((1 - k[..., :4, :]).sum())  # background pixels in the top half (24)
    assert loss_bg(out2, target, k).item() == pytest.approx(1.5 * (48 - n_bg_top) / 48)


def test_loss_grad_on_a_delta():
    k = _square_mask()
    source = torch.zeros(1, 3, 8, 8)
    out = torch.zeros(1, 3, 8, 8)
    out[0, 0, 2, 2] = 1.0                     # a corner pixel of K in the red channel
    # Laplacian: -4 at (2,2); +1 at (1,2), (3,2), (2,1), (2,3): (3,2) and (2,3) are in K
    expected = (4 + 1 + 1) / 16
    assert loss_grad(out, source, k).item() == pytest.approx(expected)
    # a constant offset has zero Laplacian: no gradient loss even though the colours differ
    assert loss_grad(source + 0.7, source, k).item() == pytest.approx(0.0, abs=1e-6)


def test_edge_mask_is_dilation_minus_erosion_and_loss_edge():
    k = _square_mask(16, 16, 4, 12, 4, 12)
    e = edge_mask(k, 3)[0, 0].numpy().astype(np.uint8)
    km = k[0, 0].numpy().astype(np.uint8)
    ker = np.ones((3, 3), np.uint8)
    np.testing.assert_array_equal(e, cv2.dilate(km, ker) - cv2.erode(km, ker))
    assert e.sum() == 10 * 10 - 6 * 6
    source = torch.zeros(1, 3, 16, 16)
    out = torch.zeros(1, 3, 16, 16)
    out[0, 1][torch.from_numpy(e).bool()] = 0.25     # every edge pixel off by 0.25 in one channel
    out[0, :, 7, 7] = 5.0                            # an interior pixel: not on the edge band
    assert loss_edge(out, source, k, 3).item() == pytest.approx(0.25)


def test_masked_l1_empty_region_is_zero_and_differentiable():
    a = torch.rand(1, 3, 4, 4, requires_grad=True)
    loss = masked_l1(a, torch.zeros_like(a), torch.zeros(1, 1, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert a.grad is not None


def test_adversarial_terms_known_values():
    zero = torch.zeros(2, 1, 3, 3)
    assert adv_generator(zero).item() == pytest.approx(math.log(2))
    assert adv_discriminator(zero, zero).item() == pytest.approx(math.log(2))
    big = torch.full((2, 1, 3, 3), 30.0)
    assert adv_discriminator(big, -big).item() == pytest.approx(0.0, abs=1e-6)   # D perfectly right
    assert adv_generator(-big).item() == pytest.approx(30.0, rel=1e-3)             # G fully caught


def test_generator_loss_is_eq7_with_paper_weights():
    torch.manual_seed(0)
    k = _square_mask(16, 16, 4, 12, 4, 12)
    out, target, source = (torch.rand(1, 3, 16, 16) * 2 - 1 for _ in range(3))
    logits = torch.randn(1, 1, 2, 2)
    terms = generator_loss(out, target, source, k, logits, Weights(), edge_width=5)
    assert terms["bg"].item() == pytest.approx(loss_bg(out, target, k).item())
    assert terms["grad"].item() == pytest.approx(loss_grad(out, source, k).item())
    assert terms["edge"].item() == pytest.approx(loss_edge(out, source, k, 5).item())
    expected = terms["bg"] + 1 * terms["grad"] + 2 * terms["edge"] + 5 * terms["adv"]
    assert terms["total"].item() == pytest.approx(expected.item())
    assert Weights() == Weights(grad=1.0, edge=2.0, adv=5.0)
