#!/usr/bin/env python3
"""Independent re-computation of pixel F1 from written probability maps, with scikit-learn only.

Reads ``PROBS/<stem>.prob.png`` (16-bit, value = prob x 65535, as written by ``manipseg predict --out``
or ``manipseg evaluate --save-probs``) and the mask of the same stem in ``MASKS`` (any image format;
tampered where the brightest channel >= 128, or < 128 with ``--inverted``), and prints:

* best-dataset F1: the one threshold of the grid 0, 0.01, ..., 1 maximising the mean per-image F1
  (GSR-Net Table 1 protocol),
* mean best-per-image F1 on the same grid, and mean F1 at 0.5.

It shares no code with ``manipseg.eval.metrics``: per image, scikit-learn's ``precision_recall_curve``
gives precision and recall at every distinct probability; F1 at a grid threshold t is the F1 at the
smallest distinct probability >= t (the same predicted set ``prob >= t``), or 0 when no pixel reaches t.
Images whose mask is empty are skipped (as in manipseg's protocol). With ``--report report.json`` it
also prints the difference to manipseg's own figures.

Example:
    python scripts/check_f1_from_probs.py /tmp/eval-noi/probs ../shared/data/dev/noso/masks \
        --report /tmp/eval-noi/report.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_curve


def read_prob(path: Path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 2:
        raise ValueError(f"{path}: not a single-channel probability PNG")
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    return arr.astype(np.float64) / scale


def read_gt(path: Path, inverted: bool) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB")).max(axis=2)
    return arr < 128 if inverted else arr >= 128


def f1_on_grid(prob: np.ndarray, gt: np.ndarray, grid: np.ndarray) -> np.ndarray:
    precision, recall, thresholds = precision_recall_curve(gt.ravel(), prob.ravel())
    # thresholds ascending; precision[k], recall[k] belong to the predicted set prob >= thresholds[k]
    p, r = precision[:-1], recall[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    k = np.searchsorted(thresholds, grid, side="left")  # smallest distinct value >= t
    return np.where(k < len(thresholds), f1[np.minimum(k, len(thresholds) - 1)], 0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("probs", type=Path, help="folder of <stem>.prob.png files")
    ap.add_argument("masks", type=Path, help="folder of ground-truth masks named <stem>.<ext>")
    ap.add_argument("--inverted", action="store_true", help="masks are black = tampered (NIST16, DSO-1)")
    ap.add_argument("--thresholds", type=int, default=101, help="grid size (default 101: 0, 0.01, ..., 1)")
    ap.add_argument("--report", type=Path, help="manipseg report.json to compare with (clean run)")
    ap.add_argument("--spot-check", type=int, default=2,
                    help="re-check this many images at 3 thresholds with sklearn f1_score directly")
    args = ap.parse_args(argv)

    grid = np.linspace(0.0, 1.0, args.thresholds)
    masks = {p.stem: p for p in args.masks.iterdir() if p.is_file()}
    rows, names, skipped = [], [], []
    for prob_path in sorted(args.probs.glob("*.prob.png")):
        stem = prob_path.name[: -len(".prob.png")]
        if stem not in masks:
            skipped.append(f"{stem}: no mask")
            continue
        prob, gt = read_prob(prob_path), read_gt(masks[stem], args.inverted)
        if prob.shape != gt.shape:
            gt = cv2.resize(gt.astype(np.uint8), prob.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
        if not gt.any():
            skipped.append(f"{stem}: empty mask")
            continue
        curve = f1_on_grid(prob, gt, grid)
        if len(rows) < args.spot_check:
            for j in (10, args.thresholds // 2, args.thresholds - 11):
                direct = f1_score(gt.ravel(), prob.ravel() >= grid[j], zero_division=0)
                if abs(direct - curve[j]) > 1e-9:
                    print(f"internal check failed for {stem} at t={grid[j]}: {direct} vs {curve[j]}", file=sys.stderr)
                    return 1
        rows.append(curve)
        names.append(stem)
    if not rows:
        print("no image with both a probability map and a non-empty mask", file=sys.stderr)
        return 2
    curves = np.stack(rows)
    mean_curve = curves.mean(axis=0)
    j = int(np.argmax(mean_curve))
    half = int(np.argmin(np.abs(grid - 0.5)))
    figures = {"best_dataset_f1": float(mean_curve[j]), "best_dataset_threshold": float(grid[j]),
               "best_image_f1": float(curves.max(axis=1).mean()), "f1_at_0.5": float(mean_curve[half])}
    print(f"{len(rows)} images scored" + (f", {len(skipped)} skipped ({'; '.join(skipped)})" if skipped else ""))
    for k, v in figures.items():
        print(f"{k:<24} {v:.4f}")
    if args.report:
        det = json.loads(args.report.read_text())["runs"]["clean"]["detector"]["protocols"]
        ours = {"best_dataset_f1": det["best_dataset"]["f1"], "best_image_f1": det["best_image"]["f1"],
                "f1_at_0.5": det["fixed_0.5"]["f1"]}
        print("comparison with", args.report)
        worst = 0.0
        for k, v in ours.items():
            delta = v - figures[k]
            worst = max(worst, abs(delta))
            print(f"{k:<24} manipseg {v:.4f}  independent {figures[k]:.4f}  delta {delta:+.5f}")
        print(f"max |delta| = {worst:.5f} ({'within' if worst <= 0.005 else 'OUTSIDE'} ±0.005)")
        return 0 if worst <= 0.005 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
