"""The refinement stage (paper Eqs. 8-9) on hand-made arrays, and the batched boundary against OpenCV's."""
import numpy as np
import pytest
import torch

from manipseg.postprocess import boundary_of as boundary_cv
from manipseg.morphology import boundary_of
from manipseg.train.refine import refine


def _case():
    """8x8 images: T = 10, M = 200 inside K (rows/cols 2..5) and 12 at (0, 0) (post-processing noise)."""
    t = torch.full((1, 3, 8, 8), 10, dtype=torch.uint8)
    m = t.clone()
    m[..., 2:6, 2:6] = 200
    m[..., 0, 0] = 12
    k = torch.zeros(1, 1, 8, 8)
    k[..., 2:6, 2:6] = 1
    p = torch.zeros(1, 1, 8, 8)
    p[..., 2:6, 2] = 0.9      # predicted boundary on K's left edge
    p[..., 0, 0] = 0.95       # a false boundary far outside K
    p[..., 3, 4] = 0.5        # exactly at the threshold: not replaced (P > threshold)
    return t, m, k, p


def test_equations_8_9_exact():
    t, m, k, p = _case()
    r = refine(m, t, k, p, torch.tensor([True]), threshold=0.5, restrict_to_mask=True, boundary_width=3)
    expected_m = m.clone()
    expected_m[..., 2:6, 2] = 10                      # Eq. 8: T where P = 1
    assert r.image.dtype == torch.uint8
    assert torch.equal(r.image, expected_m)           # (0, 0) is outside K's dilated region: kept
    expected_k = torch.zeros(1, 1, 8, 8)
    expected_k[..., 2:6, 3:6] = 1                     # Eq. 9: K - K*P
    assert torch.equal(r.mask, expected_k)
    # boundary of K' (3x3): dilation rows 1..6 x cols 2..6, minus erosion rows 3..4 x col 4
    expected_b = torch.zeros(1, 1, 8, 8)
    expected_b[..., 1:7, 2:7] = 1
    expected_b[..., 3:5, 4] = 0
    assert torch.equal(r.boundary, expected_b)
    assert r.replaced.sum() == 4


def test_unrestricted_replaces_everywhere_predicted():
    t, m, k, p = _case()
    r = refine(m, t, k, p, torch.tensor([True]), restrict_to_mask=False, boundary_width=3)
    assert int(r.image[0, 0, 0, 0]) == 10            # the false boundary pixel now comes from T
    assert r.replaced.sum() == 5
    assert r.mask[0, 0, 0, 0] == 0                   # K' only ever loses pixels


def test_samples_without_target_are_unchanged_and_batches_mix():
    t, m, k, p = _case()
    t2, m2, k2, p2 = (torch.cat([a, a]) for a in (t, m, k, p))
    r = refine(m2, t2, k2, p2, torch.tensor([False, True]), boundary_width=3)
    assert torch.equal(r.image[0], m[0]) and torch.equal(r.mask[0], k[0])
    assert torch.equal(r.boundary[0], boundary_of(k, 3)[0])
    assert not torch.equal(r.image[1], m[0])


def test_full_boundary_prediction_removes_the_region():
    t, m, k, _ = _case()
    r = refine(m, t, k, torch.ones(1, 1, 8, 8), torch.tensor([True]), boundary_width=3)
    assert r.mask.sum() == 0 and r.boundary.sum() == 0
    assert torch.equal(r.image[..., 1:7, 1:7], t[..., 1:7, 1:7])


def test_shape_errors():
    t, m, k, p = _case()
    with pytest.raises(ValueError, match="must be"):
        refine(m, t[..., :4], k, p, torch.tensor([True]))
    with pytest.raises(ValueError, match="B,1,H,W"):
        refine(m, t, k[..., :4], p, torch.tensor([True]))


@pytest.mark.parametrize("width", [2, 3, 4, 5, 7])
def test_batched_boundary_matches_opencv(width):
    rng = np.random.default_rng(width)
    masks = rng.random((3, 1, 21, 34)) > 0.55
    masks[0, 0, :6] = True          # touching the border
    masks[1] = False                # empty
    got = boundary_of(torch.from_numpy(masks), width).numpy().astype(bool)
    want = np.stack([boundary_cv(mm[0], width) for mm in masks])[:, None]
    assert np.array_equal(got, want)
