"""Draw the README's example figure: the bundled example forgeries, their true masks and what the default
detector marks on them.

    python scripts/readme_example.py                  # writes docs/example.jpg with the default detector
    python scripts/readme_example.py --model noi --out /tmp/noi_example.png

The examples are forgeries that ``scripts/make_examples.py`` made from public-domain photos shipped in
scikit-image; columns: forgery, ground-truth mask, heatmap overlay with the detector's mask outlined. The
per-image F1 at the detector's own threshold and its image score are printed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from manipseg.examples import example_mask, example_paths
from manipseg.eval.metrics import f1_from_counts
from manipseg.io import load_image, load_mask, save_jpeg, save_png
from manipseg.postprocess import prob_to_mask
from manipseg.registry import default_model, load_detector
from manipseg.visualize import grid, overlay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="detector name or weights file (default: the bundled default)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "example.jpg"), help="a .jpg or .png file")
    ap.add_argument("--cell", type=int, default=256, help="height of each picture in the figure")
    args = ap.parse_args()
    name = args.model or default_model()
    det = load_detector(name)
    rows = []
    for path in example_paths():
        image = load_image(path)
        truth = load_mask(example_mask(path))
        pred = det.predict(image)
        mask = prob_to_mask(pred.prob, det.threshold, min_region=det.min_region)
        tp, fp, fn = (int(np.count_nonzero(a & b)) for a, b in ((mask, truth), (mask, ~truth), (~mask, truth)))
        f1 = float(f1_from_counts(np.array(tp), np.array(fp), np.array(fn)))
        print(f"{path.stem:10s} {name}: image score {pred.score:.2f}, F1 at threshold {det.threshold:.2f} = {f1:.3f}")
        rows.append([image, truth, overlay(image, pred.prob, mask)])
    figure = grid(rows, cell=args.cell)
    if args.out.lower().endswith((".jpg", ".jpeg")):
        save_jpeg(args.out, figure)
    else:
        save_png(args.out, figure)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
