"""Speed and accuracy of the copy-move detector on synthetic copy-moves.

    python benchmarks/bench_copymove.py                          # s/MP at 1, 4, 12 MP; IoU on 3 kinds of copy
    python benchmarks/bench_copymove.py --sizes 1 4 --repeats 3 --threads 2
    python benchmarks/bench_copymove.py --config '{"keypoint_pixels": 1.5e6, "max_pixels": 1.5e6}'

Timing: skimage's astronaut resized to each size (4:3, mild noise) with one textured region copied
elsewhere; the median of ``--repeats`` runs after a warm-up, as wall-clock time and as the process's
CPU time (``time.process_time``, all threads; on a busy machine the CPU time is the steadier figure).
Images are analysed at ``max_pixels`` (1 MP by default; SIFT at ``keypoint_pixels``, 1 MP) whatever their
size, so the cost per image is nearly constant and s/MP falls for large images.
Accuracy: IoU at the detector's threshold between the map and the true source + target mask, for a
plain shift, a 15 degree rotation with 1.1 scale, and the latter re-saved as JPEG quality 85.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import cv2
import numpy as np
from skimage import data

from manipseg.models.copymove import CopyMoveDetector
from bench_detectors import make_image  # same folder: run as python benchmarks/bench_copymove.py


def copy_move(image: np.ndarray, box: tuple[int, int, int, int], shift: tuple[float, float], angle: float = 0.0,
              scale: float = 1.0, jpeg: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Copy ``box`` (x0, y0, x1, y1) rotated/scaled about its centre and shifted; returns image, source+target mask."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    region = np.zeros((h, w), np.uint8)
    region[y0:y1, x0:x1] = 1
    matrix = cv2.getRotationMatrix2D(((x0 + x1) / 2, (y0 + y1) / 2), angle, scale)
    matrix[:, 2] += shift
    target = cv2.warpAffine(region, matrix, (w, h), flags=cv2.INTER_NEAREST) > 0
    out = image.copy()
    out[target] = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)[target]
    if jpeg is not None:
        _, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out, target | (region > 0)


def forged_photo(megapixels: float) -> np.ndarray:
    image = make_image(megapixels)
    h, w = image.shape[:2]
    box = (int(0.27 * w), int(0.04 * h), int(0.5 * w), int(0.24 * h))  # hair and face: textured
    return copy_move(image, box, (0.4 * w, 0.55 * h))[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="+", default=[1.0, 4.0, 12.0], help="megapixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1)")
    p.add_argument("--config", default="{}", help="JSON of CopyMoveDetector settings (default: its defaults)")
    args = p.parse_args()
    cv2.setNumThreads(args.threads)
    det = CopyMoveDetector(**json.loads(args.config))

    print(f"copymove speed ({args.threads} OpenCV thread(s), median of {args.repeats}; settings {args.config})")
    for mp in args.sizes:
        image = forged_photo(mp)
        det.predict(image)
        wall, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            pred = det.predict(image)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        sec, sec_cpu = statistics.median(wall), statistics.median(cpu)
        real_mp = image.shape[0] * image.shape[1] / 1e6
        print(f"  {real_mp:5.2f} MP  wall {sec:6.3f} s = {sec / real_mp:6.3f} s/MP  "
              f"cpu {sec_cpu:6.3f} s = {sec_cpu / real_mp:6.3f} s/MP  score {pred.score:.2f}  "
              f"keypoints {pred.extras['keypoints']}")

    print("copymove IoU with the true source+target mask (threshold 0.5)")
    cases = {"shift": {}, "rotate15-scale1.1": {"angle": 15, "scale": 1.1},
             "rotate15-scale1.1-jpeg85": {"angle": 15, "scale": 1.1, "jpeg": 85}}
    scenes = {"chelsea": (data.chelsea(), (200, 150, 300, 250), (-180, -120)),
              "coffee": (data.coffee(), (40, 260, 160, 380), (380, -200)),
              "astronaut": (data.astronaut(), (140, 20, 260, 120), (200, 300))}
    for case, kw in cases.items():
        ious = []
        for image, box, shift in scenes.values():
            forged, truth = copy_move(image, box, shift, **kw)
            mask = det.predict(forged).prob >= det.threshold
            ious.append((mask & truth).sum() / max((mask | truth).sum(), 1))
        print(f"  {case:26s} " + "  ".join(f"{n} {v:.3f}" for n, v in zip(scenes, ious)))


if __name__ == "__main__":
    main()
