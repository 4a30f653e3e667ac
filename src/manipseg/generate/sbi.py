"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): one implementation of the paper's Algorithm 1.

:func:`self_blend_core` makes one SBI of an image over a region:

1. source-target augmentation ``T`` of a copy of the image, given to the source or to the target (p = 0.5);
2. random resize (about a centre) and translate (by fractions of a side) of the source;
3. the mask: the region (or a random hull drawn from landmarks), warped with the source or not, elastically
   deformed, then SBI's two-blur erode / dilate (:func:`manipseg.generate.regions.blend_mask`);
4. a blend ratio ``r`` from a set, ``alpha = r * mask`` and ``I_SB = I_s * alpha + I_t * (1 - alpha)``, rounded
   to uint8.

An :class:`SBIPreset` holds everything the two users do differently, so that each keeps its random draws bit for
bit (``tests/test_sbi_core.py`` checks them against digests recorded before the two were merged):

=================  =============================================  ==============================================
                   :data:`REGIONS` (:func:`regions_preset`)       ``FACES`` (``manipseg.faces.sbi.faces_preset``)
=================  =============================================  ==============================================
augmentation       :func:`regions_augment` (fixed ranges)         ``source_target_augment`` with an ``SBIConfig``
side coin          after the augmentation                         before it (``coin_first``)
scale              one draw for both axes (``sbi_scale``)         one draw per axis (``SBIConfig.scale``)
shift              ``sbi_shift`` of the width / height, one       ``translate`` of the face's crop side,
                   ``uniform(-f, f, 2)`` draw ("pair")            ``uniform(-1, 1) * f`` per axis ("unit")
centre / side      the pixel centre; the image's size             the landmarks' box centre; the crop side
mask               the given region, not warped                   a random hull of the landmarks (drawn after
                                                                  the augmentation), warped with the source
elastic warp       amplitude and smoothing drawn from             fixed fractions of the side (``elastic_per``
                   ``elastic_alpha`` / ``elastic_sigma``, px at   1)
                   256 px of the shorter side (``elastic_per``
                   256)
blur kernels       ``sbi_kernel`` (default 5-25 px at 256 px)     5-25 px at 256 px of the crop side
blend ratio        ``sbi_blend_ratios[rng.integers(n)]``          ``rng.choice(BLEND_RATIOS)``
rounding           ``floor(x + 0.5)`` ("half_up")                 ``rint``, half to even
empty mask         :class:`EmptyBlendMask` (the engine redraws)   kept (all-zero alpha: the output is the target)
=================  =============================================  ==============================================

