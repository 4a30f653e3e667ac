"""Cross-check manipseg's classical detectors against pyIFD (Python port of the Zampoglou toolbox).

pyIFD needs numpy < 2, so run this from a separate virtual environment, with manipseg on the path:

    python3 -m venv /tmp/pyifd-venv
    /tmp/pyifd-venv/bin/pip install "numpy<2" pyIFD scikit-learn pyyaml
    PYTHONPATH=src /tmp/pyifd-venv/bin/python scripts/compare_pyifd.py ../shared/data/dev/noso/images \
        --masks ../shared/data/dev/noso/masks --out /tmp/compare.json

Without pyIFD installed it still scores manipseg's own maps against the masks.

Per image and method it reports the Pearson and Spearman correlation of the two maps (both resized to
the image size with bilinear interpolation) and, with ``--masks``, each map's pixel ROC AUC. Pairs
compared like for like:

- ``noi``: pyIFD ``NOI1.GetNoiseMap`` (block noise sigma) vs our ``extras["raw"]`` (block noise sigma);
  AUCs are given for pyIFD's sigma, our sigma and our ``prob`` (two-sided inconsistency).
- ``cfa``: pyIFD ``CFA1.CFA1`` (posterior of tampering per 8x8 block) vs our ``prob``, with our
  no-CFA-traces check switched off (``min_separation=0``) since pyIFD has none.
- ``ela``: pyIFD ``ELA.ELA`` (15 x mean |image - JPEG90|, unsmoothed) vs our ``error_level(smooth=0)``
  (the same statistic) and vs our ``prob`` (smoothed, normalised).

``--synthetic-cfa`` adds a controlled CFA check where the lattice is known: skimage photos re-mosaiced
(Bayer BG) and demosaiced by OpenCV, with a resampled square pasted in the middle; pyIFD's ``CFAloc`` is
given the true green lattice and compared block by block with our ``prob``.

It also prints the dataset-level F1 of every map at the single best threshold over the dataset (each
map min-max normalised per image first, as the toolbox's evaluations do; our ``prob`` is used as is)
next to the trivial all-tampered baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import pearsonr, spearmanr

from manipseg.io import list_images, load_image, load_mask
from manipseg.models.classical.cfa import CFADetector
from manipseg.models.classical.ela import ELADetector, error_level
from manipseg.models.classical.noi import NOIDetector

N_THRESHOLDS = 101


def to_size(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(np.asarray(arr, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros_like(arr) if hi - lo < 1e-12 else (arr - lo) / (hi - lo)


def correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return {"pearson": float("nan"), "spearman": float("nan")}
    # Spearman on a regular subsample: rank correlation of a million pixels adds nothing but time
    step = max(1, a.size // 200_000)
    return {"pearson": float(pearsonr(a, b)[0]), "spearman": float(spearmanr(a[::step], b[::step])[0])}


def pixel_auc(score: np.ndarray, mask: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if mask.all() or not mask.any():
        return float("nan")
    return float(roc_auc_score(mask.ravel(), score.ravel()))


def f1_counts(prob01: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(tp, fp, fn) of ``prob >= t`` for each of N_THRESHOLDS thresholds t in [0, 1]."""
    bins = np.clip(np.floor(prob01 * (N_THRESHOLDS - 1) + 1e-9).astype(int), 0, N_THRESHOLDS - 1)
    pos = np.bincount(bins[mask], minlength=N_THRESHOLDS)
    neg = np.bincount(bins[~mask], minlength=N_THRESHOLDS)
    tp = np.cumsum(pos[::-1])[::-1]  # pixels with bin >= k
    fp = np.cumsum(neg[::-1])[::-1]
    fn = mask.sum() - tp
    return np.stack([tp, fp, fn])


def best_dataset_f1(per_image_counts: list[np.ndarray]) -> tuple[float, float]:
    """Mean per-image F1 at the threshold that maximises it over the dataset; returns (F1, threshold)."""
    f1 = []
    for tp, fp, fn in per_image_counts:
        denom = 2 * tp + fp + fn
        f1.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
    mean_f1 = np.mean(f1, axis=0)
    k = int(np.argmax(mean_f1))
    return float(mean_f1[k]), k / (N_THRESHOLDS - 1)


def run_pyifd(method: str, path: Path, workdir: Path) -> np.ndarray:
    if method == "noi":
        from pyIFD.NOI1 import GetNoiseMap

        return GetNoiseMap(str(path))
    if method == "cfa":
        from pyIFD.CFA1 import CFA1

        return CFA1(str(path))
    from pyIFD.ELA import ELA

    cwd = os.getcwd()
    os.chdir(workdir)  # pyIFD's ELA writes and deletes 'tmpResave.jpg' in the working directory
    try:
        return ELA(str(path.resolve()))
    finally:
        os.chdir(cwd)


def run_ours(method: str, image: np.ndarray) -> dict[str, np.ndarray]:
    h, w = image.shape[:2]
    if method == "noi":
        pred = NOIDetector().predict(image)
        return {"prob": pred.prob, "raw": to_size(pred.extras["raw"], h, w)}
    if method == "cfa":
        return {"prob": CFADetector(min_separation=0.0).predict(image).prob}
    return {"prob": ELADetector().predict(image).prob, "raw": error_level(image, 90, smooth=0)}


