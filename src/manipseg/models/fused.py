"""Fusion of an artifact detector (what a paste leaves behind) with a similarity detector (what was duplicated).

An artifact detector (noise, CFA, a learned network) finds the pasted target of a copy-move but not its
unchanged source; the copy-move detector finds both but nothing that was spliced from another photo.
:class:`FusedDetector` runs both on the same image and combines them:

1. **Threshold alignment.** Each map is remapped piecewise-linearly so that the detector's own decision
   threshold ``t`` lands on 0.5: ``p' = 0.5 p / t`` below ``t``, ``0.5 + 0.5 (p - t) / (1 - t)`` above.
   A pixel one detector would mark is then >= 0.5 for the fusion too, whatever the two thresholds were.
   Image scores are used as they are (both already in [0, 1], 0.5 meaning "undecided").
2. **Weighting.** The similarity map and score are multiplied by ``similarity_weight`` (in [0, 1]).
3. **Combination** (``mode``), the same for maps and scores:
   ``max``: ``p = max(p_a, w p_s)`` (a pixel is as suspicious as the more confident detector says);
   ``noisy-or``: ``p = 1 - (1 - p_a)(1 - w p_s)`` (independent evidence accumulates, so two weak signals
   make a stronger one).

4. **The mask follows the copy** (``artifact_weight_on_copy``, default 0.5). When the similarity detector
   verifies a copy (its score reaches its threshold: the copied pixels were checked to repeat their source's
   noise), the copy is the finding, and the artifact map is multiplied by ``artifact_weight_on_copy`` after
   alignment: with 0.5 (or less) it stays below the fused threshold in ``max`` mode, visible in the heatmap but
   not in the mask (``noisy-or`` accumulates sub-threshold evidence by design, so there it only weakens it).
   Only with ``similarity_weight`` 1. Without it the network's false positives elsewhere
   in the photo entered the mask and cost more than they added (NoSo, fixed-threshold F1 of the fused mask
   0.373 against 0.472 for the copy-move branch alone; with it 0.482, ``benchmarks/bench_fusion.py``). Until
   2026-12-04 this applied only when the copy's score was also at least the network's image score; a copy
   found by few keypoints (score 0.5) then left a confident network's false positives in the mask (NoSo 08_mod_02,
   13_mod): NoSo fixed-threshold F1 0.544 with that condition, 0.589 without (copy-move branch alone 0.575),
   MISD unchanged (0.318; network alone 0.316). With no verified copy the maps are combined as above. 1 turns
   this off.

The fused threshold is 0.5; ``min_region`` is the smaller of the two detectors'.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..contract import Detector, Prediction
from ..registry import get_class, load_detector

MODES = ("max", "noisy-or")


def align_to_threshold(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Monotone piecewise-linear map of [0, 1] onto itself sending ``threshold`` to 0.5."""
    t = float(np.clip(threshold, 1e-6, 1.0 - 1e-6))
    given = np.asarray(prob, dtype=np.float32)
    prob = given.reshape(-1) if given.ndim == 0 else given  # scores (0-d) too
    # in-place float32 passes instead of np.where over float temporaries (12 MP: 0.29 s -> 0.06 s); at and
    # above t the value is 0.5 + (p - t) * 0.5/(1 - t) >= 0.5 exactly, so "p >= t" stays "fused >= 0.5"
    t32 = np.float32(t)
    out = np.subtract(prob, t32, dtype=np.float32)
    out *= np.float32(0.5 / (1.0 - t))
    out += np.float32(0.5)
    np.copyto(out, np.multiply(prob, np.float32(0.5 / t), dtype=np.float32), where=prob < t32)
    return np.clip(out, 0.0, 1.0, out=out).reshape(given.shape)


