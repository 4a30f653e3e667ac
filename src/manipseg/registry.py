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

from .calibration import attach
from .contract import Detector, load_config_file
from .names import Registry, UnknownNameError
from .paths import MODEL_FILE_SUFFIXES, bundled


class UnknownDetectorError(UnknownNameError):
    """A detector name nobody registered (a ``KeyError`` and a ``ValueError``): the message suggests the closest
    name and lists every known one."""


#: every named detector, as a lazy ``"module:Class"`` target (listing names imports no detector module); the
#: one-line summaries are written once, on the classes (``Detector.summary``)
DETECTORS = Registry("detector", cutoff=0.4, error=UnknownDetectorError)
#: the class that opens a trained weights file (``load_detector("model.safetensors")``), imported on first use
WEIGHTS_DETECTOR = "manipseg.models.gsr:GSRDetector"


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:ClassName"

    @property
    def summary(self) -> str:
        """The class's own one-line summary (imports its module; no detector module imports torch), or why the
        module cannot be imported (a listing shows every detector, importable or not)."""
        try:
            return str(get_class(self.name).summary)
        except (ImportError, AttributeError) as exc:
            return f"unavailable: cannot import {self.target} ({exc})"

    def load(self) -> type[Detector]:
        return get_class(self.name)


def register(name: str, summary: str = "") -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator registering a detector class defined outside the built-ins (``summary`` replaces the
    class's own)."""

    def deco(cls: type[Detector]) -> type[Detector]:
        cls.name = name
        if summary:
            cls.summary = summary
        same = name in DETECTORS and _qualified(DETECTORS.get(name)) == _qualified(cls)  # the module imported again
        DETECTORS.add(name, cls, replace=same)
        return cls

    return deco


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


def names() -> list[str]:
    return DETECTORS.names()


def entries() -> list[Entry]:
    return [Entry(n, DETECTORS.target(n) or _qualified(DETECTORS.get(n))) for n in names()]


def get_class(name: str) -> type[Detector]:
    return DETECTORS.get(name)  # type: ignore[return-value]


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
    if name_or_path is None:
        name_or_path = default_model()
    name_or_path = str(name_or_path)
    det = _load_detector(name_or_path, device)
    attach(det, name_or_path)
    return det


def _load_detector(name_or_path: str, device: str) -> Detector:
    if name_or_path in DETECTORS:
        return create(name_or_path, device=device)
    path = Path(name_or_path)
    if path.suffix.lower() in MODEL_FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        if path.suffix.lower() == ".safetensors":
            module, _, cls = WEIGHTS_DETECTOR.partition(":")
            return getattr(importlib.import_module(module), cls).from_weights(path, device=device)
        config = load_config_file(path)
        name = config.get("name")
        if not name:
            raise ValueError(f"{path}: a detector config needs a 'name' key naming a registered detector")
        return get_class(str(name)).from_config(config, device=device)
    raise DETECTORS.unknown(name_or_path)


# -- built-in detectors (summaries: on each class) ----------------------------------------------
for _name, _target in (("noi", "manipseg.models.classical.noi:NOIDetector"),
                       ("cfa", "manipseg.models.classical.cfa:CFADetector"),
                       ("ela", "manipseg.models.classical.ela:ELADetector"),
                       ("gsr-compact", "manipseg.models.gsr:GSRCompactDetector"),
                       ("gsr-vgg16", "manipseg.models.gsr:GSRVGG16Detector"),
                       ("copymove", "manipseg.models.copymove:CopyMoveDetector"),
                       ("fused", "manipseg.models.fused:FusedDetector"),
                       ("gsr-fused", "manipseg.models.fused:GSRFusedDetector"),
                       ("gsr-fused-vgg16", "manipseg.models.fused:GSRFusedVGG16Detector")):
    DETECTORS.add(_name, target=_target)


#: the zero-training fallback used when no trained model is bundled.
FALLBACK_MODEL = "noi"
#: learned detectors in order of preference, each with the bundled weights it needs; the first whose
#: weights ship in the package is the default.
PREFERRED_MODELS = (("gsr-fused", "gsr-vgg16"), ("gsr-compact", "gsr-compact"))


def bundled_weights(name: str) -> Path | None:
    """The trained weights file shipped in the package for detector ``name``, if there is one."""
    return bundled(f"{name}.safetensors")


def default_model() -> str:
    """The best detector this install can run without any download."""
    for name, weights in PREFERRED_MODELS:
        if name in DETECTORS and bundled_weights(weights) is not None:
            return name
    return FALLBACK_MODEL


#: detector used by ``manipseg predict`` and ``manipseg serve`` when no model is named.
DEFAULT_MODEL = default_model()
