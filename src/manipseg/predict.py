"""Run a detector over many images and write, per image, at full resolution:

- ``<stem>.prob.png``    16-bit grayscale probability map (value = P(tampered) x 65535),
- ``<stem>.mask.png``    0/255 mask after post-processing (threshold, dilate, drop small components),
- ``<stem>.overlay.jpg`` heatmap over the photo with the mask outlined, for people,
- one JSON line per input in ``predictions.jsonl`` (the result, or the error).

A failed image is reported and skipped; every output is written atomically.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .contract import ContractError, Detector
from .io import DEFAULT_MAX_PIXELS, ImageLoadError, atomic_write, load_image, save_jpeg, save_png
from .postprocess import prob_to_mask
from .visualize import overlay

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "error" in r]

    @property
    def ok(self) -> bool:
        return not self.failed


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
                max_pixels: int | None = DEFAULT_MAX_PIXELS, dilate: int = 5) -> dict[str, Any]:
    t0 = time.perf_counter()
    image = load_image(path, max_pixels=max_pixels)
    pred = detector.predict(image)
    mask = prob_to_mask(pred.prob, threshold=threshold, dilate=dilate, min_region=detector.min_region)
    prob16 = np.clip(np.rint(pred.prob.astype(np.float64) * 65535.0), 0, 65535).astype(np.uint16)
    save_png(out_dir / f"{stem}.prob.png", prob16)
    save_png(out_dir / f"{stem}.mask.png", mask.astype(np.uint8) * 255)
    save_jpeg(out_dir / f"{stem}.overlay.jpg", overlay(image, pred.prob, mask), quality=90)
    h, w = image.shape[:2]
    return {
        "input": str(path),
        "stem": stem,
        "model": detector.name,
        "score": round(float(pred.score), 6),
        "threshold": float(threshold),
        "width": int(w),
        "height": int(h),
        "tampered_fraction": round(float(mask.mean()), 6),
        "seconds": round(time.perf_counter() - t0, 4),
    }


def run_batch(detector: Detector, files: Iterable[Path], out_dir: Path, threshold: float | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = True) -> BatchResult:
    """Predict every file; failures are recorded (``error`` key) and the batch goes on.

    ``predictions.jsonl`` is rewritten atomically after every image, so an interrupted batch leaves a
    valid file describing the images done so far.
    """
    from tqdm import tqdm

    files = list(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    thr = detector.threshold if threshold is None else float(threshold)
    stems = output_stems(files)
    result = BatchResult()
    jsonl = out_dir / "predictions.jsonl"
    bar = tqdm(files, unit="img", disable=not progress or len(files) < 2, desc=f"predict [{detector.name}]")
    for path in bar:
        try:
            record = predict_one(detector, path, out_dir, stems[path], thr, max_pixels=max_pixels)
        except ImageLoadError as exc:
            record = {"input": str(path), "model": detector.name, "error": str(exc)}
            log.error("skipped %s", exc)
        except (ContractError, ValueError, OSError, RuntimeError, MemoryError) as exc:
            # a detector or writer failure on one image must not lose the rest of the batch
            record = {"input": str(path), "model": detector.name, "error": f"{path}: {type(exc).__name__}: {exc}"}
            log.error("skipped %s: %s: %s", path, type(exc).__name__, exc)
        result.records.append(record)
        lines = "".join(json.dumps(r) + "\n" for r in result.records)
        atomic_write(jsonl, lambda tmp, text=lines: tmp.write_text(text, encoding="utf-8"))
    return result