def combine(a: np.ndarray | float, b: np.ndarray | float, mode: str, weight: float = 1.0) -> np.ndarray:
    """Combine artifact evidence ``a`` with similarity evidence ``b`` weighted by ``weight`` (see module doc)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.float32(weight) * np.asarray(b, dtype=np.float32)
    if mode == "max":
        return np.maximum(a, b)
    if mode == "noisy-or":
        return (1.0 - (1.0 - a) * (1.0 - b)).astype(np.float32)
    raise ValueError(f"fusion mode must be one of {', '.join(MODES)}, got {mode!r}")


def _resolve(detector: str | Path | Detector, device: str, options: dict[str, Any] | None = None) -> Detector:
    if isinstance(detector, Detector):
        if options:
            raise ValueError("options for a detector instance: configure the instance itself")
        return detector
    if options:  # a registered name with options of its own (e.g. the network's working size)
        return get_class(str(detector)).from_config(dict(options), device=device)
    return load_detector(str(detector), device=device)


class FusedDetector(Detector):
    """Artifact detector + copy-move similarity detector, maps combined by max or noisy-or."""

    name = "fused"
    summary = "Fusion: an artifact detector (default noi) + copy-move similarity; max or noisy-or of the maps."
    threshold = 0.5

    #: the artifact detector used when none is given, and its options (None: the detector's own defaults)
    default_artifact = "noi"
    default_artifact_options: dict[str, Any] | None = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, why = get_class(cls.default_artifact).availability()
        return ok, (f"its artifact detector {cls.default_artifact!r} is unavailable: {why}" if not ok else "")

    def __init__(self, device: str = "cpu", artifact: str | Path | Detector | None = None,
                 similarity: str | Path | Detector = "copymove", mode: str = "max",
                 similarity_weight: float = 1.0, parallel_pixels: float = 4e6,
                 artifact_weight_on_copy: float = 0.5, artifact_options: dict[str, Any] | None = None,
                 similarity_options: dict[str, Any] | None = None) -> None:
        if artifact is None:
            artifact = self.default_artifact
            if artifact_options is None and self.default_artifact_options is not None:
                artifact_options = dict(self.default_artifact_options)
                if str(device) != "cpu":  # the int8 graph is a CPU build of the network: elsewhere it runs fp32
                    artifact_options.pop("runtime", None)
        super().__init__(device=device, artifact=str(getattr(artifact, "name", artifact)),
                         similarity=str(getattr(similarity, "name", similarity)), mode=mode,
                         similarity_weight=similarity_weight, parallel_pixels=parallel_pixels,
                         artifact_weight_on_copy=artifact_weight_on_copy, artifact_options=artifact_options,
                         similarity_options=similarity_options)
        for label, options in (("artifact_options", artifact_options), ("similarity_options", similarity_options)):
            if options is not None and not isinstance(options, dict):
                raise ValueError(f"{label} must be a mapping of the detector's options, got {options!r}")
        if not 0.0 <= artifact_weight_on_copy <= 1.0:
            raise ValueError(f"artifact_weight_on_copy must be in [0, 1], got {artifact_weight_on_copy}")
        if mode not in MODES:
            raise ValueError(f"fusion mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0.0 <= similarity_weight <= 1.0:
            raise ValueError(f"similarity_weight must be in [0, 1], got {similarity_weight}")
        self.artifact = _resolve(artifact, device, artifact_options)
        if not isinstance(artifact, Detector) and hasattr(self.artifact, "boundary"):
            # a GSR network built here: its boundary map is not part of the fused output, so it is not computed
            # (a detector instance passed in by the caller is left as configured)
            self.artifact.boundary = False
        self.similarity = _resolve(similarity, device, similarity_options)
        self.mode = mode
        self.similarity_weight = float(similarity_weight)
        self.parallel_pixels = float(parallel_pixels)
        self.artifact_weight_on_copy = float(artifact_weight_on_copy)
        self.min_region = min(self.artifact.min_region, self.similarity.min_region)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu") -> "FusedDetector":
        """``path`` (a weights file or detector name) replaces the default artifact detector."""
        return cls(device=device) if path is None else cls(device=device, artifact=path)

    def _predict(self, image: np.ndarray) -> Prediction:
        # From ``parallel_pixels`` up, the similarity search (OpenCV, mostly one thread, bounded working size)
        # runs in a second thread while the artifact detector runs here: both release the GIL, so the wall
        # time is about the longer of the two rather than their sum (12 MP: 2.85 s instead of 3.16 s on two
        # cores). Each is deterministic on its own, so the result does not change.
        # Both branches of a large photo work below its resolution (the network's view, the copy-move
        # search's working size): their maps are then fused at the finer of the two working sizes and the
        # result brought to the photo's size once, instead of each map being up-sampled to full size and
        # aligned, combined and clipped there (12 MP: about 0.6 s of the detector's 3 s on two cores). Below
        # a working size (NoSo, MISD, any photo up to 1 MP) the maps are fused at the photo's size as before.
        h, w = image.shape[:2]
        working = (hasattr(self.artifact, "predict_working") and hasattr(self.similarity, "predict_working")
                   and self.artifact.working_scale(h, w) < 1.0
                   and h * w > getattr(self.similarity, "max_pixels", h * w))
        run_artifact = self.artifact.predict_working if working else self.artifact.predict
        run_similarity = self.similarity.predict_working if working else self.similarity.predict

        def timed_similarity() -> tuple[Prediction, float]:
            start = time.perf_counter()
            return run_similarity(image), time.perf_counter() - start

        t0 = time.perf_counter()
        if h * w >= self.parallel_pixels:
            with ThreadPoolExecutor(max_workers=1) as pool:
                future = pool.submit(timed_similarity)
                pa = run_artifact(image)
                t1 = time.perf_counter()
                ps, similarity_seconds = future.result()
        else:  # small images: the network's own threads already fill the cores; a third thread only contends
            pa = run_artifact(image)
            t1 = time.perf_counter()
            ps, similarity_seconds = timed_similarity()
        if working:  # both maps onto the finer working grid (linear, as each branch would up-sample its own)
            grid = max((pa.prob.shape, ps.prob.shape), key=lambda shape: shape[0] * shape[1])
            for pred in (pa, ps):
                if pred.prob.shape != grid:
                    pred.prob = np.clip(cv2.resize(pred.prob, (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR),
                                        0.0, 1.0)
        artifact_map = align_to_threshold(pa.prob, self.artifact.threshold)
        # a verified copy (its score reaches its threshold) is the finding; with a down-weighted similarity
        # branch the maps are combined as they are
        copy_found = ps.score >= self.similarity.threshold and self.similarity_weight == 1.0
        if copy_found and self.artifact_weight_on_copy < 1.0:  # the mask follows the copy (step 4)
            artifact_map *= np.float32(self.artifact_weight_on_copy)
            if self.artifact_weight_on_copy <= 0.5:  # strictly below the fused threshold, even where it was 1
                np.minimum(artifact_map, np.nextafter(np.float32(0.5), np.float32(0)), out=artifact_map)
        prob = combine(artifact_map, align_to_threshold(ps.prob, self.similarity.threshold), self.mode,
                       self.similarity_weight)
        if prob.shape != (h, w):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        score = float(combine(pa.score, ps.score, self.mode, self.similarity_weight))
        extras: dict[str, Any] = {
            "artifact": {"name": self.artifact.name, "score": pa.score, "seconds": t1 - t0},
            "similarity": {"name": self.similarity.name, "score": ps.score, "seconds": similarity_seconds,
                           **{k: v for k, v in ps.extras.items() if k in ("transforms", "rejected", "keypoints", "matches")}},
            "mode": self.mode,
            "mask_from": "similarity" if copy_found and self.artifact_weight_on_copy < 1.0 else "both",
        }
        return Prediction(prob=np.clip(prob, 0.0, 1.0), score=min(max(score, 0.0), 1.0), extras=extras)


class GSRFusedDetector(FusedDetector):
    """The default detector: GSR-Net's VGG-16 network with its bundled weights (``gsr-vgg16``: artifacts of
    splicing, blending, inpainting, the pasted half of a copy-move), run on a view of the photo whose shorter
    side is 384 px whatever its size, fused with the copy-move similarity detector (both halves of a copy-move)
    by the maximum of the threshold-aligned maps.

    The fixed view is the network's working scale: it found MISD's real splices best when objects are about
    the size they have in a 384-512 px photo (docs/real-forgeries.md, "the working size"), and it bounds the
    cost, so a 12-MP photo costs the network what a 0.2-MP view costs (about 1.0 s on two AVX2 cores as the
    int8 graph). The price: in a large photo the network does not see pixel-level traces (sensor noise, the
    JPEG grid) finer than the view; ``gsr-fused-vgg16`` runs the same network at the photo's own pixels (slow
    on large photos), and the copy-move branch works at up to 1 MP either way."""

    name = "gsr-fused"
    summary = ("Default: the GSR-Net VGG-16 network (bundled weights, int8 graph) on a 384-px view + copy-move "
               "similarity at up to 1 MP, maps fused by max (MODEL_CARD.md).")

    default_artifact = "gsr-vgg16"
    #: the network's view: shorter side brought to 384 px, up or down (chosen on MISD and NoSo, and for speed:
    #: docs/real-forgeries.md, "the VGG-16 network on a fixed view"), run as the int8 graph shipped beside the
    #: weights (half the fp32 time on CPUs without AMX; MISD / NoSo within 0.01 F1: MODEL_CARD.md)
    default_artifact_options = {"min_side": 384, "max_side": 384, "runtime": "int8"}


def default_network(device: str = "cpu") -> Detector:
    """The network inside the default detector, as ``gsr-fused`` builds it (its weights, view and runtime;
    fp32 on a non-CPU device), for other parts of the toolkit that need its map (the faces' photo cue)."""
    return GSRFusedDetector(device=device).artifact


class GSRFusedVGG16Detector(GSRFusedDetector):
    """The accurate, slower option: the default's VGG-16 network at the photo's own pixels (photos whose shorter
    side is below 512 up-sampled to it), fused with the copy-move similarity detector in the same way."""

    name = "gsr-fused-vgg16"
    summary = ("Accurate option: gsr-fused with the VGG-16 network at the photo's own pixels (small photos at "
               "512); slow on large photos.")

    default_artifact = "gsr-vgg16"
    default_artifact_options = None
