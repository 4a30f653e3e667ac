"""One SBI core (manipseg.generate.sbi) with two presets: the recorded draws, the mask, and where the presets differ."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from manipseg.faces import sbi as faces_sbi
from manipseg.generate import GenConfig, face_hull_mask, random_ellipse
from manipseg.generate import config as gen_config
from manipseg.generate.sbi import (REGIONS, EmptyBlendMask, SBIPreset, regions_preset, self_blend_core,
                                   to_uint8)
from sbi_support import FIXTURE, compute, face_crop, same
from test_faces import template_landmarks


def test_every_sbi_path_gives_the_recorded_digests():
    """Exact on the machine that recorded them (tests/sbi_support.py, with the two implementations before the
    core): the images are integers; floating-point masks of another CPU are compared by their statistics."""
    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    now = compute()
    assert sorted(now) == sorted(recorded)
    wrong = [f"{case}: {name}" for case, arrays in recorded.items() for name, d in arrays.items()
             if not same(now[case].get(name, ""), d)]
    assert not wrong, f"{len(wrong)} digests changed, e.g.\n" + "\n".join(wrong[:20])


def test_digest_comparison_tolerates_summation_not_changed_arrays():
    from sbi_support import digest
    a = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    d = digest(a)
    sha, *stats = d.split("|")
    assert same(d, d)
    assert same(d, "|".join([sha] + stats[:-1] + [repr(float(stats[-1]) * (1 + 1e-15))]))  # same bytes
    b = a.copy()
    b[0, 0] = np.nextafter(b[0, 0], np.float32(2))      # another CPU's last bit: statistics within tolerance
    assert same(digest(b), d)
    b[5:10, 5:10] += 0.1                                 # a real change
    assert not same(digest(b), d)
    assert not same(digest(np.zeros(3, np.uint8)), digest(np.ones(3, np.uint8)))


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return face_crop()


def _preset_args(preset: SBIPreset, lm: np.ndarray | None) -> dict:
    """(region, centre, side) as each preset's public function passes them."""
    if preset.name == "regions":
        return {"region": face_hull_mask(lm, (128, 128))}
    lo, hi = lm.min(0), lm.max(0)
    cfg = faces_sbi.SBIConfig()
    return {"region": lambda rng: faces_sbi._random_hull(rng, lm, (128, 128), cfg),
            "centre": tuple((lo + hi) / 2), "side": faces_sbi.face_side(lm)}


