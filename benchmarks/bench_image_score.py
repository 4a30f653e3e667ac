"""Which statistic of a network's map separates forged from authentic photos best (image-level ROC AUC)?

    python benchmarks/bench_image_score.py --model gsr-compact
    MANIPSEG_RUNTIME=torch python benchmarks/bench_image_score.py --model gsr-vgg16
    python benchmarks/bench_image_score.py --model gsr-compact --forged DIR --authentic DIR

Each image's probability map is computed once; the AUC of each statistic (forgeries positive) is printed.
The networks' image score is ``top1%`` (the mean of the highest 1 % of the map, ``manipseg.models.tiling``).
Defaults: the 200 MISD forgeries against MISD's 200 authentic photos (evaluation data: a choice made here is a
model selection on real data, reported as such).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from manipseg.eval.metrics import roc_auc
from manipseg.io import IMAGE_SUFFIXES, load_image
from manipseg.models.tiling import image_score
from manipseg.paths import data_root
from manipseg.registry import load_detector


def statistics(threshold: float) -> dict:
    return {"top1%": image_score, "top0.1%": lambda p: image_score(p, 0.001), "top5%": lambda p: image_score(p, 0.05),
            "top20%": lambda p: image_score(p, 0.2), "mean": lambda p: float(p.mean()),
            "share >= threshold": lambda p: float((p >= threshold).mean()), "std": lambda p: float(p.std())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gsr-compact")
    p.add_argument("--data", default=None, help="data root (default: $MANIPSEG_DATA or ../shared/data)")
    p.add_argument("--forged", default=None, help="folder of forgeries (default: dev/misd/images)")
    p.add_argument("--authentic", default=None, help="folder of authentic photos (default: dev/misd/authentic)")
    args = p.parse_args(argv)
    root = data_root(args.data)
    det = load_detector(args.model)
    if hasattr(det, "boundary"):
        det.boundary = False
    stats = statistics(float(det.threshold))
    values: dict[str, list[float]] = {k: [] for k in stats}
    labels = []
    for label, folder in ((1, args.forged or root / "dev/misd/images"), (0, args.authentic or root / "dev/misd/authentic")):
        files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            prob = det.predict(load_image(f)).prob.astype(np.float32)
            labels.append(label)
            for k, fn in stats.items():
                values[k].append(fn(prob))
    print(f"{args.model}: {sum(labels)} forged, {len(labels) - sum(labels)} authentic; image-level ROC AUC")
    for k, v in values.items():
        print(f"  {k:20s} {roc_auc(np.asarray(labels), np.asarray(v)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
