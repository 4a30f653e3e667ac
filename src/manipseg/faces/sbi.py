"""Self-Blended Images for faces (Shiohara & Yamasaki, CVPR 2022), and classic cross-identity swaps.

:func:`self_blend` follows the paper's Algorithm 1 on one face crop and its 68 landmarks:

1. source-target augmentation ``T`` (colour: RGB shift, HSV, brightness/contrast; frequency: one of
   down-then-up sampling or sharpening, then JPEG) applied to the source or to the target (p = 0.5 each);
2. random resize and translate of the source, with the same map applied to the mask;
3. landmark transform (random forehead extension, random hull variant) and the convex hull as mask;
4. mask deformation: elastic warp, then two Gaussian blurs (pixels < 1 after the first are zeroed, so the
   mask erodes when the first kernel is larger and dilates when the second is);
5. blend ratio ``r`` from {0.25, 0.5, 0.75, 1, 1, 1}, ``M = r * M`` and ``I_SB = I_s * M + I_t * (1 - M)``.

It is :func:`manipseg.generate.sbi.self_blend_core`, the engine's SBI too, with the faces' preset
(:func:`faces_preset`, :data:`FACES` for the defaults), which records how its draws differ from the engine's.

Kernel sizes, elastic amplitude and source shift, given in the paper for 256-380 px face crops, are scaled
to the face: to the side of the square ``manipseg faces`` crops around its landmarks (:func:`face_side`,
margin 0.3), so a face blended inside a whole photo gets the same mask, relative to the face, as the same
face blended in its crop. :func:`face_swap` blends a *different* person's face, landmark-aligned by a similarity
transform and colour-matched in Lab: a harder, out-of-distribution test for an SBI-trained detector.
All randomness comes from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

from ..generate.post import jpeg_roundtrip as jpeg
from ..generate.regions import blend_mask, elastic_deform, face_hull_mask
from ..generate.sbi import BLEND_RATIOS, SBIPreset, blend, random_resize_translate, self_blend_core, to_uint8
from .detect import Face, crop_side

JAW, BROWS = slice(0, 17), slice(17, 27)


@dataclass
class SBIConfig:
    """Probabilities and ranges of the SBI augmentations (defaults after the paper's code)."""

    p_rgb_shift: float = 0.3
    rgb_shift: float = 20.0
    p_hsv: float = 0.3
    hue_shift: float = 4.0        # OpenCV hue units (0-180)
    sat_shift: float = 0.15       # relative
    val_shift: float = 15.0
    p_brightness_contrast: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    p_frequency: float = 1.0      # share of SBIs whose frequency transform resamples or sharpens (paper: all)
    downscale: tuple[float, float] = (0.25, 0.5)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 100)
    translate: tuple[float, float] = (0.03, 0.015)   # fraction of width, height
    scale: tuple[float, float] = (0.95, 1 / 0.95)
    elastic_alpha: float = 0.04    # fraction of the crop size
    elastic_sigma: float = 0.08    # fraction of the crop size
    p_forehead: float = 0.5