Where only the form differs, the distribution is the same: the two shift draws give maps that differ in the last
bits (which warpAffine's fixed-point interpolation almost always hides), and the two ratio draws take the same
draw from NumPy's Generator today; both forms are kept so that every old seed gives the same images. All
randomness comes from the ``numpy.random.Generator`` passed in; ``manipseg.faces`` imports from here, never the
reverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import cv2
import numpy as np

from .config import BLEND_RATIOS, GenConfig
from .post import jpeg_roundtrip, resize_roundtrip
from .regions import blend_mask, elastic_deform

__all__ = ["BLEND_RATIOS", "REGIONS", "EmptyBlendMask", "SBIPreset", "SBIResult", "blend", "random_resize_translate",
           "regions_augment", "regions_preset", "self_blend_core", "to_uint8"]

#: a source-target augmentation: (rng, uint8 image) -> (augmented uint8 image, JSON-able description)
Augment = Callable[[np.random.Generator, np.ndarray], "tuple[np.ndarray, dict]"]
#: a float range drawn uniformly, or a fixed value (no draw)
Amount = Union[float, "tuple[float, float]"]

SHIFT_DRAWS = ("pair", "unit")
RATIO_DRAWS = ("index", "choice")
ROUNDINGS = ("half_up", "rint")


class EmptyBlendMask(ValueError):
    """The mask vanished (elastic deformation or blurring); raised only by presets with ``require_mask``."""


@dataclass(frozen=True)
class SBIPreset:
    """How one family of SBIs draws Algorithm 1's parameters (see the module docstring's table)."""

    name: str
    augment: Augment
    coin_first: bool                  # draw the side coin before the augmentation (else after it)
    scale: tuple[float, float]        # resize factor range, about the centre
    isotropic: bool                   # one scale for both axes (else x then y)
    shift: tuple[float, float]        # largest translation, fraction of the side (x, y)
    shift_draw: str                   # "pair": uniform(-f, f, 2) * side; "unit": uniform(-1, 1) * f * side per axis
    warp_mask: bool                   # the mask follows the source's resize / translate
    elastic_alpha: Amount             # displacement amplitude, per elastic_per px of the side
    elastic_sigma: Amount             # smoothness of the displacement field, per elastic_per px of the side
    elastic_per: float                # 256: amplitudes in px at 256 px; 1: fractions of the side
    kernel: tuple[int, int] = (5, 25)  # odd Gaussian kernel sizes of the two blurs at 256 px
    ratios: tuple[float, ...] = BLEND_RATIOS
    ratio_draw: str = "choice"        # "index": ratios[rng.integers(n)]; "choice": rng.choice(ratios)
    rounding: str = "rint"            # "half_up": floor(x + 0.5); "rint": round half to even
    require_mask: bool = False        # raise EmptyBlendMask when the mask vanishes

    def __post_init__(self) -> None:
        for label, value, known in (("shift_draw", self.shift_draw, SHIFT_DRAWS),
                                    ("ratio_draw", self.ratio_draw, RATIO_DRAWS),
                                    ("rounding", self.rounding, ROUNDINGS)):
            if value not in known:
                raise ValueError(f"SBI preset {self.name!r}: {label} must be one of {', '.join(known)}, got {value!r}")
        if not self.ratios:
            raise ValueError(f"SBI preset {self.name!r}: ratios must hold at least one blend ratio")
        if len(self.scale) != 2 or len(self.shift) != 2:
            raise ValueError(f"SBI preset {self.name!r}: scale and shift must be pairs, got {self.scale!r} and "
                             f"{self.shift!r}")
        if self.elastic_per <= 0:
            raise ValueError(f"SBI preset {self.name!r}: elastic_per must be positive, got {self.elastic_per!r}")


@dataclass
class SBIResult:
    """One SBI: ``image`` = rounded ``alpha * source + (1 - alpha) * target``."""

    image: np.ndarray    # uint8 H x W x 3
    alpha: np.ndarray    # float32 H x W in [0, 1]: blend ratio times the blend mask
    source: np.ndarray   # uint8 H x W x 3, resized / translated (and augmented when ``info["augmented"]`` says so)
    target: np.ndarray   # uint8 H x W x 3
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able: augmented side, augmentation, draws


def regions_augment(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, dict]:
    """SBI's source-target augmentation: a colour transform then a frequency transform."""
    x = img.astype(np.float32)
    info: dict = {}
    # colour: RGB shift, hue/saturation/value shift, brightness/contrast
    shift = rng.uniform(-20, 20, 3).astype(np.float32)
    hsv = cv2.cvtColor(np.clip(x + shift, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    dh, ds, dv = float(rng.uniform(-0.3, 0.3) * 18), float(rng.uniform(-0.3, 0.3) * 255 * 0.3), float(rng.uniform(-0.3, 0.3) * 255 * 0.3)
    hsv[:, :, 0] = np.mod(hsv[:, :, 0] + dh, 180)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] + ds, 0, 255)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + dv, 0, 255)
    x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    b, c = float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.1, 0.1))
    x = np.clip((x - 127.5) * (1 + c) + 127.5 + b * 255, 0, 255).astype(np.uint8)
    info["colour"] = {"rgb_shift": [round(float(v), 2) for v in shift], "hsv": [round(dh, 2), round(ds, 2), round(dv, 2)],
                      "brightness": round(b, 4), "contrast": round(c, 4)}
    # frequency: one of down/up-sampling, sharpening, JPEG
    op = ["downup", "sharpen", "jpeg"][int(rng.integers(3))]
    if op == "downup":
        f = float(rng.uniform(0.25, 0.75))
        x = resize_roundtrip(x, f)
        info["frequency"] = {"op": op, "scale": round(f, 4)}
    elif op == "sharpen":
        amt = float(rng.uniform(0.2, 1.0))
        blur = cv2.GaussianBlur(x, (0, 0), 1.0)
        x = cv2.addWeighted(x, 1 + amt, blur, -amt, 0)
        info["frequency"] = {"op": op, "amount": round(amt, 4)}
    else:
        q = int(rng.integers(30, 101))
        x = jpeg_roundtrip(x, q)
        info["frequency"] = {"op": op, "quality": q}
    return x, info


def regions_preset(cfg: GenConfig) -> SBIPreset:
    """The generation engine's SBI (kind ``sbi``, :func:`manipseg.generate.self_blend`) with ``cfg``'s ranges."""
    return SBIPreset(name="regions", augment=regions_augment, coin_first=False, scale=tuple(cfg.sbi_scale),
                     isotropic=True, shift=(cfg.sbi_shift, cfg.sbi_shift), shift_draw="pair", warp_mask=False,
                     elastic_alpha=tuple(cfg.elastic_alpha), elastic_sigma=tuple(cfg.elastic_sigma), elastic_per=256.0,
                     kernel=tuple(cfg.sbi_kernel), ratios=tuple(cfg.sbi_blend_ratios), ratio_draw="index",
                     rounding="half_up", require_mask=True)


