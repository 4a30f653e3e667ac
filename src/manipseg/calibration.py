"""Image-level decisions calibrated on authentic photos: a verdict a user can trust.

A detector's image score (``Prediction.score``) is a statistic, not a probability. To turn it into a
decision, :func:`calibrate` scores authentic photos never used in training and sets the decision threshold
at a stated false-alarm rate (default 5 %): at most that share of authentic photos reach it. A second,
lower threshold (default: 25 % false alarms) separates "no clear sign" from "inconclusive":

- score >= ``threshold``           -> "likely manipulated"  (at most ``false_alarm_rate`` of authentic photos)
- ``low_threshold`` <= score < ...  -> "inconclusive"
- score < ``low_threshold``         -> "no clear sign"

The calibration is stored as JSON beside the weights (``<weights stem>.calibration.json``, or
``weights/<detector name>.calibration.json`` for the bundled detectors) with the photos it came from and the
false-alarm rates measured on *other* authentic photos (never the calibration images themselves).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .header import WeightsError, read_header
from .io import atomic_write
from .paths import MODEL_FILE_SUFFIXES, shipped

VERDICTS = ("likely manipulated", "inconclusive", "no clear sign")
#: used when a detector has no calibration: its pixel threshold decides, and the verdict says so
UNCALIBRATED = "uncalibrated"


class CalibrationError(ValueError):
    """A calibration file or request that cannot be used; the message names the file and the problem."""


@dataclass
class Calibration:
    detector: str
    threshold: float                  # score >= threshold: "likely manipulated"
    low_threshold: float              # score < low_threshold: "no clear sign"; between: "inconclusive"
    false_alarm_rate: float           # target share of authentic photos at or above ``threshold``
    inconclusive_rate: float          # target share of authentic photos at or above ``low_threshold``
    n_images: int                     # authentic photos the thresholds were set on
    sources: list[str] = field(default_factory=list)
    weights_sha256: str | None = None
    #: false-alarm rates measured on other authentic sets: {name: {"n": N, "flagged": rate, "inconclusive": rate}}
    measured: dict[str, dict[str, float]] = field(default_factory=dict)
    #: None: ``threshold`` lets ``floor(false_alarm_rate * n_images)`` calibration photos through; else the
    #: confidence at which ``false_alarm_rate`` is an upper bound (one-sided Clopper-Pearson)
    confidence: float | None = None
    #: the working size of the detector's network when the scores were measured ({"min_side", "max_side"}; None
    #: for detectors without one, and in files written before it was recorded): scores change with it
    working_size: dict[str, int | None] | None = None
    #: the network's arithmetic when the scores were measured: "int8" (the quantised graph) or "fp32" (None:
    #: detectors without a network, and files written before it was recorded): scores change with it
    precision: str | None = None

    def verdict(self, score: float) -> str:
        if score >= self.threshold:
            return VERDICTS[0]
        if score >= self.low_threshold:
            return VERDICTS[1]
        return VERDICTS[2]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"calibration file not found: {p}") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"{p}: not a readable calibration file ({exc})") from None
        if not isinstance(data, dict):
            raise CalibrationError(f"{p}: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        missing = {"detector", "threshold", "low_threshold", "false_alarm_rate", "inconclusive_rate", "n_images"} - set(data)
        if missing:
            raise CalibrationError(f"{p}: missing {', '.join(sorted(missing))}")
        unknown = set(data) - known
        if unknown:
            raise CalibrationError(f"{p}: unknown keys {', '.join(sorted(unknown))}")
        cal = cls(**data)
        if cal.confidence is not None and not (isinstance(cal.confidence, (int, float)) and 0 < cal.confidence < 1):
            raise CalibrationError(f"{p}: confidence must be a number in (0, 1) or null, got {cal.confidence!r}")
        if not (0.0 <= cal.low_threshold <= cal.threshold <= 1.0):
            raise CalibrationError(f"{p}: thresholds must satisfy 0 <= low_threshold <= threshold <= 1, got "
                                   f"{cal.low_threshold} and {cal.threshold}")
        return cal


def allowed_false_alarms(n: int, rate: float, confidence: float | None = None) -> int:
    """How many of ``n`` calibration photos may reach the threshold. Without ``confidence``: ``floor(rate * n)``.
    With it, the largest ``k`` whose one-sided Clopper-Pearson upper bound on the false-alarm rate is at most
    ``rate`` at that confidence: the stated rate then holds, with that confidence, for other photos like the
    calibration ones, not only for these (n = 780, rate 0.05, confidence 0.95: k = 28, 3.6 % of them). Raises
    CalibrationError when ``n`` is too small for any such bound (59 photos at least for 5 % at 95 %)."""
    if confidence is None:
        return int(math.floor(rate * n + 1e-9))
    if not 0.0 < confidence < 1.0:
        raise CalibrationError(f"a confidence must be in (0, 1), got {confidence}")
    from scipy.stats import beta

    if beta.ppf(confidence, 1, n) > rate:  # even with none of them flagged the bound is above the rate
        need = math.ceil(math.log(1 - confidence) / math.log(1 - rate)) if 0 < rate < 1 else None
        raise CalibrationError(f"{n} photos are too few to bound the false-alarm rate at {100 * rate:g} % with "
                               f"{100 * confidence:g} % confidence" + (f" (at least {need} are needed)" if need else "")
                               + "; give more authentic photos, or no confidence (CLI: --confidence 0)")
    k = 0
    while k + 1 < n and beta.ppf(confidence, k + 2, n - k - 1) <= rate:
        k += 1
    return k


def threshold_at_rate(scores: Sequence[float], rate: float, confidence: float | None = None) -> float:
    """The lowest threshold ``t`` such that at most ``rate`` of ``scores`` are ``>= t`` (a decision
    "positive when score >= t"). With ``n`` scores, ``floor(rate * n)`` of them may reach it, or, with
    ``confidence``, as many as :func:`allowed_false_alarms` allows."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise CalibrationError("no scores to calibrate on")
    if not 0.0 <= rate < 1.0:
        raise CalibrationError(f"a false-alarm rate must be in [0, 1), got {rate}")
    k = allowed_false_alarms(s.size, rate, confidence)  # scores allowed at or above the threshold
    if k >= s.size:
        return 0.0
    return float(min(1.0, np.nextafter(s[k], np.inf)))  # just above the (k+1)-th highest score