# -- source-target augmentation -------------------------------------------------------------------------
def color_transform(image: np.ndarray, rng: np.random.Generator, cfg: SBIConfig) -> np.ndarray:
    """RGB shift, HSV shift and brightness/contrast, each with its probability."""
    img = image.astype(np.float32)
    if rng.random() < cfg.p_rgb_shift:
        img = img + rng.uniform(-cfg.rgb_shift, cfg.rgb_shift, 3).astype(np.float32)
    if rng.random() < cfg.p_hsv:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue_shift, cfg.hue_shift)) % 180
        hsv[..., 1] = hsv[..., 1] * (1 + rng.uniform(-cfg.sat_shift, cfg.sat_shift))
        hsv[..., 2] = hsv[..., 2] + rng.uniform(-cfg.val_shift, cfg.val_shift)
        hsv = np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < cfg.p_brightness_contrast:
        alpha = 1 + rng.uniform(-cfg.contrast, cfg.contrast)
        beta = 255 * rng.uniform(-cfg.brightness, cfg.brightness)
        img = img * alpha + beta
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def frequency_transform(image: np.ndarray, rng: np.random.Generator, cfg: SBIConfig) -> np.ndarray:
    """One of down-then-up sampling or sharpening (with probability ``p_frequency``; drawn only when it is
    below 1), then JPEG with probability ``p_jpeg``."""
    h, w = image.shape[:2]
    if cfg.p_frequency < 1 and rng.random() >= cfg.p_frequency:
        out = image
    elif rng.random() < 0.5:
        s = rng.uniform(*cfg.downscale)
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        amount = rng.uniform(0.2, 0.5)
        blur = cv2.GaussianBlur(image, (0, 0), 1.0)
        out = cv2.addWeighted(image, 1 + amount, blur, -amount, 0)
    if rng.random() < cfg.p_jpeg:
        out = jpeg(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out


def source_target_augment(image: np.ndarray, rng: np.random.Generator, cfg: SBIConfig) -> np.ndarray:
    return frequency_transform(color_transform(image, rng, cfg), rng, cfg)


def _augment(rng: np.random.Generator, image: np.ndarray, cfg: SBIConfig) -> tuple[np.ndarray, dict]:
    return source_target_augment(image, rng, cfg), {}


def faces_preset(cfg: SBIConfig | None = None) -> SBIPreset:
    """The faces' SBI (:func:`self_blend`) as a preset of :func:`manipseg.generate.sbi.self_blend_core`, with
    ``cfg``'s augmentation, scale, translation and elastic fractions (see that module's table)."""
    cfg = cfg or SBIConfig()
    return SBIPreset(name="faces", augment=partial(_augment, cfg=cfg), coin_first=True, scale=tuple(cfg.scale),
                     isotropic=False, shift=tuple(cfg.translate), shift_draw="unit", warp_mask=True,
                     elastic_alpha=cfg.elastic_alpha, elastic_sigma=cfg.elastic_sigma, elastic_per=1.0,
                     kernel=(5, 25), ratios=BLEND_RATIOS, ratio_draw="choice", rounding="rint", require_mask=False)


#: the faces preset of the default :class:`SBIConfig`
FACES = faces_preset()


# -- masks ---------------------------------------------------------------------------------------------
def landmark_transform(landmarks: np.ndarray, rng: np.random.Generator, cfg: SBIConfig) -> np.ndarray:
    """Random hull variant of 68 landmarks: forehead extension (brows raised by 10-30% of the face height)
    with probability ``p_forehead``; then the whole face, or the inner face without the upper jaw line."""
    lm = np.asarray(landmarks, dtype=np.float32).copy()
    if len(lm) != 68:
        return lm
    if rng.random() < cfg.p_forehead:
        height = float(lm[8, 1] - lm[BROWS, 1].min())
        lm[BROWS, 1] -= rng.uniform(0.1, 0.3) * height
    if rng.random() < 0.25:  # inner face: drop the jaw points level with the eyes
        keep = np.r_[3:14, 17:68]
        lm = lm[keep]
    return lm


def ellipse_landmarks(size: int, n: int = 32) -> np.ndarray:
    """Points on the face ellipse of a box-framed crop: the stand-in hull when a backend has no landmarks."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c = size / 2
    return np.stack([c + 0.30 * size * np.cos(t), c + 0.05 * size + 0.36 * size * np.sin(t)], axis=1).astype(np.float32)


def face_side(landmarks: np.ndarray, margin: float = 0.3) -> float:
    """Side of the face's crop square in image pixels: ``(1 + 2 * margin)`` times the longer side of the
    landmarks' box, as :func:`manipseg.faces.detect.crop_matrix` frames a face (128 for a 128-px crop)."""
    return crop_side(Face((0, 0, 0, 0), np.asarray(landmarks, dtype=np.float64), 0.0), margin)


def random_affine(rng: np.random.Generator, size: tuple[int, int], cfg: SBIConfig,
                  centre: tuple[float, float] | None = None, side: float | None = None) -> np.ndarray:
    """2x3 map: scale about ``centre`` (default the image centre) and translate by fractions of ``side``
    (default the image's width and height) (the paper's RandomResizeTranslate)."""
    h, w = size
    centre = (w / 2, h / 2) if centre is None else centre
    return random_resize_translate(rng, size, faces_preset(cfg), centre, side)[0]


def blur_mask(mask: np.ndarray, rng: np.random.Generator, scale: float | None = None) -> np.ndarray:
    """The paper's two-Gaussian erode/dilate (:func:`manipseg.generate.regions.blend_mask`) of a float
    (H, W) mask in [0, 1], kernels scaled to ``scale`` px (default the mask's shorter side); returns
    float32 (H, W) in [0, 1] with maximum 1 (or all zero)."""
    return blend_mask(mask, rng, scale=scale)[0]


# -- the two generators --------------------------------------------------------------------------------
def self_blend(image: np.ndarray, landmarks: np.ndarray | None, rng: np.random.Generator,
               cfg: SBIConfig | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """One self-blended image from a face crop: (blended uint8, blend mask float32 (H, W) in [0, 1], label 1).

    ``landmarks`` are (68, 2) image pixels; ``None`` uses :func:`ellipse_landmarks`. The core is
    :func:`manipseg.generate.sbi.self_blend_core` with :func:`faces_preset`: the hull of
    :func:`landmark_transform` drawn after the augmentation, resized / translated about the landmarks' box
    centre by fractions of :func:`face_side`, which also scales the elastic warp and the blurs.
    """
    cfg = cfg or SBIConfig()
    h, w = image.shape[:2]
    if landmarks is None:
        landmarks = ellipse_landmarks(min(h, w))
    lo, hi = np.asarray(landmarks, np.float64).min(0), np.asarray(landmarks, np.float64).max(0)
    hull = partial(_random_hull, landmarks=landmarks, shape=(h, w), cfg=cfg)
    b = self_blend_core(rng, image, hull, faces_preset(cfg), centre=tuple((lo + hi) / 2), side=face_side(landmarks))
    return b.image, b.alpha, 1


def _random_hull(rng: np.random.Generator, landmarks: np.ndarray, shape: tuple[int, int], cfg: SBIConfig) -> np.ndarray:
    """Float32 (H, W) convex hull of :func:`landmark_transform` of ``landmarks``."""
    return face_hull_mask(landmark_transform(landmarks, rng, cfg), shape).astype(np.float32)


def color_transfer(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Match the Lab mean and std of ``source`` to ``target`` inside ``region`` (bool), whole image changed."""
    s = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    t = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    sm, ss = s[region].mean(0), s[region].std(0) + 1e-3
    tm, ts = t[region].mean(0), t[region].std(0) + 1e-3
    out = (s - sm) / ss * ts + tm
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def face_swap(target: np.ndarray, target_lm: np.ndarray | None, source: np.ndarray, source_lm: np.ndarray | None,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Blend the face of ``source`` (another person) onto ``target``: similarity-align the landmarks,
    colour-match inside the face hull, blend through the deformed, blurred hull of the target.
    Returns (swapped uint8 image of target's shape, blend mask float32, label 1)."""
    h, w = target.shape[:2]
    if target_lm is None or source_lm is None:
        target_lm = ellipse_landmarks(min(h, w))
        source_lm = ellipse_landmarks(min(source.shape[:2]))
    m, _ = cv2.estimateAffinePartial2D(np.asarray(source_lm, np.float32), np.asarray(target_lm, np.float32))
    if m is None:
        raise ValueError("cannot align the two faces' landmarks")
    warped = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    hull = face_hull_mask(target_lm, (h, w))
    warped = color_transfer(warped, target, hull)
    side = face_side(target_lm)
    deformed = elastic_deform(hull.astype(np.float32), rng, alpha=0.03 * side, sigma=0.08 * side).astype(np.float32)
    mask = blur_mask(deformed, rng, side)
    return to_uint8(blend(warped, target, mask)), mask, 1


PARTS = ("full", "upper", "lower")


def face_paste(target: np.ndarray, target_box: tuple[float, float, float, float], source: np.ndarray,
               source_box: tuple[float, float, float, float], feather: float = 0.0, colour_match: bool = False,
               part: str = "full") -> tuple[np.ndarray, np.ndarray, int]:
    """Another face pasted by its box, no landmark alignment: the ellipse inscribed in ``source``'s face box,
    resized to ``target``'s face box, pasted with a hard edge (``feather`` > 0: a Gaussian edge of that many
    pixels), its colours matched to the target's face in Lab (``colour_match``) or not; ``part`` "upper" /
    "lower" pastes only the part of the ellipse above 55 % / below 45 % of the box's height (eyes, mouth).
    Returns (image, mask float32 in [0, 1], label 1)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    h, w = target.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in target_box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ValueError(f"target face box {target_box} is too small or outside the image")
    sx0, sy0, sx1, sy1 = (int(round(v)) for v in source_box)
    sx0, sy0 = max(0, sx0), max(0, sy0)
    sx1, sy1 = min(source.shape[1], sx1), min(source.shape[0], sy1)
    if sx1 - sx0 < 8 or sy1 - sy0 < 8:
        raise ValueError(f"source face box {source_box} is too small or outside the image")
    patch = cv2.resize(source[sy0:sy1, sx0:sx1], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (((x0 + x1) / 2, (y0 + y1) / 2), ((x1 - x0) * 0.95, (y1 - y0) * 0.95), 0.0), 1.0, -1)
    if part == "upper":
        mask[int(round(y0 + 0.55 * (y1 - y0))):] = 0
    elif part == "lower":
        mask[:int(round(y0 + 0.45 * (y1 - y0)))] = 0
    placed = target.copy()
    placed[y0:y1, x0:x1] = patch
    if colour_match:
        placed = color_transfer(placed, target, mask > 0.5)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), float(feather))
    return to_uint8(blend(placed, target, mask)), mask, 1


def crude_paste(target: np.ndarray, target_box: tuple[float, float, float, float], source: np.ndarray,
                source_box: tuple[float, float, float, float], feather: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """The crude face paste anyone would spot: :func:`face_paste` of the whole ellipse, no colour matching."""
    return face_paste(target, target_box, source, source_box, feather=feather)
