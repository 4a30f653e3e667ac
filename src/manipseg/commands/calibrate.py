"""``manipseg calibrate``: set a detector's image-level verdict thresholds on authentic photos."""
from __future__ import annotations

import argparse

HELP = "set a detector's verdict thresholds at a stated false-alarm rate on authentic photos (calibration JSON)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=None,
                   help="detector name or .safetensors file (default: the best bundled)")
    p.add_argument("--authentic", nargs="+", default=None, metavar="DIR",
                   help="authentic photos never used in training, to set the thresholds on (default: "
                        "natural/sun-hays and natural/imagenet-sample under the data root)")
    p.add_argument("--report", nargs="*", default=None, metavar="DIR",
                   help="other authentic photos to measure the false-alarm rate on (default: dev/misd/authentic "
                        "under the data root, when present); never the calibration photos")
    p.add_argument("--rate", type=float, default=0.05, help="false-alarm rate of 'likely manipulated' (default 0.05)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="set 'likely manipulated' so that --rate is an upper bound at this confidence (one-sided "
                        "Clopper-Pearson on the calibration photos; default 0.95); 0 = exactly --rate of them")
    p.add_argument("--inconclusive-rate", type=float, default=0.25,
                   help="false-alarm rate below which scores are 'inconclusive' rather than 'no clear sign' (default 0.25)")
    p.add_argument("--out", "-o", default=None,
                   help="calibration file to write (default: beside a weights or detector-config file, or "
                        "./<name>.calibration.json)")
    p.add_argument("--network-out", default=None, metavar="FILE",
                   help="for a fused detector: also write the calibration of its network alone (e.g. gsr-vgg16 "
                        "inside gsr-fused-vgg16) to FILE, from the same pass over the photos")
    p.add_argument("--data", default=None, help="data root (default: $MANIPSEG_DATA or ../shared/data)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _scores(detector, folders: list[str], progress: bool, log) -> tuple[list[float], list[float], list[str]]:
    """The detector's image scores on the photos of ``folders``, its artifact detector's (a fusion's network,
    from the same prediction; empty for other detectors), and the photos that could not be scored."""
    from tqdm import tqdm

    from ..io import ImageLoadError, list_images, load_image

    listing = list_images(folders, recursive=True)
    for item, why in listing.problems:
        log.error("%s: %s", item, why)
    scores, network, failed = [], [], []
    for path in tqdm(listing.files, unit="img", disable=not progress, desc=f"calibrate [{detector.name}]"):
        try:
            pred = detector.predict(load_image(path))
        except (ImageLoadError, ValueError, OSError) as exc:
            failed.append(f"{path}: {exc}")
            log.error("skipped %s: %s", path, exc)
            continue
        scores.append(float(pred.score))
        if "artifact" in pred.extras:
            network.append(float(pred.extras["artifact"]["score"]))
    return scores, network, failed


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    from .. import registry
    from ..calibration import (CalibrationError, calibrate_scores, measure, precision_of, sidecar_path,
                               weights_checksum, working_size_of)
    from ..paths import MODEL_FILE_SUFFIXES, data_root
    from .common import detector_or_none

    log = logging.getLogger("manipseg.calibrate")
    root = data_root(args.data)
    authentic = args.authentic or [str(root / "natural" / "sun-hays"), str(root / "natural" / "imagenet-sample")]
    report = args.report if args.report is not None else (
        [str(root / "dev" / "misd" / "authentic")] if (root / "dev" / "misd" / "authentic").is_dir() else [])
    overlap = {Path(a).resolve() for a in authentic} & {Path(r).resolve() for r in report}
    if overlap:
        print(f"error: {', '.join(map(str, sorted(overlap)))} is both a calibration and a report set; report the "
              "false-alarm rate on other photos", file=sys.stderr)
        return 2
    missing = [d for d in authentic + report if not Path(d).is_dir()]
    if missing:
        print(f"error: folder(s) not found: {', '.join(missing)} (give --authentic / --report, or --data)", file=sys.stderr)
        return 2
    if not (0 <= args.rate <= args.inconclusive_rate < 1):
        print("error: need 0 <= --rate <= --inconclusive-rate < 1", file=sys.stderr)
        return 2
    if not 0 <= args.confidence < 1:
        print(f"error: --confidence must be in [0, 1) (0 turns the bound off), got {args.confidence}", file=sys.stderr)
        return 2
    name = args.model or registry.default_model()
    detector = detector_or_none(name, args.device)
    if detector is None:
        return 2
    network = getattr(detector, "artifact", None)
    if args.network_out and network is None:
        print(f"error: --network-out needs a fused detector (one with a network inside), not {name!r}", file=sys.stderr)
        return 2
    beside = Path(name).suffix.lower() in MODEL_FILE_SUFFIXES  # a model file: its calibration next to it
    out = Path(args.out) if args.out else (sidecar_path(name) if beside else Path(f"{Path(name).stem}.calibration.json"))
    scores, net_scores, failed = _scores(detector, authentic, not args.no_progress, log)
    # (what the output names, the calibration's detector, the detector, its scores, where it is written)
    targets = [(name, name if name.endswith(".safetensors") else detector.name, detector, scores, out)]
    if args.network_out:
        targets.append((network.name, network.name, network, net_scores, Path(args.network_out)))
    cals = []
    for _, cal_name, det, sc, _ in targets:
        try:
            cal = calibrate_scores(cal_name, sc, args.rate,
                                   args.inconclusive_rate, sources=[str(Path(a)) for a in authentic],
                                   weights_sha256=weights_checksum(det), confidence=args.confidence or None,
                                   working_size=working_size_of(det), precision=precision_of(det))
        except CalibrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cal.measured["calibration photos"] = measure(cal, sc)
        cals.append(cal)
    for folder in report:
        rs, rn, rf = _scores(detector, [folder], not args.no_progress, log)
        failed += rf
        for cal, got in zip(cals, (rs, rn)):
            cal.measured[str(Path(folder))] = measure(cal, got)
    for cal, (label, _, _, _, path) in zip(cals, targets):
        cal.save(path)
        bound = f", an upper bound at {100 * cal.confidence:.0f} % confidence" if cal.confidence else ""
        print(f"{label}: 'likely manipulated' at score >= {cal.threshold:.4f} (at most {100 * cal.false_alarm_rate:.0f} % "
              f"of {cal.n_images} authentic photos{bound}), 'no clear sign' below {cal.low_threshold:.4f}; "
              f"written to {path}")
        for where, m in cal.measured.items():
            print(f"  {where}: {m['n']} photos, {100 * m['flagged']:.1f} % flagged, "
                  f"{100 * m['inconclusive_or_flagged']:.1f} % inconclusive or flagged")
    return 1 if failed else 0
