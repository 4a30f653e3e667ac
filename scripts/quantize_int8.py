"""Make the int8 graph of a network's weights (``<weights>.int8.onnx`` beside them): what ``runtime: int8``
runs, and what the default detector's network view uses on the CPU.

    python scripts/quantize_int8.py src/manipseg/weights/gsr-vgg16.safetensors          # the shipped one

The convolutions are quantised post-training by ONNX Runtime's static quantiser (int8 weights per output
channel, uint8 activations per tensor, QDQ format). Activation ranges (min / max) are measured on the graph's
inputs for authentic photos seen exactly as the detector sees them (its working view, default the shorter
side brought to 384 px): by default the first ``--per-folder`` photos of each of ``natural/coco/images/train2017``
and ``natural/bsds500/images/train`` of the shared data — neither the verdict's calibration photos (sun-hays,
imagenet-sample) nor any benchmark (MISD, NoSo), which are only evaluated. Deterministic: same photos, same
graph. The accuracy it costs is measured in the model card (MISD / NoSo best-dataset F1 against fp32).

The int8 network's maps are not the fp32 network's exactly (on these photos they run a little lower), so it
gets its own pixel threshold, stored in the graph (``threshold``): the value that marks the same share of
these authentic photos' pixels as the fp32 network's threshold does (quantile matching), so the mask and the
fusion's alignment keep the false-positive rate the fp32 threshold was chosen for. An existing int8 graph of
the same weights is kept (``--force`` quantises again) and only the threshold is fitted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from manipseg.io import list_images, load_image
from manipseg.models.gsr import GSRDetector
from manipseg.models.runtime import OnnxNetwork, graph_metadata, int8_graph_path, quantize_graph, set_graph_metadata
from manipseg.paths import data_root

FOLDERS = ("natural/coco/images/train2017", "natural/bsds500/images/train")


class Recorder:
    """Stands in for the detector's ONNX session: keeps every input it is given, then runs it."""

    def __init__(self, inner) -> None:
        self.inner, self.feeds = inner, []

    def run(self, tile: np.ndarray, scale: np.ndarray, offset: np.ndarray):
        self.feeds.append(self.inner.feed(tile, scale, offset))
        return self.inner.run(tile, scale, offset)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path, help="a GSR network's .safetensors (its fp32 graph is exported if missing)")
    ap.add_argument("--data", default=None, help="shared data root (default: $MANIPSEG_DATA or ../shared/data)")
    ap.add_argument("--folders", nargs="+", default=list(FOLDERS), help="photo folders under the data root")
    ap.add_argument("--per-folder", type=int, default=32, help="photos taken from each folder (sorted by name)")
    ap.add_argument("--min-side", type=int, default=384, help="the view the detector will use (shorter side)")
    ap.add_argument("--max-side", type=int, default=384)
    ap.add_argument("--out", type=Path, default=None, help="default: <weights>.int8.onnx")
    ap.add_argument("--force", action="store_true", help="quantise again even if the int8 graph exists")
    args = ap.parse_args()

    detector = GSRDetector.from_weights(args.weights, runtime="onnx", min_side=args.min_side, max_side=args.max_side)
    source = detector._onnx.path
    recorder = Recorder(detector._onnx)
    detector._onnx = recorder
    photos = []
    for folder in args.folders:
        found, _ = list_images([str(data_root(args.data) / folder)])
        if not found:
            print(f"error: no photos in {data_root(args.data) / folder}; give --data or --folders", file=sys.stderr)
            return 2
        photos += found[:args.per_folder]
    for path in photos:
        detector.predict(load_image(path))
    out = args.out or int8_graph_path(args.weights)
    note = (f"min/max of {len(recorder.feeds)} inputs: the first {args.per_folder} photos of "
            f"{', '.join(args.folders)}, view {args.min_side}-{args.max_side} px")
    existing = graph_metadata(out) if out.is_file() else {}
    same_weights = existing.get("weights_sha256") == graph_metadata(source).get("weights_sha256")
    if args.force or existing.get("precision") != "int8" or not same_weights:
        quantize_graph(source, out, recorder.feeds, note=note)
        print(f"{out} ({out.stat().st_size / 1e6:.1f} MB) from {source.name}: {note}")
    # the pixel threshold: same share of the calibration photos' pixels above it as above the fp32 threshold
    int8 = OnnxNetwork(out)
    fp32_maps = np.concatenate([detector._onnx.inner.session.run(None, f)[0].ravel() for f in recorder.feeds])
    int8_maps = np.concatenate([int8.session.run(None, f)[0].ravel() for f in recorder.feeds])
    share = float((fp32_maps >= detector.threshold).mean())
    threshold = float(np.quantile(int8_maps, 1.0 - share))
    set_graph_metadata(out, {"threshold": f"{threshold:.6f}",
                             "threshold_note": f"quantile-matched to the fp32 threshold {detector.threshold:g} "
                                               f"({100 * share:.2f} % of the calibration photos' pixels)"})
    print(f"pixel threshold {threshold:.4f} (fp32 {detector.threshold:g}: {100 * share:.2f} % of the calibration "
          f"photos' pixels above it; mean map fp32 {fp32_maps.mean():.4f}, int8 {int8_maps.mean():.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
