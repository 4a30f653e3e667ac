"""``manipseg evaluate DATASET --model NAME``: every protocol, attacks, plots, beside the trivial baseline."""
from __future__ import annotations

import argparse

HELP = "measure a detector on a forgery benchmark (all protocols, attacks, plots, trivial baseline beside)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET", help="benchmark folder, or an IMDL-BenCo JSON list")
    p.add_argument("--model", "-m", default=None,
                   help="detector name (see `manipseg models`) or a .safetensors/.yaml file; default: the best bundled")
    p.add_argument("--format", "-f", default="auto", dest="fmt",
                   help="dataset layout (default: auto-detect); one of auto, generic, json, tpgt, casia1, casia2, "
                        "coverage, columbia, dso1, inthewild, nist16, imd2020, comofod, cvip, noso")
    p.add_argument("--mask-convention", choices=("white", "black", "green"), default=None,
                   help="override the format's mask convention: white or black = tampered, green (Columbia)")
    p.add_argument("--attack", "-a", action="append", default=[], metavar="KIND:VALUE",
                   help="also evaluate under an attack, repeatable: jpeg:Q, scale:F, blur:SIGMA, noise:STD")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate at most N samples (tampered and authentic in the dataset's proportion)")
    p.add_argument("--out", "-o", default="manipseg-eval", help="output directory (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device for learned detectors (default: cpu)")
    p.add_argument("--save-probs", action="store_true",
                   help="write the clean probability maps to OUT/probs/<name>.prob.png (16-bit) for re-checking")
    p.add_argument("--thresholds", type=int, default=101, help="odd number of thresholds in [0, 1] (default 101)")
    p.add_argument("--grid", type=int, default=6, help="rows of the qualitative grid (default 6)")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse images larger than this (default 100 MP)")
    from .common import add_pool_arguments

    add_pool_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from .. import registry
    from ..eval.attacks import AttackError, parse_attacks
    from ..eval.datasets import DatasetError, open_dataset
    from ..eval.evaluate import evaluate, summary_table

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.limit is not None and args.limit < 1:
        return fail(f"--limit must be at least 1, got {args.limit}")
    if args.thresholds < 3 or args.thresholds % 2 == 0:
        return fail(f"--thresholds must be odd and >= 3 (0.5 must be on the grid), got {args.thresholds}")
    try:
        attacks = parse_attacks(args.attack)
        dataset = open_dataset(args.dataset, args.fmt, args.mask_convention).subset(args.limit)
    except (AttackError, DatasetError) as exc:
        return fail(str(exc))
    from .common import out_dir_or_none, pool_or_none

    pool = pool_or_none(args)
    if pool is None:
        return 2
    model = args.model or registry.default_model()
    try:
        detector = registry.load_detector(model, device=args.device)
    except (registry.UnknownDetectorError, FileNotFoundError, ValueError) as exc:
        return fail(str(exc))
    if out_dir_or_none(args.out) is None:  # after the model: a mistyped --model leaves no empty folder behind
        return 2
    print(f"evaluating {model!r} on {args.dataset} ({dataset.format}: {dataset.n_tampered} tampered, "
          f"{dataset.n_authentic} authentic); runs: clean{''.join(', ' + a.name for a in attacks)}")
    from ..parallel import PoolError

    try:
        report = evaluate(dataset, detector, attacks, out_dir=args.out, save_probs=args.save_probs,
                          n_thresholds=args.thresholds, grid_rows=args.grid, progress=not args.no_progress,
                          max_pixels=args.max_pixels, model_label=model, pool=pool)
    except PoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary_table(report))
    quirks = report["dataset"]["quirks"]
    if quirks:
        print("dataset quirks: " + ", ".join(f"{k} {v}" for k, v in quirks.items()))
    t = report["timing"]
    if t["seconds_per_megapixel"] is not None:
        print(f"timing: {t['seconds_per_megapixel']:.3f} s per megapixel ({t['images']} images, {t['megapixels']:.1f} MP)")
    for f in report["failures"]:
        print(f"FAILED {f['name']} ({f['run']}): {f['error']}", file=sys.stderr)
    print(f"report: {args.out}/report.md, {args.out}/report.json; plots: {', '.join(report['files']['plots']) or 'none'}")
    return 1 if report["failures"] else 0
