"""``manipseg faces INPUT... --out DIR``: which face is fake, and where, in photos and videos."""
from __future__ import annotations

import argparse

HELP = "detect faces and score each as real or face-swapped/blended (box, probability, heatmap, faces.jsonl)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, directories or glob patterns")
    p.add_argument("--out", "-o", default="manipseg-faces", help="output directory (default: %(default)s)")
    p.add_argument("--every", type=int, default=10, help="videos: analyse every N-th frame (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=None, help="videos: stop after this many analysed frames")
    p.add_argument("--weights", default=None, help="face model .safetensors (default: the bundled one)")
    p.add_argument("--backend", default="auto", choices=["auto", "dlib", "opencv"],
                   help="face detector: dlib (68 landmarks, `pip install manipseg[faces]`), opencv (Haar boxes); "
                        "auto = dlib when installed")
    p.add_argument("--threshold", type=float, default=None,
                   help="the face classifier's fake-probability threshold when it decides alone (default: the "
                        "calibrated one); with the photo cue the combined decision moves by the same step in log-odds")
    p.add_argument("--no-photo-cue", action="store_true",
                   help="the face classifier alone, without the photo network's evidence in the face box (faster)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images with more pixels than this (decompression-bomb guard; default 100 MP)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from ..device import DeviceError
    from ..faces.detect import FaceBackendMissing
    from ..faces.infer import FaceAnalyzer, expand_inputs, run_faces
    from ..models.weights import WeightsError

    log = logging.getLogger("manipseg.faces")
    if args.every < 1:
        print(f"error: --every must be >= 1, got {args.every}", file=sys.stderr)
        return 2
    if args.threshold is not None and not 0 < args.threshold < 1:
        print(f"error: --threshold must be between 0 and 1, got {args.threshold}", file=sys.stderr)
        return 2
    from ..io import DEFAULT_MAX_PIXELS
    from .common import out_dir_or_none

    if args.max_pixels is not None and args.max_pixels <= 0:
        print(f"error: --max-pixels must be a positive number of pixels, got {args.max_pixels}", file=sys.stderr)
        return 2
    out = out_dir_or_none(args.out)
    if out is None:
        return 2
    files, problems = expand_inputs(args.inputs)
    for problem in problems:
        log.error("%s", problem)
    if not files:
        print("error: no input images or videos found", file=sys.stderr)
        return 2
    try:
        analyzer = FaceAnalyzer(args.weights, device=args.device, backend=args.backend,
                                photo_cue=not args.no_photo_cue)
    except (FileNotFoundError, WeightsError, FaceBackendMissing, DeviceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threshold is not None:
        analyzer.decision = analyzer.decision.with_threshold(args.threshold)
    try:
        records = run_faces(analyzer, files, out, every=args.every, max_frames=args.max_frames,
                            progress=not args.no_progress, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    except KeyboardInterrupt:
        print(f"interrupted; the outputs of the files done so far are complete in {out}/ (faces.jsonl)", file=sys.stderr)
        return 130
    failed = [r for r in records if "error" in r]
    d = analyzer.decision
    cue = ("photo cue off" if not d.uses_cue
           else f"with the photo cue: logit(p) + {d.cue_weight:.2f} logit(cue) from {d.offset:.3f}")
    print(f"{len(records) - len(failed)}/{len(records)} inputs analysed (detector {analyzer.detector.name}, "
          f"classifier threshold {analyzer.threshold:.3f}, {cue}; a face is fake from score 0.5); outputs in {out}/")
    for r in records:
        if "error" in r:
            print(f"  FAILED {r['error']}")
            continue
        faces = ", ".join(f"{'track' if r['kind'] == 'video' else 'face'} {f.get('track', f.get('face'))}: "
                          f"score {f['score']:.3f} (classifier {f['fake_prob']:.3f}"
                          + (f", photo cue {f['photo_cue']:.3f})" if f.get("photo_cue") is not None else ")")
                          for f in r["faces"])
        print(f"  {r['stem']}: {r['result']}" + (f" ({faces})" if faces else ""))
    return 0 if not failed and not problems else 1
