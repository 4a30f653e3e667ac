"""Every knob of the generator in one dataclass, so a run is described (and reproduced) by its config."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..names import GENERATION_KINDS as KINDS  # noqa: F401 - the generator's kinds, one list

#: SBI's blend ratios (Shiohara & Yamasaki): r in {0.25, 0.5, 0.75, 1, 1, 1}, drawn uniformly (1 half the time)
BLEND_RATIOS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


@dataclass
class PostConfig:
    """Post-processing applied after any manipulation (identically to the image, target and source).

    Each step fires with its probability; the chain order is resize, blur, noise, JPEG.
    """

    enabled: bool = True
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    resize_prob: float = 0.2
    resize_scale: tuple[float, float] = (0.5, 0.9)  # down-sample by this factor, then back up
    blur_prob: float = 0.15
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_prob: float = 0.15
    noise_sigma: tuple[float, float] = (1.0, 4.0)  # Gaussian noise std in 8-bit levels


@dataclass
class HistoryConfig:
    """Per-photo capture history (each source and the target draw their own)."""

    jpeg_prob: float = 0.8
    jpeg_quality: tuple[int, int] = (55, 100)
    #: probability that the photo's 8x8 grid does not start at its top-left pixel (cropped before pasting)
    grid_shift_prob: float = 0.75
    blur_prob: float = 0.25
    blur_sigma: tuple[float, float] = (0.4, 1.4)
    sharpen_prob: float = 0.15
    sharpen_amount: tuple[float, float] = (0.3, 1.2)
    noise_prob: float = 0.3
    noise_sigma: tuple[float, float] = (0.5, 4.0)
    #: resampling of the photo before its JPEG (cameras and editors resize): factor down then back up
    resample_prob: float = 0.25
    resample_scale: tuple[float, float] = (0.5, 0.95)


@dataclass
class GenConfig:
    """Parameters of region sampling and of each manipulation kind.

    Areas are fractions of the image. Ranges are inclusive ``(low, high)`` pairs sampled uniformly.
    """

    # which pixels of a photo a sample uses: fitted (shorter side = size, centre crop) or, with probability
    # crop_prob, a random window at a scale drawn from crop_scales (1.0 = native pixels, keeping the camera
    # noise and JPEG block grid a detector meets in real photos; the window never exceeds the photo)
    crop_prob: float = 0.0
    crop_scales: tuple[float, ...] = (1.0, 1.0, 0.75, 0.5)
    # regions
    region_area: tuple[float, float] = (0.01, 0.30)
    region_count: tuple[int, int] = (1, 2)
    #: relative weights of region sources; "object" uses annotated objects/segments when the image has them
    region_weights: dict[str, float] = field(default_factory=lambda: {
        "object": 3.0, "polygon": 1.0, "ellipse": 1.0, "blob": 1.0})
    elastic_prob: float = 0.3
    elastic_alpha: tuple[float, float] = (4.0, 12.0)  # displacement amplitude in pixels
    elastic_sigma: tuple[float, float] = (6.0, 14.0)  # smoothness of the displacement field
    boundary_width: int = 5
    # splice / enhance / poisson geometry
    jitter_scale: tuple[float, float] = (0.7, 1.3)
    jitter_rotate: float = 20.0  # degrees, symmetric
    flip_prob: float = 0.5
    # copy-move: minimum displacement as a fraction of the region's size
    copymove_min_shift: float = 0.5
    copymove_scale: tuple[float, float] = (0.8, 1.2)
    copymove_rotate: float = 30.0
    #: also mark the copied-from region in K, like NoSo / CoMoFoD ground truth (its pixels are unchanged)
    copymove_mask_source: bool = False
    # poisson
    poisson_mixed_prob: float = 0.3
    # removal: inpainting fills small holes plausibly, large ones become smears, so regions are smaller
    removal_area: tuple[float, float] = (0.005, 0.12)
    removal_dilate: tuple[int, int] = (3, 9)
    removal_methods: dict[str, float] = field(default_factory=lambda: {"telea": 1.0, "ns": 1.0, "exemplar": 2.0})
    inpaint_radius: tuple[int, int] = (3, 7)
    # enhance
    enhance_strength: tuple[float, float] = (0.6, 1.0)
    # self-blending
    sbi_alpha_threshold: float = 0.1  # K = blend alpha >= this
    sbi_blend_ratios: tuple[float, ...] = BLEND_RATIOS
    sbi_kernel: tuple[int, int] = (5, 25)  # odd Gaussian kernel sizes at 256 px (scaled with the image)
    sbi_scale: tuple[float, float] = (0.95, 1.05)
    sbi_shift: float = 0.03  # fraction of the image size
    # composite: objects cut from other photos, each with its own capture history (kind "composite")
    composite_objects: tuple[int, int] = (1, 4)      # pasted objects per image, each from another photo
    composite_area: tuple[float, float] = (0.005, 0.15)  # area of each pasted object (fraction of the image)
    #: edge treatment of each pasted object: hard cut, feathered (Gaussian alpha), halo (the cut-out keeps a
    #: rim of its own background)
    composite_edges: dict[str, float] = field(default_factory=lambda: {"hard": 1.0, "feather": 1.0, "halo": 0.5})
    composite_feather: tuple[float, float] = (0.5, 2.0)  # sigma of the feathered alpha, pixels at 256 px
    composite_halo: tuple[int, int] = (1, 3)             # rim width, pixels at 256 px
    composite_harmonise_prob: float = 0.5                # colour/light matched to the paste site (Reinhard)
    composite_harmonise: tuple[float, float] = (0.3, 1.0)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    post: PostConfig = field(default_factory=PostConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "GenConfig":
        """Build from a (possibly partial, possibly YAML-loaded) dict; unknown keys are an error."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown generator config keys: {sorted(unknown)}; known: {sorted(known)}")
        post = data.pop("post", None)
        history = data.pop("history", None)
        cfg = cls(**_tuples(data))
        if post is not None:
            cfg.post = _section(PostConfig, post, "post-processing")
        if history is not None:
            cfg.history = _section(HistoryConfig, history, "history")
        return cfg


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}


def _section(cls, value, label: str):
    """A nested settings dataclass from an instance or a (partial) dict; unknown keys are an error."""
    if isinstance(value, cls):
        return value
    known = {f.name for f in fields(cls)}
    bad = set(value) - known
    if bad:
        raise ValueError(f"unknown {label} keys: {sorted(bad)}; known: {sorted(known)}")
    return cls(**_tuples(value))


def as_config(config: "GenConfig | dict | None") -> GenConfig:
    if config is None:
        return GenConfig()
    if isinstance(config, GenConfig):
        return config
    if isinstance(config, dict):
        return GenConfig.from_dict(config)
    raise TypeError(f"config must be a GenConfig, a dict or None, not {type(config).__name__}")
