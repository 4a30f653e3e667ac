"""Run a detector over many images and write, per image, at full resolution:

- ``<stem>.prob.png``    16-bit grayscale probability map (value = P(tampered) x 65535),
- ``<stem>.mask.png``    0/255 mask after post-processing (threshold, dilate, drop small components),
- ``<stem>.overlay.jpg`` heatmap over the photo with the mask outlined, for people,
- ``<stem>.thumb.jpg``   the overlay at most 320 pixels wide, for the report,
- one JSON line per input in ``predictions.jsonl`` (the result, or the error),
- ``index.sqlite`` and ``report.html`` over all of them (:mod:`manipseg.report`).

A failed image is reported and skipped; every output is written atomically. A result is identified by the
input's path and content hash, the detector, its weights' checksum and the thresholds, so ``resume`` keeps
exactly the results that a new run would reproduce.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .calibration import verdict_of
from .contract import ContractError, Detector
from .io import DEFAULT_MAX_PIXELS, ImageLoadError, atomic_write, is_output_file, load_image, save_jpeg, save_png
from .postprocess import prob_to_mask
from .visualize import overlay

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    written: set[str] = field(default_factory=set)   # names of the output files written by this run
    reused: int = 0                                   # results kept from an earlier run (``resume``)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "error" in r]

    @property
    def ok(self) -> bool:
        return not self.failed


class BatchInterrupted(Exception):
    """Ctrl-C or SIGTERM during a batch: the outputs of the images done so far are complete."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done}/{total} images")
        self.done, self.total = done, total


