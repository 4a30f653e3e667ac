"""What every shipped weights file predicts on fixed inputs, as summary statistics (tests/test_shipped_predictions.py).

Recorded with the code before the training-engine and SBI-core refactors (commit 888a245), so that the test shows
those refactors left every shipped model's predictions unchanged::

    git worktree add /tmp/old 888a245
    PYTHONPATH=/tmp/old/src python tests/shipped_support.py      # writes tests/data/shipped_predictions.json

The three ``gsr-fused`` cases were re-recorded with the then current code when the default's network became
``gsr-vgg16`` on a 384-px view (2026-12-03 #3), and again when that network became the shipped int8 graph
(2026-12-03 #4); the file's ``_gsr-fused_re-recorded`` entry says so.

Inputs: the bundled example forgeries (the GSR detectors and copymove), scikit-image's astronaut with a fixed
face box and landmarks (the face classifier, no face detector involved), a seeded image and mask (the GAN
blender). Each output is reduced to its mean, standard deviation, maximum and a fixed random projection (which
moves with any real change) plus the image score: statistics rather than bytes, because the runtime (ONNX
Runtime or torch) is chosen by measurement and other CPUs round differently.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "shipped_predictions.json"
DETECTORS = ("gsr-compact", "gsr-fused", "gsr-vgg16", "copymove")
EXAMPLES = ("splice", "removal", "copymove")


def stats(a) -> list[float]:
    x = np.asarray(a, dtype=np.float64).ravel()
    weights = np.random.default_rng(0).random(x.size)
    return [float(x.mean()), float(x.std()), float(x.max()), float(weights @ x / x.size)]


def _example(name: str) -> np.ndarray:
    import cv2

    path = HERE.parent / "src" / "manipseg" / "examples" / f"{name}.png"
    if "manipseg" in sys.modules:  # the examples of the package being measured
        path = Path(sys.modules["manipseg"].__file__).parent / "examples" / f"{name}.png"
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def detector_cases() -> dict[str, list[float]]:
    from manipseg.registry import load_detector

    out = {}
    for name in DETECTORS:
        det = load_detector(name)
        for ex in EXAMPLES:
            pred = det.predict(_example(ex))
            out[f"{name}/{ex}"] = stats(pred.prob) + [float(pred.score)]
    return out


def face_case() -> dict[str, list[float]]:
    from skimage.data import astronaut

    from manipseg.faces.detect import Face
    from manipseg.faces.infer import FaceAnalyzer
    from manipseg.faces.sbi import ellipse_landmarks

    image = np.ascontiguousarray(astronaut())
    x0, y0, side = 165.0, 40.0, 110.0  # the astronaut's face
    landmarks = np.zeros((68, 2))
    ring = ellipse_landmarks(int(side), n=68)
    landmarks[:, 0], landmarks[:, 1] = ring[:, 0] + x0, ring[:, 1] + y0
    face = Face((x0, y0, x0 + side, y0 + side), landmarks, 1.0)
    analyzer = FaceAnalyzer(detector=object())  # faces given: the detector is never asked
    (result,) = analyzer.analyse(image, faces=[face])
    return {"faces/astronaut": stats(result.heat) + [float(result.prob)]}


def blender_case() -> dict[str, list[float]]:
    import torch

    from manipseg.gan.model import load_blender

    rng = np.random.default_rng(5)
    image = torch.from_numpy(rng.random((1, 3, 64, 64), dtype=np.float32))
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 16:44, 20:48] = 1.0
    with torch.no_grad():
        out = load_blender()(image, mask)
    return {"gan-blender/seeded": stats(out.numpy())}


def compute() -> dict[str, list[float]]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return {**detector_cases(), **face_case(), **blender_case()}


if __name__ == "__main__":
    import manipseg

    FIXTURE.parent.mkdir(exist_ok=True)
    result = compute()
    FIXTURE.write_text(json.dumps({"_recorded_with": manipseg.__file__.split("/src/")[0].rsplit("/", 1)[-1],
                                   **result}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(result)} cases to {FIXTURE}")