#: the regions preset of the default :class:`GenConfig`
REGIONS = regions_preset(GenConfig())


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``I_s * M + I_t * (1 - M)`` in float32 (mask (H, W) broadcast over channels)."""
    m = np.asarray(mask, dtype=np.float32)[..., None]
    return source.astype(np.float32) * m + target.astype(np.float32) * (1 - m)


def to_uint8(x: np.ndarray, rounding: str = "rint") -> np.ndarray:
    """Float pixels to uint8: ``"rint"`` rounds half to even, ``"half_up"`` is ``floor(x + 0.5)``; clipped to 0-255."""
    if rounding == "rint":
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if rounding == "half_up":
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")


def _amount(rng: np.random.Generator, value: Amount) -> float:
    """A uniform draw from a (low, high) range, or a fixed value without a draw."""
    return float(rng.uniform(*value)) if isinstance(value, tuple) else value


def random_resize_translate(rng: np.random.Generator, shape: tuple[int, int], preset: SBIPreset,
                            centre: tuple[float, float] | None = None, side: float | None = None
                            ) -> tuple[np.ndarray, dict]:
    """The paper's RandomResizeTranslate as a 2x3 map: scale about ``centre`` (default the pixel centre
    ``((w - 1) / 2, (h - 1) / 2)``), then translate by up to ``preset.shift`` of ``side`` (default the width and
    the height). Returns the map and ``{"scale": s or [sx, sy], "shift": [tx, ty]}`` (rounded)."""
    h, w = shape
    if preset.isotropic:
        sx = sy = float(rng.uniform(*preset.scale))
    else:
        sx, sy = rng.uniform(*preset.scale), rng.uniform(*preset.scale)
    bw, bh = (w, h) if side is None else (side, side)
    if preset.shift_draw == "pair":
        f = np.asarray(preset.shift, dtype=np.float64)
        tx, ty = (float(v) for v in rng.uniform(-f, f, 2) * (bw, bh))
    else:
        tx, ty = rng.uniform(-1, 1) * preset.shift[0] * bw, rng.uniform(-1, 1) * preset.shift[1] * bh
    cx, cy = ((w - 1) / 2.0, (h - 1) / 2.0) if centre is None else centre
    a = np.array([[sx, 0, cx - sx * cx + tx], [0, sy, cy - sy * cy + ty]], dtype=np.float64)
    scale = round(sx, 4) if preset.isotropic else [round(float(sx), 4), round(float(sy), 4)]
    return a, {"scale": scale, "shift": [round(float(tx), 2), round(float(ty), 2)]}


def self_blend_core(rng: np.random.Generator, image: np.ndarray,
                    region: np.ndarray | Callable[[np.random.Generator], np.ndarray], preset: SBIPreset,
                    centre: tuple[float, float] | None = None, side: float | None = None) -> SBIResult:
    """One Self-Blended Image of ``image`` (uint8 H x W x 3) by ``preset`` (see the module docstring).

    ``region``: the (H, W) mask to blend through (bool or float in [0, 1]), or a function of the generator that
    draws it after the augmentation (the faces' random hull). ``centre`` and ``side`` frame the resize /
    translate, the elastic amplitude and the blur kernels (default: the image's pixel centre and its size, the
    shorter side for the mask). Raises :class:`EmptyBlendMask` when the mask vanishes and the preset requires one.
    """
    h, w = image.shape[:2]
    if preset.coin_first:
        on_source = rng.random() < 0.5
        aug, aug_info = preset.augment(rng, image)
    else:
        aug, aug_info = preset.augment(rng, image)
        on_source = rng.random() < 0.5
    src, tgt = (aug, image) if on_source else (image, aug)
    mask = region(rng) if callable(region) else region
    if mask.shape != (h, w):
        raise ValueError(f"the SBI mask is {mask.shape}, the image {image.shape}: they must have the same height "
                         "and width")
    a, geometry = random_resize_translate(rng, (h, w), preset, centre, side)
    src = cv2.warpAffine(src, a, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if preset.warp_mask:
        mask = cv2.warpAffine(np.asarray(mask, np.float32), a, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
    unit = (min(h, w) if side is None else side) / preset.elastic_per
    mask = elastic_deform(mask, rng, alpha=_amount(rng, preset.elastic_alpha) * unit,
                          sigma=_amount(rng, preset.elastic_sigma) * unit)
    if preset.require_mask and not mask.any():
        raise EmptyBlendMask("empty after deformation")
    m, (k1, k2) = blend_mask(mask, rng, preset.kernel, scale=side)
    if preset.require_mask and not m.any():
        raise EmptyBlendMask("empty mask")
    if preset.ratio_draw == "index":
        ratio = float(preset.ratios[int(rng.integers(len(preset.ratios)))])
    else:
        ratio = float(rng.choice(preset.ratios))
    alpha = (m * np.float32(ratio)).astype(np.float32)
    out = to_uint8(blend(src, tgt, alpha), preset.rounding)
    info = {"augmented": "source" if on_source else "target", "augmentation": aug_info, "resize_translate": geometry,
            "blur_kernels": [k1, k2], "blend_ratio": ratio}
    return SBIResult(image=out, alpha=alpha, source=src, target=tgt, info=info)