def calibrate_scores(detector: str, scores: Sequence[float], rate: float = 0.05, inconclusive_rate: float = 0.25,
                     sources: Iterable[str] = (), weights_sha256: str | None = None,
                     confidence: float | None = None,
                     working_size: dict[str, int | None] | None = None, precision: str | None = None) -> Calibration:
    """Thresholds at ``rate`` ("likely manipulated") and ``inconclusive_rate`` of the authentic ``scores``; with
    ``confidence`` the "likely manipulated" threshold is set so the rate holds at that confidence
    (:func:`allowed_false_alarms`)."""
    if not rate <= inconclusive_rate:
        raise CalibrationError(f"the inconclusive rate ({inconclusive_rate}) must be at least the false-alarm rate ({rate})")
    hi = threshold_at_rate(scores, rate, confidence)
    lo = min(hi, threshold_at_rate(scores, inconclusive_rate))
    return Calibration(detector=detector, threshold=hi, low_threshold=lo, false_alarm_rate=float(rate),
                       inconclusive_rate=float(inconclusive_rate), n_images=len(scores), sources=list(sources),
                       weights_sha256=weights_sha256, confidence=confidence, working_size=working_size,
                       precision=precision)


def measure(cal: Calibration, scores: Sequence[float]) -> dict[str, float]:
    """The shares of ``scores`` (authentic photos) judged "likely manipulated" and at least "inconclusive"."""
    s = np.asarray(scores, dtype=np.float64)
    return {"n": int(s.size), "flagged": float(np.mean(s >= cal.threshold)) if s.size else float("nan"),
            "inconclusive_or_flagged": float(np.mean(s >= cal.low_threshold)) if s.size else float("nan")}


def sidecar_path(weights: str | os.PathLike) -> Path:
    """Where the calibration of a weights file lives: ``<stem>.calibration.json`` beside it."""
    p = Path(weights)
    return p.with_name(p.stem + ".calibration.json")