def stale_outputs(out_dir: Path) -> list[Path]:
    """manipseg output files already in ``out_dir`` (from an earlier run)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if p.is_file() and is_output_file(p))


OUTPUTS = (".prob.png", ".mask.png", ".overlay.jpg", ".thumb.jpg")


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _earlier_results(jsonl: Path, model: str, threshold: float, out_dir: Path,
                     weights: str | None = None) -> dict[str, dict[str, Any]]:
    """Successful records of an earlier run for this model, weights and threshold whose outputs all exist."""
    if not jsonl.is_file():
        return {}
    kept: dict[str, dict[str, Any]] = {}
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash of an old version: that image is simply analysed again
        if ("error" in r or r.get("model") != model or r.get("threshold") != float(threshold)
                or r.get("weights_sha256") != weights or "stem" not in r or "input" not in r):
            continue
        if all((out_dir / f"{r['stem']}{suffix}").is_file() for suffix in OUTPUTS):
            kept[r["input"]] = r
    return kept


def output_stems(files: list[Path]) -> dict[Path, str]:
    """Output stem per input; inputs sharing a stem (a.jpg, a.png, dir1/a.jpg) get ``a``, ``a-2``, ..."""
    stems: dict[Path, str] = {}
    used: set[str] = set()
    for f in files:
        stem, k = f.stem, 2
        while stem in used:
            stem = f"{f.stem}-{k}"
            k += 1
        used.add(stem)
        stems[f] = stem
    return stems


def predict_one(detector: Detector, path: Path, out_dir: Path, stem: str, threshold: float,
                max_pixels: int | None = DEFAULT_MAX_PIXELS, dilate: int = 5,
                weights: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    image = load_image(path, max_pixels=max_pixels)
    pred = detector.predict(image)
    verdict = verdict_of(detector, float(pred.score))
    mask = prob_to_mask(pred.prob, threshold=threshold, dilate=dilate, min_region=detector.min_region)
    note = None
    if verdict["verdict"] == "no clear sign" and mask.any():
        # the image-level decision says authentic: no regions are marked (the map is still written)
        mask = np.zeros_like(mask)
        note = "below the decision threshold: no mask"
    prob16 = np.clip(np.rint(pred.prob.astype(np.float64) * 65535.0), 0, 65535).astype(np.uint16)
    save_png(out_dir / f"{stem}.prob.png", prob16)
    save_png(out_dir / f"{stem}.mask.png", mask.astype(np.uint8) * 255)
    over = overlay(image, pred.prob, mask, legend=True, caption=caption(verdict, float(pred.score), detector.name))
    save_jpeg(out_dir / f"{stem}.overlay.jpg", over, quality=90)
    save_jpeg(out_dir / f"{stem}.thumb.jpg", thumbnail(over), quality=85)
    h, w = image.shape[:2]
    record = {
        "input": str(path),
        "sha256": file_sha256(path),
        "stem": stem,
        "model": detector.name,
        "weights_sha256": weights,
        "score": round(float(pred.score), 6),
        **verdict,
        "threshold": float(threshold),
        "width": int(w),
        "height": int(h),
        "tampered_fraction": round(float(mask.mean()), 6),
        "seconds": round(time.perf_counter() - t0, 4),
    }
    if note:
        record["mask_note"] = note
    return record


def thumbnail(rgb: np.ndarray, width: int = 320) -> np.ndarray:
    """``rgb`` shrunk (area averaging) to at most ``width`` pixels wide."""
    import cv2

    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def caption(verdict: dict[str, Any], score: float, model: str) -> str:
    """One line for people: the verdict, the score against its threshold, the false-alarm rate, the model."""
    if verdict.get("false_alarm_rate") is None:
        return f"score {score:.2f} (uncalibrated; mask at the pixel threshold) - {model}"
    return (f"{verdict['verdict']} - score {score:.2f} (flagged from {verdict['score_threshold']:.2f}, "
            f"{100 * verdict['false_alarm_rate']:.0f}% false alarms on authentic photos) - {model}")


def run_batch(detector: Detector, files: Iterable[Path], out_dir: Path, threshold: float | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = True,
              missing: Iterable[tuple[str, str]] = (), resume: bool = False) -> BatchResult:
    """Predict every file; failures are recorded (``error`` key) and the batch goes on.

    ``missing`` are inputs that matched no file (``(input, reason)``, from :func:`manipseg.io.list_images`):
    they are recorded as errors too, so ``predictions.jsonl`` accounts for every input. With ``resume``,
    images whose results for this detector and threshold are already complete in ``out_dir`` are kept, not
    analysed again. ``predictions.jsonl`` is rewritten atomically after every image, so an interrupted
    batch leaves a valid file describing the images done so far; Ctrl-C (or SIGTERM turned into
    ``KeyboardInterrupt``) raises :class:`BatchInterrupted` after that file is written.
    """
    from tqdm import tqdm

    files = list(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    thr = detector.threshold if threshold is None else float(threshold)
    stems = output_stems(files)
    result = BatchResult()
    jsonl = out_dir / "predictions.jsonl"
    from .calibration import weights_checksum
    from .report import write_index, write_report

    weights = weights_checksum(detector)
    earlier = _earlier_results(jsonl, detector.name, thr, out_dir, weights) if resume else {}
    for item, why in missing:
        result.records.append({"input": str(item), "model": detector.name, "error": f"{item}: {why}"})
    todo = []
    for path in files:
        r = earlier.get(str(path))
        if r is not None and r["stem"] == stems[path] and r.get("sha256") == file_sha256(path):
            result.records.append(r)
            result.reused += 1
        else:
            todo.append(path)

    def save_jsonl() -> None:
        lines = "".join(json.dumps(r) + "\n" for r in result.records)
        atomic_write(jsonl, lambda tmp, text=lines: tmp.write_text(text, encoding="utf-8"))

    def save_summaries() -> None:
        write_index(out_dir, result.records)
        write_report(out_dir, result.records)

    if not todo:
        save_jsonl()
        save_summaries()
        return result
    bar = tqdm(todo, unit="img", disable=not progress or len(todo) < 2, desc=f"predict [{detector.name}]")
    done = 0
    try:
        for path in bar:
            record = _predict_recorded(detector, path, out_dir, stems[path], thr, max_pixels, weights)
            result.records.append(record)
            if "error" not in record:
                result.written.update(f"{record['stem']}{s}" for s in OUTPUTS)
            save_jsonl()
            done += 1
            if done % 25 == 0:  # the index and report follow the batch without rewriting them per image
                save_summaries()
    except KeyboardInterrupt:
        bar.close()
        save_jsonl()
        save_summaries()
        raise BatchInterrupted(result.reused + done, len(files)) from None
    save_summaries()
    return result


def _predict_recorded(detector: Detector, path: Path, out_dir: Path, stem: str, thr: float,
                      max_pixels: int | None, weights: str | None = None) -> dict[str, Any]:
    """:func:`predict_one`, with a failure turned into an error record (the batch goes on)."""
    try:
        return predict_one(detector, path, out_dir, stem, thr, max_pixels=max_pixels, weights=weights)
    except ImageLoadError as exc:
        log.error("skipped %s", exc)
        return {"input": str(path), "model": detector.name, "error": str(exc)}
    except (ContractError, ValueError, OSError, RuntimeError, MemoryError) as exc:
        # a detector or writer failure on one image must not lose the rest of the batch
        log.error("skipped %s: %s: %s", path, type(exc).__name__, exc)
        return {"input": str(path), "model": detector.name, "error": f"{path}: {type(exc).__name__}: {exc}"}
