"""Print the ablation table (layout of GSR-Net's Table 2) from `manipseg evaluate` reports.

    python scripts/ablation_table.py --row "DL + CP" runs/eval/abl_dl_cp --row "GS-Net" runs/eval/abl_gs \\
        --row "GSR-Net" runs/eval/abl_gsr --datasets heldout256 noso

Each ``--row LABEL DIR`` names a folder holding one evaluation folder per dataset (``DIR/<dataset>/report.json``,
as written by ``manipseg evaluate DATASET --out DIR/<dataset>``). Cells are best-dataset F1 / MCC (the
paper's Table 1-2 protocol); the all-tampered baseline of each dataset is the last row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def best_dataset(report: dict, which: str) -> tuple[float, float]:
    proto = report["runs"]["clean"][which]["protocols"]["best_dataset"]
    return float(proto["f1"]), float(proto["mcc"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", nargs=2, action="append", metavar=("LABEL", "DIR"), required=True)
    ap.add_argument("--datasets", nargs="+", required=True, help="sub-folder names, one per dataset column")
    args = ap.parse_args(argv)
    reports: dict[tuple[str, str], dict] = {}
    for label, folder in args.row:
        for ds in args.datasets:
            path = Path(folder) / ds / "report.json"
            if not path.is_file():
                print(f"error: {path} not found: run `manipseg evaluate <{ds}> --model <{label} weights> "
                      f"--out {path.parent}` first", file=sys.stderr)
                return 2
            reports[(label, ds)] = json.loads(path.read_text())
    print("| method | " + " | ".join(f"{ds} F1 | {ds} MCC" for ds in args.datasets) + " |")
    print("|---|" + "---|---|" * len(args.datasets))
    for label, _ in args.row:
        cells = [f"{v:.3f}" for ds in args.datasets for v in best_dataset(reports[(label, ds)], "detector")]
        print(f"| {label} | " + " | ".join(cells) + " |")
    first = args.row[0][0]
    cells = [f"{v:.3f}" for ds in args.datasets for v in best_dataset(reports[(first, ds)], "baseline")]
    print("| all-tampered baseline | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
