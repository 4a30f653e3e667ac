"""Model selection on real forgeries: score a candidate network and append one row to the results table.

A candidate (a weights file from ``manipseg train``, or a registered detector name) is scored

* on MISD (``dev/misd``: 200 real multiple-object splices + 200 authentic photos of the same collection),
  pixel level — best-dataset F1 / MCC, per-image best F1, the permuted per-image F1 (better of the map and
  its inverse, best threshold and 0.5: the TruFor / IMDL-BenCo "permute" protocol), F1 at the detector's
  own threshold — and image level: AUC of the forgeries against the authentic photos, TPR and FPR at the
  detector's threshold, TPR at 5 % FPR;
* on NoSo (``dev/noso``, 18 real copy-moves): best-dataset F1 / MCC;
* on a generated held-out set (forgeries of photos never trained on, ``manipseg generate`` with the model
  card's command; made once and cached in ``--heldout``): best-dataset F1 / MCC;

once as the network alone and once inside ``gsr-fused`` (the network + the copy-move similarity branch, as
shipped), and one row per detector is appended to ``docs/real-forgeries.md`` (the table is created with its
header when missing). MISD and NoSo are for evaluation only: never train on them.

    python benchmarks/bench_real.py --model runs/real/control/model.safetensors --row control \\
        --config configs/segment/real/control.yaml --budget "1000 x 8, 17 min"
    python benchmarks/bench_real.py --model gsr-compact --row shipped --budget "5000 x 8 (scratch), 74 min"
    python benchmarks/bench_real.py --model W --no-table --json out.json   # print only
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TABLE_HEADER = [
    "| row | detector | config | budget | MISD F1 / MCC (best dataset) | MISD per-image best F1 | MISD permuted F1 best / 0.5 "
    "| MISD F1 at own thr. | MISD image AUC | TPR / FPR at pixel thr. | TPR / FPR at calibrated verdict | TPR at 5 % FPR "
    "| NoSo F1 / MCC | generated F1 / MCC | date |",
    "|" + "---|" * 15,
]
HELDOUT_CMD = ["generate", "--sources", "{data}/natural/sun-hays", "{data}/natural/imagenet-sample", "--n", "200",
               "--kinds", "splice,copymove,poisson,removal,sbi,enhance,gan", "--size", "256", "--seed", "778",
               "--config", str(REPO / "configs" / "generate" / "generate_heldout.yaml"), "--out", "{out}"]


def _f(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def ensure_heldout(path: Path, data: Path) -> Path:
    """The generated held-out set (the model card's command), generated once."""
    if (path / "manifest.jsonl").is_file() or (path / "images").is_dir():
        return path
    args = [a.format(data=data, out=path) for a in HELDOUT_CMD]
    print(f"generating the held-out set into {path} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "manipseg.cli", *args], check=True)
    return path


def score(detector, dataset_path: Path) -> dict:
    from manipseg.eval.datasets import open_dataset
    from manipseg.eval.evaluate import evaluate

    report = evaluate(open_dataset(dataset_path), detector, progress=False)
    clean = report["runs"]["clean"]["detector"]
    return {"protocols": clean["protocols"], "permuted": clean.get("permuted"), "own": clean.get("own_threshold"),
            "image": clean.get("image_level"), "seconds_per_mp": report["timing"].get("seconds_per_megapixel"),
            "n": report["dataset"]["n_samples"]}


def candidates(model: str, fused: bool, device: str, min_side: int | None = None, max_side: int | None = None):
    """(label, detector) pairs: the network alone and, for a network, inside gsr-fused."""
    from manipseg.calibration import attach
    from manipseg.models.fused import GSRFusedDetector, GSRFusedVGG16Detector
    from manipseg.registry import load_detector

    net = load_detector(model, device=device)
    options = {k: v for k, v in (("min_side", min_side), ("max_side", max_side)) if v is not None}
    for option, value in options.items():
        if not hasattr(net, option):
            raise SystemExit(f"--{option.replace('_', '-')} applies to the GSR networks, not to {model!r}")
        setattr(net, option, int(value) or None)
    if options:
        attach(net, model)  # its calibration holds only at the working size it was measured at
    out = [(model if not model.endswith(".safetensors") else "network", net)]
    if fused and hasattr(net, "boundary"):
        # the fusion that ships with this network, with its calibration when it was made for these weights and
        # this working size (else uncalibrated, with a warning)
        cls = GSRFusedVGG16Detector if net.name == GSRFusedVGG16Detector.default_artifact else GSRFusedDetector
        det = cls(device=device, artifact=net)
        attach(det, cls.name)
        out.append(("gsr-fused with it", det))
    return out


def row_cells(name: str, label: str, config: str, budget: str, res: dict) -> str:
    m, n, g = res["misd"], res.get("noso"), res.get("generated")
    bd, bi = m["protocols"]["best_dataset"], m["protocols"]["best_image"]
    im = m["image"] or {}
    cells = [name, f"`{label}`", f"`{config}`" if config else "–", budget or "–",
             f"{_f(bd['f1'])} / {_f(bd['mcc'])}", _f(bi["f1"]),
             f"{_f(m['permuted']['f1_best_image'])} / {_f(m['permuted']['f1_fixed_0.5'])}",
             f"{_f(m['own']['f1'])} (t={m['own']['threshold']:.2f})", _f(im.get("auc")),
             f"{_f(im.get('tpr_at_threshold'))} / {_f(im.get('fpr_at_threshold'))}",
             (f"{_f(im.get('tpr_at_verdict'))} / {_f(im.get('fpr_at_verdict'))} (s={im['verdict_threshold']:.2f})"
              if "verdict_threshold" in im else "–"), _f(im.get("tpr_at_fpr_5")),
             (f"{_f(n['protocols']['best_dataset']['f1'])} / {_f(n['protocols']['best_dataset']['mcc'])}" if n else "–"),
             (f"{_f(g['protocols']['best_dataset']['f1'])} / {_f(g['protocols']['best_dataset']['mcc'])}" if g else "–"),
             time.strftime("%Y-%m-%d")]
    return "| " + " | ".join(cells) + " |"


def append_rows(table: Path, rows: list[str]) -> None:
    """Append rows under the results table's header (written first when the file or header is missing)."""
    from manipseg.io import atomic_write

    text = table.read_text(encoding="utf-8") if table.is_file() else (
        "# Real forgeries: the results table\n\nWritten by `python benchmarks/bench_real.py` (one row per scored "
        "detector; see that script's docstring for the protocols). Choose on MISD, never on generated data.\n\n")
    if TABLE_HEADER[0] not in text:
        text = text.rstrip("\n") + "\n\n" + "\n".join(TABLE_HEADER) + "\n"
    lines = text.rstrip("\n").split("\n")
    # insert after the last line of the table (the header's block)
    start = lines.index(TABLE_HEADER[0])
    end = start + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[end:end] = rows
    atomic_write(table, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", "-m", required=True, help="weights .safetensors or a registered detector name")
    p.add_argument("--row", default=None, help="row name in the table (default: the weights' run folder)")
    p.add_argument("--config", default="", help="the training config of the candidate (shown in the table)")
    p.add_argument("--budget", default="", help="its CPU budget, e.g. '1000 x 8, 17 min' (shown in the table)")
    p.add_argument("--data", default=None, help="data root (default: $MANIPSEG_DATA or ../shared/data)")
    p.add_argument("--heldout", default="runs/heldout256", help="cache folder of the generated held-out set")
    p.add_argument("--no-generated", action="store_true", help="skip the generated held-out set")
    p.add_argument("--no-fused", action="store_true", help="score the network alone only")
    p.add_argument("--table", default=str(REPO / "docs" / "real-forgeries.md"))
    p.add_argument("--no-table", action="store_true", help="print, do not append to the table")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--min-side", type=int, default=None, metavar="PX",
                   help="up-sample images whose shorter side is below PX before the network (GSRDetector min_side; "
                        "0: none; default: the detector's own)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="down-sample images whose shorter side is above PX before the network (GSRDetector "
                        "max_side; 0: none; default: the detector's own)")
    args = p.parse_args(argv)

    from manipseg.paths import data_root

    data = Path(args.data) if args.data else data_root(None)
    misd, noso = data / "dev" / "misd", data / "dev" / "noso"
    for d in (misd, noso):
        if not d.is_dir():
            print(f"error: {d} not found; give the data root with --data or $MANIPSEG_DATA", file=sys.stderr)
            return 2
    name = args.row or (Path(args.model).parent.name if args.model.endswith(".safetensors") else args.model)
    heldout = None if args.no_generated else ensure_heldout(Path(args.heldout), data)
    rows, everything = [], {}
    for label, det in candidates(args.model, not args.no_fused, args.device, args.min_side, args.max_side):
        t0 = time.perf_counter()
        res = {"misd": score(det, misd), "noso": score(det, noso)}
        if heldout is not None and label != "gsr-fused with it":
            res["generated"] = score(det, heldout)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        everything[label] = res
        rows.append(row_cells(name, label, args.config, args.budget, res))
        print(rows[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1, default=float), encoding="utf-8")
    if not args.no_table:
        append_rows(Path(args.table), rows)
        print(f"appended {len(rows)} row(s) to {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
