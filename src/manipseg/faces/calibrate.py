"""Calibrate the faces' photo cue on the real faces of people never trained on.

    python -m manipseg.faces.calibrate --config configs/faces/faces-paste.yaml \\
        --out src/manipseg/weights/faces-adapgrnet.calibration.json

The photo cue (:mod:`manipseg.faces.infer`) is the default photo network's evidence inside a face's box. The
decision is "fake when the classifier or the cue says so", each at its threshold. Both thresholds are set on
the *validation* split of the face model's training config — whole Caltech identities and photos of the extra
face folders that training never used, the faces the classifier's own threshold was set on:

- for each candidate classifier threshold (the one stored in the weights, or stricter: just above a real
  validation face's probability), the cue gets the lowest threshold at which the decision flags at most
  ``rate`` (5 %) of the real validation faces (:func:`cue_threshold`);
- of those pairs, the one whose decision best separates the real validation faces from fakes made of them —
  crude pastes of another validation person's face and self-blends made on the photo, the two kinds the
  decision must catch — by the mean of the two AUCs (ties: the least strict classifier threshold).

The held-out test identities of ``benchmarks/bench_faces.py`` are never looked at. The file records the face
weights' checksum (another model's calibration is not used), the cue network's precision, the rate, every
candidate pair and what was measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import precision_of
from ..header import read_header
from ..io import atomic_write, load_image
from ..paths import data_root
from .infer import DECISION, FaceAnalyzer, bundled_weights, calibration_path, decision_score


def face_evidence(an: FaceAnalyzer, image: np.ndarray, centre: tuple[float, float]) -> tuple | None:
    """(classifier probability, photo cue, face) of the face of ``image`` whose box holds ``centre`` (the nearest
    such face's centre), or None when no face does."""
    cx, cy = centre
    faces = [f for f in an.detector.detect(image) if f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3]]
    if not faces:
        return None
    face = min(faces, key=lambda f: np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy))
    return an.analyse(image, [face])[0].prob, an.cues(image, [face])[0], face


def validation_evidence(an: FaceAnalyzer, photos: list[Path], centres: list[tuple[float, float]],
                        identity: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """(n, 2) classifier probabilities and photo cues of the real validation faces, of crude pastes of another
    validation person's face over them (:func:`manipseg.faces.sbi.crude_paste`) and of self-blends made on
    their photos (:func:`manipseg.faces.sbi.self_blend`); faces not found again are left out."""
    from .sbi import crude_paste, self_blend

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"real": [], "crude": [], "sbi": []}
    found = []
    for path, centre in zip(photos, centres):
        image = load_image(path)
        found.append((image, face_evidence(an, image, centre)))
    for i, (image, ev) in enumerate(found):
        if ev is None:
            continue
        out["real"].append(ev[:2])
        others = [j for j in np.flatnonzero(identity != identity[i]) if found[j][1] is not None]
        if others:
            j = int(rng.choice(others))
            fake, _, _ = crude_paste(image, ev[2].box, found[j][0], found[j][1][2].box)
            fev = face_evidence(an, fake, centres[i])
            if fev is not None:
                out["crude"].append(fev[:2])
        fake, _, _ = self_blend(image, ev[2].landmarks, rng)
        fev = face_evidence(an, fake, centres[i])
        if fev is not None:
            out["sbi"].append(fev[:2])
    return {k: np.asarray(v, np.float64).reshape(-1, 2) for k, v in out.items()}


def decision_auc(real: np.ndarray, fake: np.ndarray, threshold: float, cue_t: float) -> float:
    from .metrics import roc_auc

    scores = [decision_score(p, threshold, c, cue_t) for p, c in np.concatenate([real, fake])]
    return float(roc_auc(np.r_[np.zeros(len(real)), np.ones(len(fake))], np.asarray(scores)))


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


def calibrate(config: Path, weights: Path | None = None, rate: float = 0.05, cue_box: float | None = None,
              seed: int = 0) -> dict[str, Any]:
    from .train import TrainConfig, split_train_val

    weights = weights or bundled_weights()
    an = FaceAnalyzer(weights, photo_cue=False)
    if cue_box is not None:
        an.cue_box = float(cue_box)
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
    ev = validation_evidence(an, photos, centres, val.identity, seed=seed)
    real = ev["real"]
    candidates = sorted({an.threshold} | {float(np.nextafter(np.float32(p), np.float32(1.0)))
                                          for p in real[:, 0] if p >= an.threshold})
    pairs = []
    for t in candidates:
        cue_t, share = cue_threshold(real, t, rate)
        aucs = {k: decision_auc(real, ev[k], t, cue_t) for k in ("crude", "sbi")}
        pairs.append({"threshold": t, "cue_threshold": cue_t, "flagged": share, **{f"auc_{k}": v for k, v in aucs.items()}})
    best = max(pairs, key=lambda q: (round((q["auc_crude"] + q["auc_sbi"]) / 2, 6), -q["threshold"]))
    return {"weights_sha256": read_header(weights).get("sha256"), "threshold": best["threshold"],
            "cue_threshold": best["cue_threshold"], "cue_box": an.cue_box, "rate": rate,
            "n_real_faces": int(len(real)), "n_crude": int(len(ev["crude"])), "n_sbi": int(len(ev["sbi"])),
            "flagged": best["flagged"], "flagged_by_classifier": float(np.mean(real[:, 0] >= best["threshold"])),
            "auc_crude": best["auc_crude"], "auc_sbi": best["auc_sbi"],
            "weights_threshold": an.threshold, "candidates": pairs, "seed": seed,
            "cue_network": {"detector": an.photo_net.name, "precision": precision_of(an.photo_net)},
            "config": str(config), "validation_counts": counts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("configs/faces/faces-paste.yaml"),
                   help="the face model's training config (its validation split is used; default: %(default)s)")
    p.add_argument("--weights", type=Path, default=None, help="face model weights (default: the bundled ones)")
    p.add_argument("--rate", type=float, default=0.05, help="false-alarm rate on real faces (default: %(default)s)")
    p.add_argument("--cue-box", type=float, default=None,
                   help="how many times the face box is widened for the photo cue (default: CUE_BOX of manipseg.faces.infer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation fakes (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="calibration JSON (default: beside the weights, <stem>.calibration.json)")
    args = p.parse_args(argv)
    if not 0 < args.rate < 1:
        print(f"error: --rate must be between 0 and 1, got {args.rate}", file=sys.stderr)
        return 2
    result = calibrate(args.config, args.weights, args.rate, args.cue_box, args.seed)
    out = args.out or calibration_path(args.weights or bundled_weights())
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(f"photo cue from {result['cue_threshold']:.4f}, classifier from {result['threshold']:.4f} (weights: "
          f"{result['weights_threshold']:.4f}): {100 * result['flagged']:.1f} % of {result['n_real_faces']} real "
          f"validation faces flagged ({100 * result['flagged_by_classifier']:.1f} % by the classifier alone); "
          f"validation AUC crude pastes {result['auc_crude']:.3f}, photo-level self-blends {result['auc_sbi']:.3f}; "
          f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
