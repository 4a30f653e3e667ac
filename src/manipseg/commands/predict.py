"""``manipseg predict INPUT... --out DIR``: heatmap, mask, overlay and score for every image."""
from __future__ import annotations

import argparse

HELP = "find manipulated regions in images (writes prob map, mask, overlay and predictions.jsonl)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, directories or glob patterns (default: the bundled examples)")
    p.add_argument("--out", "-o", default="manipseg-out", help="output directory (default: %(default)s)")
    p.add_argument("--model", "-m", default=None,
                   help="detector name (see `manipseg models`) or a .safetensors/.yaml file; default: the best bundled")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold (default: the detector's own)")
    p.add_argument("--device", default="cpu", help="torch device for learned detectors (default: cpu)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images with more pixels than this (decompression-bomb guard; default 100 MP)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    from .. import registry
    from ..examples import example_paths
    from ..io import DEFAULT_MAX_PIXELS, list_images
    from ..predict import run_batch

    log = logging.getLogger("manipseg.predict")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"error: --threshold must be in [0, 1], got {args.threshold}", file=sys.stderr)
        return 2
    inputs = args.inputs or [str(p) for p in example_paths()]
    files, problems = list_images(inputs)
    for problem in problems:
        log.error("%s", problem)
    if not files:
        print("error: no input images found", file=sys.stderr)
        return 2
    name = args.model or registry.default_model()
    try:
        detector = registry.load_detector(name, device=args.device)
    except (registry.UnknownDetectorError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    result = run_batch(detector, files, out, threshold=args.threshold,
                       max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, progress=not args.no_progress)
    done = len(result.records) - len(result.failed)
    print(f"{done}/{len(result.records)} images analysed with {detector.name!r}; outputs in {out}/")
    for r in result.records:
        if "error" in r:
            print(f"  FAILED {r['error']}")
        else:
            print(f"  {r['stem']}: score {r['score']:.3f}, {100 * r['tampered_fraction']:.1f}% of pixels flagged")
    return 0 if result.ok and not problems else 1
