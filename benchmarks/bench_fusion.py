"""The copy-move verifier and the fusion, measured on real forgeries and on authentic photos.

    python benchmarks/bench_fusion.py                                   # NoSo + MISD, sun-hays + MISD authentic
    python benchmarks/bench_fusion.py --authentic runs/repeated/collected runs/repeated/lookalike
    python benchmarks/bench_fusion.py --data ROOT --artifact gsr-compact --limit 50

Pixel level (NoSo: 18 real copy-moves; MISD: 200 real splices): best-dataset F1 / MCC and the mean per-image
F1 at the detector's own threshold (the mask a user gets) for the network alone (by default the one inside
``gsr-fused``: gsr-vgg16 on its 384-px view as the int8 graph), the copy-move branch with and without its
pixel-level verification (``min_agreement``) and without its residual pairs (``patch_agreement`` None), and
``gsr-fused`` with the mask following the copy (``artifact_weight_on_copy`` 0.5, the default) and without
(1.0). Each branch runs once per image; the fused variants reuse its outputs (same code path as
``FusedDetector``).

Image level: the share of authentic photos in which the copy-move branch verifies a copy (its score >= 0.5),
with and without verification, and the residual agreement of every candidate copy: true copies (NoSo
transforms whose target lies in the ground truth) against candidates in authentic photos.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from manipseg.contract import Detector, Prediction
from manipseg.eval.datasets import open_dataset
from manipseg.eval.metrics import Accumulator
from manipseg.io import IMAGE_SUFFIXES, load_image
from manipseg.models.copymove import CopyMoveDetector
from manipseg.models.fused import FusedDetector, GSRFusedDetector
from manipseg.paths import data_root
from manipseg.registry import load_detector


class Cached(Detector):
    """Runs ``inner`` once per image (keyed by the image's shape and a hash of all its bytes) and replays its output."""

    def __init__(self, inner: Detector) -> None:
        self.inner, self.name, self.threshold, self.min_region = inner, inner.name, inner.threshold, inner.min_region
        self.config, self.device, self._memo = {}, "cpu", {}

    def _predict(self, image: np.ndarray) -> Prediction:
        key = (image.shape, image.dtype.str, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest())
        if key not in self._memo:
            self._memo = {key: self.inner.predict(image)}  # one image at a time: keep only the last
        return self._memo[key]


def pixel_figures(dataset: Path, detectors: dict[str, Detector], limit: int | None) -> dict[str, dict]:
    accs = {name: Accumulator(decision_threshold=d.threshold) for name, d in detectors.items()}
    ds = open_dataset(dataset)
    forged = [i for i, s in enumerate(ds.samples) if not s.authentic]
    for i in forged[:limit]:
        image, mask = ds.load(i)
        for name, det in detectors.items():
            p = det.predict(image)
            accs[name].add(ds.samples[i].name, p.prob, mask, p.score, False)
    out = {}
    for name, acc in accs.items():
        summary = acc.summary()
        out[name] = {"f1": summary["protocols"]["best_dataset"]["f1"], "mcc": summary["protocols"]["best_dataset"]["mcc"],
                     "own_f1": summary["own_threshold"]["f1"], "n": summary["n_scored"]}
    return out


def authentic_rates(folder: Path, on: CopyMoveDetector, off: CopyMoveDetector, limit: int | None) -> dict:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    flagged_on = flagged_off = 0
    agreements = []
    for f in files:
        p = off.predict(load_image(f))
        flagged_off += p.score >= off.threshold
        kept = [t for t in p.extras["transforms"] if t["agreement"] >= on.min_agreement]
        flagged_on += bool(kept)  # the same transforms, verified (no second SIFT pass)
        agreements += [t["agreement"] for t in p.extras["transforms"]]
    return {"n": len(files), "flagged_off": flagged_off / max(1, len(files)), "flagged_on": flagged_on / max(1, len(files)),
            "agreements": agreements}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="data root (default: $MANIPSEG_DATA or ../shared/data)")
    p.add_argument("--artifact", default="default",
                   help="the network of the fusion: a detector name or weights file, or 'default' for gsr-fused's own "
                        "(gsr-vgg16 on a 384-px view, int8)")
    p.add_argument("--sets", nargs="*", default=["dev/noso", "dev/misd"], help="forgery sets under the data root")
    p.add_argument("--authentic", nargs="*", default=None, metavar="DIR",
                   help="authentic folders (default: natural/sun-hays dev/misd/authentic under the data root)")
    p.add_argument("--limit", type=int, default=None, help="at most N images per set")
    args = p.parse_args(argv)
    root = data_root(args.data)
    net = Cached(GSRFusedDetector().artifact if args.artifact == "default" else load_detector(args.artifact))
    net.inner.boundary = False
    on, off = CopyMoveDetector(), CopyMoveDetector(min_agreement=-1.0)
    cm_on, cm_off = Cached(on), Cached(off)
    detectors = {
        "network alone": net, "copy-move, verified": cm_on, "copy-move, not verified": cm_off,
        "copy-move, verified, no residual pairs": Cached(CopyMoveDetector(patch_agreement=None)),
        "gsr-fused (mask follows the copy)": FusedDetector(artifact=net, similarity=cm_on),
        "gsr-fused, copy-move not verified": FusedDetector(artifact=net, similarity=cm_off),
        "gsr-fused (maps maxed, mask not following)": FusedDetector(artifact=net, similarity=cm_on,
                                                                    artifact_weight_on_copy=1.0),
    }
    for name in args.sets:
        res = pixel_figures(root / name, detectors, args.limit)
        print(f"\n{name} ({next(iter(res.values()))['n']} forgeries): best-dataset F1 / MCC, F1 at own threshold")
        for det, r in res.items():
            print(f"  {det:44s} {r['f1']:.3f} / {r['mcc']:.3f}   {r['own_f1']:.3f}", flush=True)
    folders = [Path(f) for f in args.authentic] if args.authentic is not None else \
        [root / "natural/sun-hays", root / "dev/misd/authentic"]
    print("\ncopy-move branch on authentic photos: share with a verified copy (without -> with verification)")
    for folder in folders:
        r = authentic_rates(folder, on, off, args.limit)
        a = np.asarray(r["agreements"])
        spread = f"candidates' agreement max {a.max():.2f}, median {np.median(a):.2f}" if len(a) else "no candidates"
        print(f"  {str(folder):44s} n={r['n']:4d}  {100 * r['flagged_off']:5.1f} % -> {100 * r['flagged_on']:5.1f} %   ({spread})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