@pytest.mark.parametrize("preset", [REGIONS, faces_sbi.FACES], ids=lambda p: p.name)
def test_pixels_change_only_where_the_mask_is(crop, preset):
    """Outside the mask the output is the target bit for bit; where alpha times the source-target gap exceeds
    one level, the output changed."""
    lm = template_landmarks()
    for seed in range(8):
        try:
            b = self_blend_core(np.random.default_rng(seed), crop, preset=preset, **_preset_args(preset, lm))
        except EmptyBlendMask:
            continue
        assert b.image.dtype == np.uint8 and b.alpha.dtype == np.float32 and b.image.shape == crop.shape
        assert 0 <= b.alpha.min() and b.alpha.max() == pytest.approx(b.info["blend_ratio"], abs=1e-6)
        outside = b.alpha == 0
        assert outside.any() and (~outside).any()
        np.testing.assert_array_equal(b.image[outside], b.target[outside])
        pull = b.alpha[..., None] * np.abs(b.source.astype(np.float32) - b.target.astype(np.float32))
        assert (pull > 1).any() and (b.image != b.target)[pull > 1].all()  # moved by more than a level: changed
        near = cv2.dilate(face_hull_mask(lm, (128, 128)).astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
        assert b.alpha[near].sum() / b.alpha.sum() > 0.97, "blend mask leaks off the region"


#: the fields in which the two presets differ (the module docstring's table of manipseg.generate.sbi)
DOCUMENTED = {"name", "augment", "coin_first", "scale", "isotropic", "shift", "shift_draw", "warp_mask",
              "elastic_alpha", "elastic_sigma", "elastic_per", "ratio_draw", "rounding", "require_mask"}


def test_the_presets_differ_only_in_the_documented_fields():
    faces = faces_sbi.FACES
    differ = {f.name for f in dataclasses.fields(SBIPreset) if getattr(REGIONS, f.name) != getattr(faces, f.name)}
    assert differ == DOCUMENTED
    assert REGIONS.kernel == faces.kernel == (5, 25) and REGIONS.ratios == faces.ratios == faces_sbi.BLEND_RATIOS


def test_one_blend_ratio_set():
    assert faces_sbi.BLEND_RATIOS is gen_config.BLEND_RATIOS is GenConfig().sbi_blend_ratios
    assert regions_preset(GenConfig(sbi_blend_ratios=(0.5,))).ratios == (0.5,)


@pytest.mark.parametrize("field", sorted(DOCUMENTED - {"name", "shift_draw", "ratio_draw", "require_mask"}))
def test_each_difference_changes_the_sbi(crop, field):
    """The regions preset with one field of the faces' changes the SBI of some seed: each field is used. (The
    two shift draws give maps that differ in the last bits, which warpAffine's fixed-point interpolation hides
    almost always; the ratio draws are the same draw today, below; require_mask only acts on an empty mask.)"""
    region = face_hull_mask(template_landmarks(), (128, 128))
    one = dataclasses.replace(REGIONS, **{field: getattr(faces_sbi.FACES, field)})

    def outcome(preset: SBIPreset, seed: int) -> tuple:
        try:
            b = self_blend_core(np.random.default_rng(seed), crop, region, preset)
        except EmptyBlendMask as why:
            return (str(why),)
        return b.image.tobytes(), b.alpha.tobytes()

    assert any(outcome(REGIONS, seed) != outcome(one, seed) for seed in range(6)), \
        f"{field} of the faces' preset made no difference"


def test_the_two_ratio_draws_take_the_same_draw_today(crop):
    """``rng.choice(ratios)`` and ``ratios[rng.integers(n)]`` consume the same draw in NumPy's Generator
    (its choice draws ``integers(0, n)``): the field keeps each form, should a NumPy release part them."""
    region = face_hull_mask(template_landmarks(), (128, 128))
    for seed in range(6):
        a = self_blend_core(np.random.default_rng(seed), crop, region, REGIONS)
        b = self_blend_core(np.random.default_rng(seed), crop, region,
                            dataclasses.replace(REGIONS, ratio_draw="choice"))
        np.testing.assert_array_equal(a.image, b.image)
        assert a.info == b.info


def test_an_empty_mask_is_an_error_or_kept_as_the_preset_says(crop):
    empty = np.zeros((128, 128), bool)
    with pytest.raises(EmptyBlendMask, match="empty after deformation"):
        self_blend_core(np.random.default_rng(0), crop, empty, REGIONS)
    kept = dataclasses.replace(REGIONS, require_mask=False)
    b = self_blend_core(np.random.default_rng(0), crop, empty, kept)
    assert not b.alpha.any()
    np.testing.assert_array_equal(b.image, b.target)


def test_bad_presets_and_masks_are_refused_with_the_reason(crop):
    with pytest.raises(ValueError, match="rounding must be one of half_up, rint, got 'floor'"):
        dataclasses.replace(REGIONS, rounding="floor")
    with pytest.raises(ValueError, match="shift_draw must be one of pair, unit"):
        dataclasses.replace(REGIONS, shift_draw="box")
    with pytest.raises(ValueError, match="ratios must hold at least one"):
        dataclasses.replace(REGIONS, ratios=())
    region = random_ellipse(np.random.default_rng(0), (64, 64), 0.2)
    with pytest.raises(ValueError, match=r"the SBI mask is \(64, 64\), the image \(128, 128, 3\)"):
        self_blend_core(np.random.default_rng(0), crop, region, REGIONS)


def test_rounding():
    x = np.array([0.5, 1.5, 2.5, -3.0, 300.0, 254.49], np.float32)
    assert to_uint8(x, "rint").tolist() == [0, 2, 2, 0, 255, 254]
    assert to_uint8(x, "half_up").tolist() == [1, 2, 3, 0, 255, 254]
