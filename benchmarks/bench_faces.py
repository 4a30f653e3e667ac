"""Frame-level evaluation of the face classifier on held-out identities.

    python benchmarks/bench_faces.py [--weights W.safetensors] [--demo OUT_DIR]

Sets (reals = held-out faces of identities never seen in training; fakes made from those same reals):
  sbi           Self-Blended Images (seed differs from the training-time validation set)
  sbi-jp60      the same reals and fakes, JPEG quality 60 (AdapGRnet's HFF-JP60)
  sbi-me5       the same, 5x5 mean blur (AdapGRnet's HFF-ME5)
  swap          classic face swap: a *different* held-out person's face, landmark-aligned, colour-matched
                and blended (out of distribution for an SBI-trained model)
  swap-jp60     swaps and reals at JPEG 60
  photo-sbi     Self-Blended Images made on the full photos (at the photo's resolution), then detected,
                cropped and classified by the same pipeline as `manipseg faces` (reals: the untouched photos)
  photo-swap    swaps made on the full photos (another held-out person's face), then detected, cropped and
                classified by the same pipeline as `manipseg faces` (reals: the untouched photos)
  photo-swap-x0.9  the same photos (real and swapped) resized to 90 % first (bilinear), as a photo that was
                resized after the edit (the `--demo` pair is resized like this)
  photo-crude   the crude paste anyone would spot: another held-out person's face box pasted as a hard-edged
                ellipse over the face box, no alignment, no colour matching (``crude_paste``)
  photo-crude-jp70, photo-sbi-jp70, photo-crude-x0.75  robustness: the photos (real and altered) saved at
                JPEG 70, or resized to 75 %, after the edit
and how many of the altered photo-level faces the detector (``--detector``) still finds at all.
Prints AUC, accuracy at the model's threshold, the share of reals / fakes at or above it, EER, and the pixel
AUC of the heatmap against the blend mask (> 0.1) on the fakes. Every photo-level set is scored twice: by the
face classifier alone (as ``manipseg faces --no-photo-cue``), and by the decision `manipseg faces` makes
(``+ cue`` rows: the classifier's and the photo cue's log-odds added, the cue being the default photo network's
evidence in the face box, as calibrated; the reals are the same photos' untouched faces, re-detected). Without
a calibration file beside the weights there is no cue. ``--demo`` writes a photo pair (real | swapped) and runs
`manipseg faces` on it, then scores the swapped photo with ten blend seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from manipseg.faces.data import prepare_faces, split_by_identity
from manipseg.faces.infer import FaceAnalyzer, bundled_weights
from manipseg.faces.metrics import binary_metrics, roc_auc
from manipseg.faces.sbi import face_swap, jpeg, self_blend
from manipseg.faces.train import TrainConfig
from manipseg.paths import data_root


def degrade(crops: list[np.ndarray], kind: str) -> list[np.ndarray]:
    if kind == "jp60":
        return [jpeg(c, 60) for c in crops]
    if kind == "me5":
        return [cv2.blur(c, (5, 5)) for c in crops]
    return list(crops)


def evaluate(an: FaceAnalyzer, reals: list[np.ndarray], fakes: list[np.ndarray], masks: list[np.ndarray],
             cues: tuple[list[float], list[float]] | None = None) -> dict:
    """Metrics of the classifier on the crops (as the decision runs it: with the mirror image when calibrated so)
    at its threshold for deciding alone; with ``cues`` (of the reals, of the fakes) those of the decision score
    (:class:`manipseg.faces.infer.FaceDecision`: classifier and photo cue), fake from 0.5."""
    from manipseg.faces.infer import DECISION

    probs, heats = an.classify(reals + fakes)
    labels = np.r_[np.zeros(len(reals)), np.ones(len(fakes))]
    threshold = an.threshold
    if cues is not None:
        probs = np.array([an.decision.score(float(p), q) for p, q in zip(probs, list(cues[0]) + list(cues[1]))])
        threshold = DECISION
    m = binary_metrics(labels, probs, threshold)
    fake_heat = heats[len(reals):]
    gt = np.stack(masks) > 0.1
    m["pixel_auc"] = roc_auc(gt.ravel(), fake_heat.ravel()) if gt.any() and not gt.all() else float("nan")
    m["mean_prob_real"] = float(probs[:len(reals)].mean())
    m["mean_prob_fake"] = float(probs[len(reals):].mean())
    m["real_flagged"] = float((probs[:len(reals)] >= threshold).mean())
    m["fake_flagged"] = float((probs[len(reals):] >= threshold).mean())
    return m


def photo_fakes(an: FaceAnalyzer, folder: Path, held, partner: list[int] | None, rng: np.random.Generator,
                scale: float = 1.0, crude: bool = False, found_stats: dict | None = None, detector=None,
                quality: int | None = None) -> tuple[list, list, list, list, list]:
    """Fakes made on the full photos, re-detected and cropped like `manipseg faces` does, after resizing both
    the real and the fake photo by ``scale`` (and saving both at JPEG ``quality``): (real crops, fake crops,
    masks in crop coords, the reals' photo cues, the fakes' photo cues; cues None without a calibration). With ``partner``
    the fake is a swap with that held-out face's photo (``crude``: the partner's face box pasted as a
    hard-edged ellipse, :func:`crude_paste`), without it a self-blend of the photo (SBI at the photo's
    resolution). ``found_stats`` gets ``altered`` (fakes made) and ``found`` (of those, the fakes in which
    the detector finds a face over the altered region: IoU >= 0.3 with the original face box). ``detector``
    (default: the analyser's) finds the faces in the altered and the real photos."""
    from manipseg.faces.detect import box_iou
    from manipseg.faces.sbi import crude_paste
    from manipseg.faces.detect import crop_face
    from manipseg.io import load_image

    def resized(img: np.ndarray) -> np.ndarray:
        img = img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        return img if quality is None else jpeg(img, quality)

    def cue(img: np.ndarray, face) -> float | None:
        return an.cues(img, [face])[0] if an.decision.uses_cue else None

    reals, crops, masks, real_cues, fake_cues = [], [], [], [], []
    for i in range(len(held)):
        t = load_image(folder / held.files[i])
        ft = an.detector.detect(t)
        if not ft:
            continue
        if partner is None:
            fake, mask, _ = self_blend(t, ft[0].landmarks, rng)
        else:
            s = load_image(folder / held.files[partner[i]])
            fs_ = an.detector.detect(s)
            if not fs_:
                continue
            if crude:
                fake, mask, _ = crude_paste(t, ft[0].box, s, fs_[0].box)
            else:
                fake, mask, _ = face_swap(t, ft[0].landmarks, s, fs_[0].landmarks, rng)
        fake, real = resized(fake), resized(t)
        mask = mask if scale == 1.0 else cv2.resize(mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        det = detector or an.detector
        found, found_real = det.detect(fake), det.detect(real)
        if found_real:
            reals.append(crop_face(real, found_real[0], an.cfg.size, an.margin)[0])
            real_cues.append(cue(real, found_real[0]))
        where = tuple(v * scale for v in ft[0].box)
        found = [f for f in found if box_iou(f.box, where) >= 0.3]
        if found_stats is not None:
            found_stats["altered"] = found_stats.get("altered", 0) + 1
            found_stats["found"] = found_stats.get("found", 0) + int(bool(found))
        if not found:
            continue
        crop, _, m = crop_face(fake, found[0], an.cfg.size, an.margin)
        crops.append(crop)
        fake_cues.append(cue(fake, found[0]))
        masks.append(cv2.warpAffine(mask, m, (an.cfg.size, an.cfg.size)))
    return reals, crops, masks, real_cues, fake_cues


def demo(an: FaceAnalyzer, folder: Path, out: Path, held_files: list[str], seeds: int = 0) -> None:
    """real photo of one held-out person | photo of another with a third person's face swapped in (blend
    seed 0); with ``seeds``, the swapped photo alone with blend seeds 0..seeds-1 too (how much the verdict
    on this pair depends on the blend draw)."""
    from manipseg.faces.infer import run_faces
    from manipseg.io import load_image, save_png

    names = sorted(held_files)
    a, b, c = (load_image(folder / names[k]) for k in (0, len(names) // 2, len(names) - 1))
    fb, fc = an.detector.detect(b)[0], an.detector.detect(c)[0]
    swapped, _, _ = face_swap(b, fb.landmarks, c, fc.landmarks, np.random.default_rng(0))
    h = min(a.shape[0], swapped.shape[0])
    pair = np.concatenate([cv2.resize(a, (round(a.shape[1] * h / a.shape[0]), h)),
                           cv2.resize(swapped, (round(swapped.shape[1] * h / swapped.shape[0]), h))], axis=1)
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "pair-real-left-swap-right.png", pair)
    recs = run_faces(an, [out / "pair-real-left-swap-right.png"], out, progress=False)
    print(f"\ndemo: {names[0]} (real, left) | {names[len(names) // 2]} with the face of {names[-1]} (right)")
    for f in recs[0].get("faces", []):
        side = "left" if (f["box"][0] + f["box"][2]) / 2 < pair.shape[1] / 2 else "right"
        verdict = "marked fake" if f["score"] >= 0.5 else "looks real"
        print(f"  face at {side}: fake probability {f['fake_prob']:.3f} (threshold {an.threshold:.3f}), photo cue "
              f"{f['photo_cue']}, decision score {f['score']:.3f}: {verdict}")
    print(f"  overview: {out / recs[0]['overview']}")
    if seeds:
        from manipseg.faces.detect import crop_face

        crops = []
        for seed in range(seeds):
            sw = face_swap(b, fb.landmarks, c, fc.landmarks, np.random.default_rng(seed))[0]
            found = an.detector.detect(sw)
            if found:
                crops.append(crop_face(sw, found[0], an.cfg.size, an.margin)[0])
        p = an.classify(crops)[0]
        print(f"  the swapped photo alone, blend seeds 0-{seeds - 1}: " + " ".join(f"{v:.3f}" for v in p)
              + f" -> {int((p >= an.threshold).sum())}/{len(p)} marked fake")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=None, help="default: the bundled face model")
    p.add_argument("--faces", type=Path, default=None, help="face photo folder (default: <data>/faces/caltech-faces)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "manipseg" / "faces",
                   help="where detected crops are cached (default: %(default)s)")
    p.add_argument("--held-out", type=float, default=TrainConfig.held_out)
    p.add_argument("--split-seed", type=int, default=TrainConfig.split_seed)
    p.add_argument("--seed", type=int, default=7, help="seed of the evaluation fakes")
    p.add_argument("--demo", type=Path, default=None, help="also write and analyse a real|swapped photo pair here")
    p.add_argument("--demo-seeds", type=int, default=10, metavar="N",
                   help="with --demo: also score the swapped photo with blend seeds 0..N-1 (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="write the figures as JSON too")
    p.add_argument("--detector", default=None, choices=("auto", "dlib", "opencv", "union"),
                   help="face detector for the photo-level sets (default: the analyser's own)")
    args = p.parse_args()
    torch.set_num_threads(2)
    an = FaceAnalyzer(args.weights or bundled_weights())
    if args.detector:
        from manipseg.faces.detect import get_detector

        photo_detector = get_detector(args.detector)
    else:
        photo_detector = an.detector
    folder = args.faces or data_root() / "faces" / "caltech-faces"
    fs = prepare_faces(folder, args.cache, size=an.cfg.size, margin=an.margin, detector=an.detector)
    _, ho = split_by_identity(fs, args.held_out, args.split_seed)
    held = fs.subset(ho)
    rng = np.random.default_rng(args.seed)
    reals = list(held.crops)
    sbis = [self_blend(held.crops[i], held.lm(i), rng) for i in range(len(held))]
    partner = []
    for i in range(len(held)):
        others = np.flatnonzero(held.identity != held.identity[i])
        partner.append(int(rng.choice(others)) if len(others) else (i + 1) % len(held))
    swaps = [face_swap(held.crops[i], held.lm(i), held.crops[j], held.lm(j), rng) for i, j in enumerate(partner)]
    sets = {
        "sbi": (reals, [s[0] for s in sbis], [s[1] for s in sbis]),
        "sbi-jp60": (degrade(reals, "jp60"), degrade([s[0] for s in sbis], "jp60"), [s[1] for s in sbis]),
        "sbi-me5": (degrade(reals, "me5"), degrade([s[0] for s in sbis], "me5"), [s[1] for s in sbis]),
        "swap": (reals, [s[0] for s in swaps], [s[1] for s in swaps]),
        "swap-jp60": (degrade(reals, "jp60"), degrade([s[0] for s in swaps], "jp60"), [s[1] for s in swaps]),
    }
    photo_sets = {  # name: (partner or None, rng, scale, crude, JPEG quality)
        "photo-sbi": (None, np.random.default_rng(args.seed + 2), 1.0, False, None),
        "photo-swap": (partner, rng, 1.0, False, None),
        "photo-swap-x0.9": (partner, np.random.default_rng(args.seed + 1), 0.9, False, None),
        "photo-crude": (partner, rng, 1.0, True, None),
        "photo-crude-jp70": (partner, np.random.default_rng(args.seed + 3), 1.0, True, 70),
        "photo-sbi-jp70": (None, np.random.default_rng(args.seed + 4), 1.0, False, 70),
        "photo-crude-x0.75": (partner, np.random.default_rng(args.seed + 5), 0.75, True, None),
    }
    found: dict[str, dict] = {k: {} for k in photo_sets}
    photo_cues: dict[str, tuple] = {}
    for name, (who, r, scale, crude, quality) in photo_sets.items():
        real_crops, crops, masks, real_cues, fake_cues = photo_fakes(
            an, folder, held, who, r, scale, crude=crude, found_stats=found[name], detector=photo_detector,
            quality=quality)
        # the classifier alone on the held-out crops as before (the same crops at scale 1 without JPEG)
        plain = scale == 1.0 and quality is None
        sets[name] = ((reals if plain else real_crops), crops, masks)
        if an.decision.uses_cue:
            photo_cues[name] = (real_crops, crops, masks, real_cues, fake_cues)
    print(f"weights {args.weights or bundled_weights()} | detector {an.detector.name} (photo-level sets: "
          f"{photo_detector.name}) | {len(held)} held-out faces "
          f"({len(np.unique(held.identity))} identity clusters), {len(fs) - len(held)} train faces")
    d = an.decision
    cue = (f"decision logit(p) + {d.cue_weight:g} logit(photo cue) from {d.offset:.3f}" if d.uses_cue
           else "no photo cue (no calibration)")
    print(f"classifier threshold {an.threshold:.4f} (mirror image averaged: {d.flip}), {cue}; '+ cue' rows: "
          "accuracy and shares at the decision score's 0.5")
    print(f"| set | reals | fakes | AUC | acc@{an.threshold:.3g} | reals flagged | fakes flagged | EER | "
          "heatmap pixel AUC | mean p(real) | mean p(fake) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    rows = [(name, r, f, m, None) for name, (r, f, m) in sets.items()]
    rows += [(f"{name} + cue", r, f, m, (rc, fc)) for name, (r, f, m, rc, fc) in photo_cues.items()]
    for name, r, f, m, cues in rows:
        res = evaluate(an, r, f, m, cues)
        results[name] = res
        print(f"| {name} | {len(r)} | {len(f)} | {res['auc']:.3f} | {res['accuracy']:.3f} | {res['real_flagged']:.3f} | "
              f"{res['fake_flagged']:.3f} | {res['eer']:.3f} | "
              f"{res['pixel_auc']:.3f} | {res['mean_prob_real']:.3f} | {res['mean_prob_fake']:.3f} |", flush=True)
    print("\nfaces found in the altered photos (a detection over the altered face, IoU >= 0.3; a face not found "
          "is reported as such by `manipseg faces`, not scored):")
    for name, st in found.items():
        if st.get("altered"):
            print(f"  {name}: {st['found']}/{st['altered']} ({100 * st['found'] / st['altered']:.0f} %)")
            results.setdefault(name, {})["found"] = st
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.demo:
        demo(an, folder, args.demo, list(held.files), args.demo_seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