def synthetic_cfa_check() -> None:
    """Block-level agreement of our CFA map with pyIFD's CFAloc on images with known Bayer traces."""
    from pyIFD.CFA1 import CFAloc
    from skimage import data

    print("synthetic CFA check (Bayer BG re-mosaic + OpenCV demosaic, resampled square pasted)")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        rgb = getattr(data, name)()
        h, w = (rgb.shape[0] // 8) * 8, (rgb.shape[1] // 8) * 8
        rgb = np.ascontiguousarray(rgb[:h, :w])
        mosaic = np.zeros((h, w), np.uint8)
        for (dy, dx), c in zip([(0, 0), (0, 1), (1, 0), (1, 1)], (2, 1, 1, 0)):
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, c]
        forged = cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB)
        mask = np.zeros((h, w), bool)
        mask[h // 3:2 * h // 3, w // 3:2 * w // 3] = True
        resampled = cv2.resize(cv2.resize(rgb, (w // 2, h // 2)), (w, h))
        forged[mask] = resampled[mask]
        ref = np.nan_to_num(CFAloc(forged.astype(np.float64), np.array([[0, 1], [1, 0]])))
        ours = CFADetector(min_separation=0.0).predict(forged).prob
        ours_blocks = cv2.resize(ours, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_AREA)
        corr = correlations(ref, ours_blocks)
        print(f"  {name:<10} block pearson {corr['pearson']:.3f} spearman {corr['spearman']:.3f}  "
              f"AUC ours {pixel_auc(ours, mask):.3f} pyIFD {pixel_auc(to_size(ref, h, w), mask):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", help="folder of images")
    parser.add_argument("--masks", help="folder of masks matched by file stem (255 = tampered)")
    parser.add_argument("--methods", nargs="+", default=["noi", "cfa", "ela"], choices=["noi", "cfa", "ela"])
    parser.add_argument("--no-pyifd", action="store_true", help="score only manipseg's maps")
    parser.add_argument("--out", help="write per-image figures as JSON here")
    parser.add_argument("--synthetic-cfa", action="store_true", help="also run the controlled CFA check")
    args = parser.parse_args(argv)

    use_pyifd = not args.no_pyifd
    if use_pyifd:
        try:
            import pyIFD  # noqa: F401
        except ImportError as exc:
            print(f"pyIFD is not importable ({exc}); scoring manipseg's maps only", file=sys.stderr)
            use_pyifd = False

    if args.synthetic_cfa:
        if use_pyifd:
            synthetic_cfa_check()
        else:
            print("--synthetic-cfa needs pyIFD; skipped", file=sys.stderr)

    paths, problems = list_images([args.images])
    for problem in problems:
        print(problem, file=sys.stderr)
    if not paths:
        print(f"no images found in {args.images}", file=sys.stderr)
        return 2
    mask_dir = Path(args.masks) if args.masks else None
    rows: list[dict] = []
    counts: dict[str, list[np.ndarray]] = {}
    baseline: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            image = load_image(path)
            h, w = image.shape[:2]
            mask = None
            if mask_dir is not None:
                candidates = [p for p in mask_dir.glob(path.stem + ".*")]
                if not candidates:
                    print(f"{path.name}: no mask in {mask_dir}, skipped", file=sys.stderr)
                    continue
                mask = load_mask(candidates[0])
                if mask.shape != (h, w):
                    mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                baseline.append(f1_counts(np.ones((h, w)), mask))
            for method in args.methods:
                row: dict = {"image": path.name, "method": method}
                t0 = time.perf_counter()
                ours = run_ours(method, image)
                row["ours_seconds"] = time.perf_counter() - t0
                maps = {f"ours_{k}": v for k, v in ours.items()}
                if use_pyifd:
                    t0 = time.perf_counter()
                    ref = np.nan_to_num(np.asarray(run_pyifd(method, path, Path(tmp)), dtype=np.float64))
                    row["pyifd_seconds"] = time.perf_counter() - t0
                    maps["pyifd"] = to_size(ref, h, w)
                    row.update({f"corr_{k}_{m}": v for k in ours for m, v in
                                correlations(maps["pyifd"], maps[f"ours_{k}"]).items()})
                if mask is not None:
                    for name, m in maps.items():
                        row[f"auc_{name}"] = pixel_auc(m, mask)
                        prob01 = m if name == "ours_prob" else minmax(m)
                        counts.setdefault(f"{method}:{name}", []).append(f1_counts(prob01, mask))
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)

    print("\nmeans over images")
    for method in args.methods:
        sel = [r for r in rows if r["method"] == method]
        keys = sorted({k for r in sel for k in r if k.startswith(("corr_", "auc_", "ours_sec", "pyifd_sec"))})
        for k in keys:
            vals = np.array([r[k] for r in sel if k in r], dtype=float)
            print(f"  {method:<4} {k:<28} {np.nanmean(vals):.4f}  (n={np.isfinite(vals).sum()})")
    if counts:
        f1, t = best_dataset_f1(baseline)
        print(f"\nbest-dataset-threshold mean F1 (all-tampered baseline {f1:.4f})")
        for key, c in counts.items():
            f1, t = best_dataset_f1(c)
            print(f"  {key:<18} F1 {f1:.4f} at threshold {t:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
