"""``manipseg predict INPUT... --out DIR``: heatmap, mask, overlay and score for every image."""
from __future__ import annotations

import argparse

HELP = "find manipulated regions in images (writes prob map, mask, overlay and predictions.jsonl)"


def configure(p: argparse.ArgumentParser) -> None:
    from .common import add_pool_arguments

    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, directories or glob patterns (default: the bundled examples)")
    p.add_argument("--out", "-o", default="manipseg-out", help="output directory (default: %(default)s)")
    p.add_argument("--model", "-m", default=None,
                   help="detector name (see `manipseg models`) or a .safetensors/.yaml file; default: the best bundled")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold (default: the detector's own)")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="verdict thresholds from manipseg calibrate (default: the one shipped with the model, if any)")
    p.add_argument("--device", default="cpu", help="torch device for learned detectors (default: cpu)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images with more pixels than this (decompression-bomb guard; default 100 MP)")
    p.add_argument("--recursive", "-r", action="store_true", help="also search the sub-folders of input folders")
    p.add_argument("--resume", action="store_true",
                   help="keep the results already in --out for this model and threshold and analyse only the rest")
    p.add_argument("--overwrite", action="store_true",
                   help="remove the outputs of an earlier run in --out (its *.prob.png, *.mask.png, *.overlay.jpg) first")
    p.add_argument("--outputs", default="prob,mask,overlay", metavar="LIST",
                   help="which per-image files to write, from prob (16-bit map), mask, overlay (default: all three; "
                        "the report's thumbnail and predictions.jsonl are always written)")
    add_pool_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from .. import registry
    from ..examples import example_paths
    from ..io import DEFAULT_MAX_PIXELS, list_images
    from .common import detector_or_none, out_dir_or_none, pool_or_none
    from ..parallel import PoolError
    from ..predict import BatchInterrupted, run_batch, stale_outputs

    log = logging.getLogger("manipseg.predict")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"error: --threshold must be in [0, 1], got {args.threshold}", file=sys.stderr)
        return 2
    if args.max_pixels is not None and args.max_pixels <= 0:
        print(f"error: --max-pixels must be a positive number of pixels, got {args.max_pixels}", file=sys.stderr)
        return 2
    if args.resume and args.overwrite:
        print("error: --resume keeps earlier results and --overwrite removes them: choose one", file=sys.stderr)
        return 2
    pool = pool_or_none(args)
    if pool is None:
        return 2
    from ..predict import OPTIONAL_OUTPUTS

    asked = [o.strip() for o in args.outputs.split(",") if o.strip()]
    unknown = [o for o in asked if o not in OPTIONAL_OUTPUTS]
    if unknown:
        print(f"error: unknown output(s) {', '.join(unknown)} in --outputs; choose from "
              f"{', '.join(OPTIONAL_OUTPUTS)} (comma-separated)", file=sys.stderr)
        return 2
    inputs = args.inputs or [str(p) for p in example_paths()]
    listing = list_images(inputs, recursive=args.recursive)
    for item, why in listing.problems:
        log.error("%s: %s", item, why)
    for note in listing.notes:
        log.info("%s", note)
    if not listing.files:
        print("error: no input images found", file=sys.stderr)
        return 2
    out = out_dir_or_none(args.out)
    if out is None:
        return 2
    detector = detector_or_none(args.model or registry.default_model(), args.device)
    if detector is None:
        return 2
    if args.calibration:
        from ..calibration import Calibration, CalibrationError

        try:
            detector.calibration = Calibration.load(args.calibration)
        except CalibrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    stale = stale_outputs(out)
    if stale and args.overwrite:
        for f in stale:
            f.unlink()
        log.info("removed %d output file(s) of an earlier run in %s", len(stale), out)
    try:
        result = run_batch(detector, listing.files, out, threshold=args.threshold,
                           max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, progress=not args.no_progress,
                           missing=listing.problems, resume=args.resume, pool=pool,
                           model=args.model or registry.default_model(), calibration=args.calibration,
                           outputs=[OPTIONAL_OUTPUTS[o] for o in asked])
    except PoolError as exc:
        print(f"error: {exc}; the outputs written so far are kept in {out}/ (run again with --resume)",
              file=sys.stderr)
        return 1
    except BatchInterrupted as stop:
        print(f"interrupted after {stop.done}/{stop.total} images; outputs kept in {out}/; "
              f"run the same command with --resume to continue", file=sys.stderr)
        return 130
    if stale and not args.overwrite and not args.resume:
        kept = [f for f in stale if f.exists() and f.name not in result.written]
        if kept:
            log.warning("%d output file(s) of an earlier run are still in %s beside the new predictions.jsonl "
                        "(pass --overwrite to remove them)", len(kept), out)
    done = len(result.records) - len(result.failed)
    print(f"{done}/{len(result.records)} images analysed with {detector.name!r}; outputs in {out}/"
          + (f" ({result.reused} kept from the earlier run)" if result.reused else ""))
    for r in result.records:
        if "error" in r:
            print(f"  FAILED {r['error']}")
        else:
            verdict = "" if r.get("verdict", "uncalibrated") == "uncalibrated" else f"{r['verdict']}, "
            rate = (f" (flagged from {r['score_threshold']:.3f} = at most {100 * r['false_alarm_rate']:.0f}% false alarms)"
                    if r.get("false_alarm_rate") is not None else "")
            print(f"  {r['input']}: {verdict}score {r['score']:.3f}{rate}, {100 * r['tampered_fraction']:.1f}% of "
                  "pixels marked" + (f" (outputs {r['stem']}.*)" if r["stem"] != _stem(r["input"]) else ""))
    return 0 if result.ok else 1


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem
