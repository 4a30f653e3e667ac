"""Calibrate the faces' photo cue on the real faces of people never trained on.

    python -m manipseg.faces.calibrate --config configs/faces/faces-paste.yaml \\
        --out src/manipseg/weights/faces-adapgrnet.calibration.json

The photo cue (:mod:`manipseg.faces.infer`) is the default photo network's evidence inside a face's box. Its
threshold is set on the *validation* split of the face model's training config — whole Caltech identities and
photos of the extra face folders that training never used, the faces the classifier's own threshold was set
on — so that the decision "fake when either the classifier or the cue says so" flags at most ``rate`` (5 %) of
those real faces: the classifier keeps its threshold, the cue gets the lowest threshold that keeps the
union within the rate. The held-out test identities of ``benchmarks/bench_faces.py`` are never looked at.
The file records the face weights' checksum (another model's calibration is not used), the cue network's
precision, the rate and what was measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, load_image
from .infer import FaceAnalyzer, bundled_weights, calibration_path, decision_score, DECISION


def real_face_evidence(an: FaceAnalyzer, photos: list[Path], centres: list[tuple[float, float]]) -> np.ndarray:
    """(n, 2): the classifier's probability and the photo cue of the face of ``photos[i]`` whose box holds
    ``centres[i]`` (the nearest such face's centre; photos where none does are dropped)."""
    rows = []
    for path, (cx, cy) in zip(photos, centres):
        image = load_image(path)
        faces = [f for f in an.detector.detect(image) if f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3]]
        if not faces:
            continue
        face = min(faces, key=lambda f: np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy))
        rows.append((an.analyse(image, [face])[0].prob, an.cues(image, [face])[0]))
    return np.asarray(rows, np.float64).reshape(-1, 2)


def cue_threshold(evidence: np.ndarray, threshold: float, rate: float) -> tuple[float, float]:
    """The lowest photo-cue threshold at which at most ``rate`` of the real faces are flagged by the decision
    (:func:`decision_score`: the classifier at ``threshold`` or the cue), never fewer than the classifier alone
    flags; returns (cue threshold, share flagged)."""
    def flagged(cue_t: float) -> int:
        return sum(decision_score(p, threshold, c, cue_t) >= DECISION for p, c in evidence)

    allowed = max(int(np.floor(rate * len(evidence) + 1e-9)), int((evidence[:, 0] >= threshold).sum()))
    # candidates: just above each real face's cue, in the float32 the decision compares in, lowest first
    candidates = sorted({float(np.nextafter(np.float32(c), np.float32(1.0))) for c in evidence[:, 1]} | {1.0})
    for candidate in candidates:
        n = flagged(candidate)
        if n <= allowed:
            return candidate, n / len(evidence)
    return 1.0, flagged(1.0) / len(evidence)


def calibrate(config: Path, weights: Path | None = None, rate: float = 0.05) -> dict[str, Any]:
    from ..calibration import precision_of
    from ..header import read_header
    from ..paths import data_root
    from .train import TrainConfig, split_train_val

    weights = weights or bundled_weights()
    an = FaceAnalyzer(weights, photo_cue=False)
    cfg = TrainConfig.load(config)
    cache = Path.home() / ".cache" / "manipseg" / "faces"
    _, val, counts = split_train_val(cfg, an.cfg.size, cache)
    folder = Path(cfg.faces) if Path(cfg.faces).is_absolute() else data_root() / cfg.faces
    photos = [Path(val.paths[i]) if val.paths is not None and val.paths[i] else folder / val.files[i]
              for i in range(len(val))]
    if val.matrix is None:
        raise ValueError(f"{config}: the validation faces carry no photo -> crop map; rebuild the face cache "
                         f"({cache}) with the current code")
    centres = []  # each crop's centre, brought back into its photo
    for i in range(len(val)):
        x, y, z = np.linalg.inv(np.vstack([val.matrix[i], [0, 0, 1]])) @ (an.cfg.size / 2, an.cfg.size / 2, 1.0)
        centres.append((x / z, y / z))
    evidence = real_face_evidence(an, photos, centres)
    threshold, _ = cue_threshold(evidence, an.threshold, rate)
    scores = [decision_score(p, an.threshold, c, threshold) for p, c in evidence]
    return {"weights_sha256": read_header(weights).get("sha256"), "threshold": an.threshold,
            "cue_threshold": threshold, "rate": rate, "n_real_faces": int(len(evidence)),
            "flagged": float(np.mean(np.asarray(scores) >= DECISION)), "flagged_by_classifier":
            float(np.mean(evidence[:, 0] >= an.threshold)), "cue_network": {
                "detector": an.photo_net.name, "precision": precision_of(an.photo_net)},
            "config": str(config), "validation_counts": counts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("configs/faces/faces-paste.yaml"),
                   help="the face model's training config (its validation split is used; default: %(default)s)")
    p.add_argument("--weights", type=Path, default=None, help="face model weights (default: the bundled ones)")
    p.add_argument("--rate", type=float, default=0.05, help="false-alarm rate on real faces (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="calibration JSON (default: beside the weights, <stem>.calibration.json)")
    args = p.parse_args(argv)
    if not 0 < args.rate < 1:
        print(f"error: --rate must be between 0 and 1, got {args.rate}", file=sys.stderr)
        return 2
    result = calibrate(args.config, args.weights, args.rate)
    out = args.out or calibration_path(args.weights or bundled_weights())
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"photo cue from {result['cue_threshold']:.4f} (classifier from {result['threshold']:.4f}): "
          f"{100 * result['flagged']:.1f} % of {result['n_real_faces']} real validation faces flagged "
          f"({100 * result['flagged_by_classifier']:.1f} % by the classifier alone); written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
