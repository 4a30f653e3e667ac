"""Ship a training run's model inside the package (what makes it `manipseg predict`'s default).

    python scripts/ship_model.py runs/default --name gsr-compact --card "compact, 5000 steps ..., NoSo F1 ..."

Copies ``RUN/model.safetensors`` to ``src/manipseg/weights/<name>.safetensors`` (checksum verified, the card
line added to its metadata; ``manipseg models`` prints it) and the run's ``train.csv`` and ``config.yaml`` to
``docs/<name>-train-log.csv`` / ``docs/<name>-config.yaml`` so the training that produced it stays on record,
and exports the network to ``<name>.onnx`` beside the weights (the ONNX Runtime graph, same numbers; the
detector checks that its recorded checksum is that of the weights).

``--threshold-set DIR`` sets the network's pixel threshold to the best-dataset F1 threshold on a *generated*
validation set (``manipseg generate`` output; never a real benchmark that is reported), for runs trained
without in-run validation:

    manipseg generate --sources $D/natural/sun-hays $D/natural/imagenet-sample --n 200 --size 256 --seed 1000003 \
        --kinds splice,copymove,poisson,removal,sbi,enhance,composite --config configs/generate/generate_heldout.yaml --out runs/val256
    python scripts/ship_model.py runs/real/long --weights snapshots/model_00030000.safetensors --name gsr-compact \
        --threshold-set runs/val256 --card "..."
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from manipseg.io import atomic_write
from manipseg.models.runtime import export_beside
from manipseg.models.weights import read_info as load_network_info
from manipseg.models.weights import ship

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="training run folder (manipseg train --out RUN)")
    ap.add_argument("--name", required=True, help="registered detector name, e.g. gsr-compact")
    ap.add_argument("--card", required=True, help="one line: data, steps, headline figures")
    ap.add_argument("--weights", default="model.safetensors", help="weights file inside the run folder")
    ap.add_argument("--threshold-set", type=Path, default=None,
                    help="generated validation set whose best-dataset F1 threshold becomes the pixel threshold")
    ap.add_argument("--fp16", action="store_true", help="store the tensors as float16 (half the size)")
    args = ap.parse_args()
    threshold = note = None
    if args.threshold_set is not None:
        from manipseg.eval.datasets import open_dataset
        from manipseg.eval.evaluate import evaluate
        from manipseg.registry import load_detector

        report = evaluate(open_dataset(args.threshold_set), load_detector(str(args.run / args.weights)), progress=False)
        best = report["runs"]["clean"]["detector"]["protocols"]["best_dataset"]
        threshold, note = best["f1_threshold"], (f"best-dataset F1 threshold ({best['f1']:.3f}) on the generated "
                                                 f"validation set {args.threshold_set.name}")
        print(f"threshold {threshold:.2f}: {note}")
    dest = ship(args.run / args.weights, ROOT / "src" / "manipseg" / "weights" / f"{args.name}.safetensors", args.card,
                threshold=threshold, threshold_note=note, half=args.fp16)
    print(f"wrote {dest.relative_to(ROOT)} ({dest.stat().st_size / 1e6:.1f} MB)")
    # the ONNX Runtime graph holds float32 weights: shipped for float32 networks without a DCT stream; a
    # float16-stored network (gsr-vgg16: the graph would be 100 MB) gets its graph exported into the user's
    # cache on first use instead (manipseg.models.runtime)
    if not args.fp16 and not load_network_info(dest).get("arch_kwargs", {}).get("dct_stream"):
        graph = export_beside(dest)  # the ONNX Runtime graph of the same weights (manipseg.models.runtime)
        print(f"wrote {graph.relative_to(ROOT)} ({graph.stat().st_size / 1e6:.1f} MB)")
    for src, suffix in (("train.csv", "train-log.csv"), ("config.yaml", "config.yaml")):
        out = ROOT / "docs" / f"{args.name}-{suffix}"
        atomic_write(out, lambda tmp, s=args.run / src: shutil.copyfile(s, tmp))
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
