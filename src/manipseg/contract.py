"""The one predictor contract every detector implements.

A detector takes an RGB image (``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``) and returns a
:class:`Prediction`: a per-pixel probability map of the same height and width, float32 in ``[0, 1]``
(``P(pixel was manipulated)``), an image-level score in ``[0, 1]`` and a free-form ``extras`` dict
(e.g. the boundary map of GSR-Net, timings, intermediate maps).

Subclasses implement :meth:`Detector._predict`; :meth:`Detector.predict` validates the input and the
output so that every detector, classical or learned, honours the same contract.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import yaml


class ContractError(ValueError):
    """An image or a prediction that does not satisfy the predictor contract."""


@dataclass
class Prediction:
    """What every detector returns.

    prob:   float32 (H, W) array in [0, 1], probability that each pixel was manipulated.
    score:  image-level score in [0, 1] (probability that the image was manipulated at all).
    extras: detector-specific outputs (boundary map, raw statistic, timings...).
    """

    prob: np.ndarray
    score: float
    extras: dict[str, Any] = field(default_factory=dict)

    def validate(self, height: int, width: int) -> "Prediction":
        prob = np.asarray(self.prob)
        if prob.shape != (height, width):
            raise ContractError(f"prediction map has shape {prob.shape}, expected {(height, width)}")
        if prob.dtype != np.float32:
            prob = prob.astype(np.float32)
        if not np.all(np.isfinite(prob)):
            raise ContractError("prediction map contains NaN or infinite values")
        if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
            raise ContractError(f"prediction map outside [0, 1]: [{prob.min()}, {prob.max()}]")
        score = float(self.score)
        if not (0.0 <= score <= 1.0):
            raise ContractError(f"image score {score} outside [0, 1]")
        self.prob = prob
        self.score = score
        return self


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate a contract input image: (H, W, 3) uint8, at least 8x8 pixels."""
    if not isinstance(image, np.ndarray):
        raise ContractError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ContractError(f"image must have shape (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        raise ContractError(f"image must be uint8, got {image.dtype}; load it with manipseg.io.load_image")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ContractError(f"image of {image.shape[1]}x{image.shape[0]} pixels is too small (minimum 8x8)")
    return np.ascontiguousarray(image)


class Detector(ABC):
    """Base class of every detector.

    Class attributes:
      name:        registry name.
      summary:     one line shown by ``manipseg models``.
      threshold:   default decision threshold on ``prob`` used by ``manipseg predict``.
      min_region:  connected components smaller than this fraction of the image are dropped from masks.
      calibration: a :class:`manipseg.calibration.Calibration` (image-level verdict thresholds) or None.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    threshold: float = 0.5
    min_region: float = 0.001
    #: image-level decision thresholds set on authentic photos (manipseg.calibration), attached by
    #: ``registry.load_detector`` when one ships with the detector; None = uncalibrated
    calibration: Any = None

    def __init__(self, device: str = "cpu", **config: Any) -> None:
        self.device = str(device)
        self.config = dict(config)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | Path, device: str = "cpu") -> "Detector":
        """Build from a mapping or a JSON/YAML file of constructor keyword arguments."""
        if isinstance(config, (str, Path)):
            config = load_config_file(Path(config))
        config = dict(config)
        config.pop("name", None)
        return cls(device=device, **config)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu") -> "Detector":
        """Build with trained weights. Classical detectors have none, so this equals the default."""
        if path is not None:
            raise ContractError(f"detector {cls.name!r} has no trained weights; got {path}")
        return cls(device=device)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether :meth:`from_pretrained` can build this detector from what is installed, and why not.
        Detectors that need trained weights override this (without loading anything)."""
        return True, ""

    @classmethod
    def default_threshold(cls) -> float:
        """The threshold a default-built detector uses (weights may store their own; read, not loaded)."""
        return float(cls.threshold)

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, image: np.ndarray) -> Prediction:
        image = check_image(image)
        pred = self._predict(image)
        return pred.validate(image.shape[0], image.shape[1])

    @abstractmethod
    def _predict(self, image: np.ndarray) -> Prediction:
        """Detector-specific prediction on a validated (H, W, 3) uint8 image."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r})"


def load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ContractError(f"{path}: expected a mapping of options at the top level")
    return data


def robust_normalise(stat: np.ndarray, lo_q: float = 50.0, hi_q: float = 99.5) -> np.ndarray:
    """Map a raw per-pixel statistic to [0, 1]: the median maps to 0, a high quantile to 1.

    Used by classical detectors whose output is not a calibrated probability. Constant inputs map to 0.
    """
    stat = np.asarray(stat, dtype=np.float64)
    lo, hi = np.percentile(stat, [lo_q, hi_q])
    if not np.isfinite(hi - lo) or hi - lo <= 1e-12:
        return np.zeros(stat.shape, dtype=np.float32)
    return np.clip((stat - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
