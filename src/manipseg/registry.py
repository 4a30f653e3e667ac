"""Registry of named detectors.

Built-in detectors are listed here by import path so that ``manipseg models`` and name look-ups do not
import torch or any heavy module. Third-party code can add detectors with :func:`register`.
An unknown name raises :class:`UnknownDetectorError`, which lists the known names and suggests the
closest one.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .contract import Detector
from .names import did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:ClassName"
    summary: str

    def load(self) -> type[Detector]:
        module_name, _, cls_name = self.target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)


_ENTRIES: dict[str, Entry] = {}


class UnknownDetectorError(KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        hint = did_you_mean(name, known, cutoff=0.4)
        self.message = f"unknown detector {name!r}.{hint} Known detectors: {', '.join(sorted(known))}."
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def add_entry(name: str, target: str, summary: str) -> None:
    if name in _ENTRIES and _ENTRIES[name].target != target:
        raise ValueError(f"detector name {name!r} is already registered to {_ENTRIES[name].target}")
    _ENTRIES[name] = Entry(name, target, summary)


def register(name: str, summary: str = "") -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator registering a detector class defined outside the built-ins."""

    def deco(cls: type[Detector]) -> type[Detector]:
        cls.name = name
        if summary:
            cls.summary = summary
        add_entry(name, f"{cls.__module__}:{cls.__qualname__}", summary or cls.summary)
        return cls

    return deco


def names() -> list[str]:
    return sorted(_ENTRIES)


def entries() -> list[Entry]:
    return [_ENTRIES[n] for n in names()]


def get_class(name: str) -> type[Detector]:
    try:
        entry = _ENTRIES[name]
    except KeyError:
        raise UnknownDetectorError(name, names()) from None
    return entry.load()


def create(name: str, device: str = "cpu", **config: Any) -> Detector:
    """Instantiate a registered detector by name (trained weights when the detector ships them)."""
    cls = get_class(name)
    if config:
        return cls.from_config(config, device=device)
    return cls.from_pretrained(device=device)


def load_detector(name_or_path: str | None = None, device: str = "cpu") -> Detector:
    """A registered name, or a path to trained weights (``.safetensors``) or a config (``.yaml``/``.json``);
    without a name, the default detector (:func:`default_model`). The detector's image-level calibration
    (:mod:`manipseg.calibration`), when one ships with it, is attached as ``detector.calibration``."""
    from .calibration import attach

    if name_or_path is None:
        name_or_path = default_model()
    name_or_path = str(name_or_path)
    det = _load_detector(name_or_path, device)
    attach(det, name_or_path)
    return det


def _load_detector(name_or_path: str, device: str) -> Detector:
    if name_or_path in _ENTRIES:
        return create(name_or_path, device=device)
    path = Path(name_or_path)
    if path.suffix.lower() in {".safetensors", ".yaml", ".yml", ".json"}:
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        from .contract import load_config_file

        if path.suffix.lower() == ".safetensors":
            from .models.gsr import GSRDetector  # torch only when the network runs in torch

            return GSRDetector.from_weights(path, device=device)
        config = load_config_file(path)
        name = config.get("name")
        if not name:
            raise ValueError(f"{path}: a detector config needs a 'name' key naming a registered detector")
        return get_class(str(name)).from_config(config, device=device)
    raise UnknownDetectorError(name_or_path, names())


# -- built-in detectors ------------------------------------------------------------------------
add_entry("noi", "manipseg.models.classical.noi:NOIDetector",
          "Noise-level inconsistency (Mahdian & Saic 2009): wavelet HH1 noise, block median estimator.")
add_entry("cfa", "manipseg.models.classical.cfa:CFADetector",
          "Demosaicing (CFA) trace inconsistency (Ferrara et al. 2012).")
add_entry("ela", "manipseg.models.classical.ela:ELADetector",
          "Error level analysis: difference to a JPEG re-compression.")
add_entry("gsr-compact", "manipseg.models.gsr:GSRCompactDetector",
          "GSR-Net scheme with the compact CPU network (boundary branch, SRM stem); trained weights bundled.")
add_entry("gsr-vgg16", "manipseg.models.gsr:GSRVGG16Detector",
          "GSR-Net (Zhou et al. 2020): DeepLab VGG-16 + ASPP + boundary branch from the HED init; weights bundled "
          "(the most accurate on real splices, slow).")
add_entry("copymove", "manipseg.models.copymove:CopyMoveDetector",
          "Copy-move: SIFT/g2NN self-matching, RANSAC transforms, dense ZNCC map of source and target.")
add_entry("fused", "manipseg.models.fused:FusedDetector",
          "Fusion: an artifact detector (default noi) + copy-move similarity; max or noisy-or of the maps.")
add_entry("gsr-fused", "manipseg.models.fused:GSRFusedDetector",
          "GSR compact network (bundled weights, see MODEL_CARD.md) + copy-move similarity, maps fused by max.")
add_entry("gsr-fused-vgg16", "manipseg.models.fused:GSRFusedVGG16Detector",
          "GSR-Net VGG-16 network (gsr-vgg16, bundled weights) + copy-move similarity, fused as gsr-fused: the "
          "accurate option, several times slower.")


#: the zero-training fallback used when no trained model is bundled.
FALLBACK_MODEL = "noi"
#: learned detectors in order of preference, each with the bundled weights it needs; the first whose
#: weights ship in the package is the default.
PREFERRED_MODELS = (("gsr-fused", "gsr-compact"), ("gsr-compact", "gsr-compact"))


def bundled_weights(name: str) -> Path | None:
    """The trained weights file shipped in the package for detector ``name``, if there is one."""
    from .paths import shipped

    path = shipped(f"{name}.safetensors")
    return path if path.is_file() else None


def default_model() -> str:
    """The best detector this install can run without any download."""
    for name, weights in PREFERRED_MODELS:
        if name in _ENTRIES and bundled_weights(weights) is not None:
            return name
    return FALLBACK_MODEL


#: detector used by ``manipseg predict`` and ``manipseg serve`` when no model is named.
DEFAULT_MODEL = default_model()