def bundled_path(name: str) -> Path:
    """Where the calibration of a bundled detector lives (``weights/<name>.calibration.json``)."""

    return shipped(f"{name}.calibration.json")


def find_calibration(name_or_path: str) -> Calibration | None:
    """The calibration that goes with a detector name, or a weights or detector-config file (beside it), if one
    exists."""
    p = Path(name_or_path)
    candidate = sidecar_path(p) if p.suffix.lower() in MODEL_FILE_SUFFIXES else bundled_path(name_or_path)
    return Calibration.load(candidate) if candidate.is_file() else None


def weights_of(detector) -> str | None:
    """The weights file a detector runs on (its own, or its artifact detector's), if any."""
    for d in (detector, getattr(detector, "artifact", None)):
        w = getattr(d, "config", {}).get("weights") if d is not None else None
        if w:
            return str(w)
    return None


def working_size_of(detector) -> dict[str, int | None] | None:
    """The working size (``min_side`` / ``max_side``) of the detector's network (its own, or its artifact
    detector's), if it has one."""
    for d in (detector, getattr(detector, "artifact", None)):
        if d is not None and hasattr(d, "min_side") and hasattr(d, "max_side"):
            return {"min_side": d.min_side, "max_side": d.max_side}
    return None


def precision_of(detector) -> str | None:
    """``"int8"`` when the detector's network (its own, or its artifact detector's) runs the quantised graph,
    ``"fp32"`` for another network runtime, None without a network."""
    for d in (detector, getattr(detector, "artifact", None)):
        runtime = getattr(d, "runtime", None) if d is not None else None
        if isinstance(runtime, str):
            return "int8" if runtime == "int8" else "fp32"
    return None


def weights_checksum(detector) -> str | None:
    """The recorded SHA-256 of the detector's weights (read from the file's header), if it has weights."""
    w = weights_of(detector)
    if w is None:
        return None

    try:
        return read_header(w).get("sha256")
    except WeightsError:
        return None


def attach(detector, name_or_path: str) -> None:
    """Give ``detector`` the calibration that goes with ``name_or_path`` (``detector.calibration``), unless it
    was made for other weights (then none, with a warning: calibrate again)."""

    cal = find_calibration(name_or_path)
    if cal is not None and cal.weights_sha256 and cal.weights_sha256 != weights_checksum(detector):
        logging.getLogger(__name__).warning(
            "the calibration of %s was made for other weights (run manipseg calibrate again); verdicts are "
            "uncalibrated", name_or_path)
        cal = None
    elif cal is not None and cal.working_size is not None and cal.working_size != working_size_of(detector):
        logging.getLogger(__name__).warning(
            "the calibration of %s was measured with the network's working size %s, the detector now uses %s (run "
            "manipseg calibrate again); verdicts are uncalibrated", name_or_path, cal.working_size,
            working_size_of(detector))
        cal = None
    elif cal is not None and cal.precision is not None and cal.precision != precision_of(detector):
        logging.getLogger(__name__).warning(
            "the calibration of %s was measured with the network in %s, the detector now runs it in %s (run "
            "manipseg calibrate again, or leave MANIPSEG_RUNTIME unset); verdicts are uncalibrated", name_or_path,
            cal.precision, precision_of(detector))
        cal = None
    detector.calibration = cal


def verdict_of(detector, score: float) -> dict[str, Any]:
    """The verdict fields of one image for ``detector`` (its ``calibration`` attribute, if any)."""
    cal: Calibration | None = getattr(detector, "calibration", None)
    if cal is None:
        flagged = score >= float(detector.threshold)
        return {"verdict": UNCALIBRATED, "manipulated": bool(flagged), "score_threshold": float(detector.threshold),
                "false_alarm_rate": None}
    v = cal.verdict(score)
    return {"verdict": v, "manipulated": v == VERDICTS[0], "score_threshold": cal.threshold,
            "low_threshold": cal.low_threshold, "false_alarm_rate": cal.false_alarm_rate,
            "confidence": cal.confidence}
