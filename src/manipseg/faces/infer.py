"""Per-face fake probability and heatmap for photos and videos (``manipseg faces``).

For every input this writes, atomically, into the output folder:

- ``<stem>.faces.jpg``        the picture with each face boxed, labelled with its fake probability and
                              the heatmap of the suspected blended region drawn over it;
- ``<stem>.face<k>.jpg``      the aligned crop of face k with its heatmap (k = 0, 1, ... largest first);
- ``<stem>.face<k>.prob.png`` the heatmap itself, 16-bit, crop-sized;
- one JSON line per input in ``faces.jsonl``: boxes, probabilities, file names, or the error.

Each face is judged on two pieces of evidence: the face classifier's fake probability on its crop (the mean of
the crop and its mirror image, when the calibration says so), and the **photo cue** — what the default photo
detector's network (``gsr-fused``'s, trained on splices) sees inside the face's box (the mean of the top 1 % of
its map there): a face pasted from another photo is a splice, and the network finds its hard edges and foreign
texture where a face classifier trained on blends is least sure (docs/faces.md, "The photo cue"). The two are
added as log-odds, the cue weighted (:class:`FaceDecision`): ``score = sigmoid(logit(p) + w * logit(cue) - b)``,
fake from 0.5. ``w``, ``b`` and the classifier's own threshold (when it decides alone) are calibrated on the real
faces and fakes of people never trained on (:mod:`manipseg.faces.calibrate`, stored beside the weights as
``<weights stem>.calibration.json``); without that file (other weights) the classifier decides alone, at the
threshold stored in its weights.

Videos (OpenCV) are sampled every N frames; faces are tracked across frames by box IoU and each track
gets the mean, max and count of its per-frame scores. A picture without a face is a result
("no face found"), a file that cannot be read is a reported failure; neither stops the batch.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..calibration import precision_of
from ..header import read_header
from ..io import (DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageLoadError, atomic_write, list_images, load_image,
                  output_stems, prob_to_u16, save_jpeg, save_png)
from ..paths import shipped
from ..visualize import heatmap as colour_heatmap
from .detect import Face, FaceDetector, box_iou, crop_face, crop_to_image, get_detector
from .model import AdapGRNet, FaceNetConfig
from .train import ARCH, predict_crops

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
NO_FACE = "no face found"


def bundled_weights() -> Path:
    """The face classifier shipped with the package (the path, whether or not this install has it)."""
    return shipped("faces-adapgrnet.safetensors")


@dataclass
class FaceResult:
    face: Face
    prob: float               # the face classifier's fake probability
    heat: np.ndarray          # (S, S) float32 in [0, 1], crop coordinates
    crop: np.ndarray          # (S, S, 3) uint8
    matrix: np.ndarray        # image -> crop 2x3 map
    cue: float | None = None  # the photo network's evidence inside the face box (None: not used)
    score: float = 0.0        # the decision score: fake from 0.5 (see the module docstring)

    def record(self) -> dict[str, Any]:
        return {"box": [round(float(v), 1) for v in self.face.box], "score": round(self.score, 6),
                "fake_prob": round(self.prob, 6), "photo_cue": None if self.cue is None else round(self.cue, 6),
                "detector_score": round(self.face.score, 4), "landmarks": self.face.landmarks is not None,
                "heat_max": round(float(self.heat.max()), 4)}


#: the face's decision score reaches this when it is reported fake
DECISION = 0.5
#: the photo cue looks at the face's box widened this many times (chosen on the validation faces: docs/faces.md)
CUE_BOX = 1.0
#: probabilities are clipped this far from 0 and 1 before their log-odds are taken
EPS = 1e-7


def calibration_path(weights: Path) -> Path:
    """Where the face model's calibration (its decision with the photo cue) lives: beside the weights."""
    return weights.with_name(weights.stem + ".calibration.json")


def photo_cue(prob: np.ndarray, box: tuple[float, ...], scale: float = 1.0) -> float:
    """The photo network's evidence around a face's ``box`` (x0, y0, x1, y1) widened ``scale`` times about its
    centre (a paste's seam runs along the face's outline, at or just outside the detector's box): the mean of
    the highest 1 % of its map there (at least one pixel; the box clipped to the map)."""
    h, w = prob.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = scale * (box[2] - box[0]) / 2, scale * (box[3] - box[1]) / 2
    x0, y0, x1, y1 = (int(round(v)) for v in (cx - hw, cy - hh, cx + hw, cy + hh))
    x0, y0 = min(max(0, x0), w - 1), min(max(0, y0), h - 1)
    inside = prob[y0:max(y0 + 1, min(h, y1)), x0:max(x0 + 1, min(w, x1))].ravel()
    k = max(1, inside.size // 100)
    return float(np.partition(inside, inside.size - k)[-k:].mean())


def logit(p: float | np.ndarray) -> float | np.ndarray:
    """Log-odds of a probability, clipped :data:`EPS` from 0 and 1 (float64)."""
    q = np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS)
    out = np.log(q) - np.log1p(-q)
    return float(out) if out.ndim == 0 else out


def evidence(prob: float | np.ndarray, cue: float | np.ndarray, weight: float) -> float | np.ndarray:
    """The log-odds a face's decision adds up: ``logit(prob) + weight * logit(cue)`` (arrays element-wise)."""
    return logit(prob) + float(weight) * logit(cue)


@dataclass(frozen=True)
class FaceDecision:
    """How a face is judged from the classifier's probability ``p`` and the photo cue ``c``.

    With the cue: the evidence ``z = logit(p) + cue_weight * logit(c)`` and ``score = sigmoid(z - offset)``;
    without it (no calibration, ``--no-photo-cue``, or a cue that cannot be used): the classifier alone,
    ``p`` brought onto the same scale by :func:`manipseg.models.fused.align_to_threshold` (``threshold`` ->
    0.5). Either way a face is fake when its score reaches :data:`DECISION` (0.5). ``flip``: the classifier
    judges each crop and its mirror image and averages them (:func:`manipseg.faces.train.predict_crops`)."""

    threshold: float
    cue_weight: float | None = None
    offset: float | None = None
    flip: bool = False

    @property
    def uses_cue(self) -> bool:
        return self.cue_weight is not None and self.offset is not None

    def evidence(self, prob: float, cue: float | None = None) -> float:
        """The log-odds the decision compares with its offset (the classifier's own without a cue)."""
        if cue is None or not self.uses_cue:
            return logit(prob)
        return evidence(prob, cue, self.cue_weight)

    def score(self, prob: float, cue: float | None = None) -> float:
        if cue is None or not self.uses_cue:
            from ..models.fused import align_to_threshold

            return float(align_to_threshold(np.float32(prob), self.threshold))
        z = self.evidence(prob, cue) - float(self.offset)
        return float(0.5 * (1.0 + np.tanh(z / 2)))  # the sigmoid, without overflow; exactly 0.5 at z = 0

    def alone(self) -> "FaceDecision":
        """The same classifier deciding without the photo cue."""
        return dataclasses.replace(self, cue_weight=None, offset=None)

    def with_threshold(self, threshold: float) -> "FaceDecision":
        """The classifier's threshold moved to ``threshold``; with the cue, its offset moves by the same step in
        log-odds (a stricter classifier threshold makes the combined decision stricter by as much)."""
        if not 0 < threshold < 1:
            raise ValueError(f"a threshold is a probability between 0 and 1, got {threshold}")
        offset = None if self.offset is None else self.offset + logit(threshold) - logit(self.threshold)
        return dataclasses.replace(self, threshold=float(threshold), offset=offset)

    def record(self) -> dict[str, Any]:
        """What the decision used, for the records (``cue_weight`` / ``offset`` None: the classifier alone)."""
        return {"threshold": round(self.threshold, 6), "flip": self.flip,
                "cue_weight": None if self.cue_weight is None else round(self.cue_weight, 6),
                "offset": None if self.offset is None else round(self.offset, 6)}


class FaceAnalyzer:
    """Detector + trained classifier (+ the photo cue). ``weights``: a file written by ``manipseg.faces.train``;
    its calibration file beside it, when made for these weights, sets the decision (:class:`FaceDecision`);
    ``photo_cue=False`` keeps that calibration's classifier but decides without the cue; ``calibrated=False``
    ignores the file (the classifier alone at its weights' threshold: what :mod:`manipseg.faces.calibrate`
    starts from)."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", backend: str = "auto",
                 detector: FaceDetector | None = None, photo_cue: bool = True, calibrated: bool = True) -> None:
        from ..device import resolve_device
        from ..models.weights import WeightsError, load_weights

        path = Path(weights) if weights is not None else bundled_weights()
        if not path.is_file():
            raise FileNotFoundError(f"face model weights not found: {path}; train them with "
                                    "`manipseg train configs/faces/faces.yaml` or pass --weights")
        state, info = load_weights(path)
        if info.get("arch") != ARCH:
            raise WeightsError(f"{path}: holds a {info.get('arch')!r} network, not the face classifier {ARCH!r}")
        self.cfg = FaceNetConfig.from_dict(info.get("arch_kwargs", {}))
        self.margin = float(info.get("training", {}).get("margin", 0.3))
        self.device = str(resolve_device(device))
        net = AdapGRNet(self.cfg)
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        self.net = net.to(self.device).eval()
        self.detector = detector or get_detector(backend)
        self.weights_threshold = float(info.get("threshold", 0.5))  # the classifier's own, chosen in training
        self.decision = FaceDecision(self.weights_threshold)
        self.cue_box = CUE_BOX
        self.calibration: dict[str, Any] | None = None
        self._photo_net = None
        if calibrated:
            self._load_calibration(path)
        if not photo_cue:
            self.decision = self.decision.alone()

    @property
    def threshold(self) -> float:
        """The classifier's threshold when it decides alone."""
        return self.decision.threshold

    def _load_calibration(self, path: Path) -> None:
        cal_path = calibration_path(path)
        if not cal_path.is_file():
            return
        try:
            cal = json.loads(cal_path.read_text(encoding="utf-8"))
            sha = cal["weights_sha256"]
            decision = FaceDecision(float(cal["threshold"]), float(cal["cue_weight"]), float(cal["offset"]),
                                    bool(cal["flip"]))
            box = float(cal.get("cue_box", CUE_BOX))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{cal_path}: not a face calibration file of this version ({type(exc).__name__}: "
                             f"{exc}); delete it or make it again with `python -m manipseg.faces.calibrate`") from exc
        if sha != read_header(path).get("sha256"):
            log.warning("%s was made for other face weights; the photo cue is off (run python -m "
                        "manipseg.faces.calibrate again)", cal_path)
            return
        self.calibration, self.decision, self.cue_box = cal, decision, box

    @property
    def photo_net(self):
        """The default photo detector's network (``gsr-fused``'s), loaded at first use."""
        if self._photo_net is None:
            from ..models.fused import default_network

            self._photo_net = default_network(self.device)
        return self._photo_net

    def cues(self, image: np.ndarray, faces: list[Face]) -> list[float | None]:
        """The photo cue of each face (one run of the photo network over the whole image); None for every face
        when the calibration was made with the network at another precision (then the cue is turned off)."""
        net = self.photo_net
        wanted = (self.calibration or {}).get("cue_network", {}).get("precision")
        if self.decision.uses_cue and wanted is not None and wanted != precision_of(net):
            log.warning("the photo cue was calibrated with the network in %s, it runs in %s here: the cue is off "
                        "and the classifier decides alone, at its calibrated threshold", wanted, precision_of(net))
            self.decision = self.decision.alone()
            return [None] * len(faces)
        prob = net.predict(image).prob
        return [photo_cue(prob, f.box, self.cue_box) for f in faces]

    def thresholds(self) -> dict[str, Any]:
        """What the decision used, for the records (:meth:`FaceDecision.record`)."""
        return self.decision.record()

    def classify(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The classifier's fake probabilities and heatmaps of face crops, as the decision wants them."""
        with torch.inference_mode():
            return predict_crops(self.net, crops, bf16=True, device=self.device, flip=self.decision.flip)

    def analyse(self, image: np.ndarray, faces: list[Face] | None = None) -> list[FaceResult]:
        faces = self.detector.detect(image) if faces is None else faces
        if not faces:
            return []
        crops, mats = [], []
        for f in faces:
            crop, _, m = crop_face(image, f, self.cfg.size, self.margin)
            crops.append(crop)
            mats.append(m)
        probs, heats = self.classify(crops)
        cues: list[float | None] = self.cues(image, faces) if self.decision.uses_cue else [None] * len(faces)
        return [FaceResult(f, float(p), h.astype(np.float32), c, m, q, self.decision.score(float(p), q))
                for f, p, h, c, m, q in zip(faces, probs, heats, crops, mats, cues)]


def _colour(score: float) -> tuple[int, int, int]:
    return (230, 40, 40) if score >= DECISION else (40, 200, 60)


def annotate(image: np.ndarray, results: list[FaceResult], labels: list[str] | None = None) -> np.ndarray:
    """The overview picture: heatmaps blended inside each face crop, boxes, decision scores (red: fake)."""
    out = image.astype(np.float32)
    for r in results:
        heat = crop_to_image(r.heat, r.matrix, image.shape[:2])
        cover = crop_to_image(np.ones_like(r.heat), r.matrix, image.shape[:2])
        colour = colour_heatmap(heat).astype(np.float32)
        a = (0.55 * heat * cover)[..., None]
        out = out * (1 - a) + colour * a
    out = np.clip(out, 0, 255).astype(np.uint8)
    thick = max(2, round(max(image.shape[:2]) / 400))
    for k, r in enumerate(results):
        x0, y0, x1, y1 = (int(round(v)) for v in r.face.box)
        col = _colour(r.score)
        cv2.rectangle(out, (x0, y0), (x1, y1), col, thick)
        text = labels[k] if labels else f"#{k} fake {r.score:.2f}"
        scale = max(0.45, (x1 - x0) / 260)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thick // 2))
        ty = y0 - 4 if y0 - th - 6 > 0 else y1 + th + 4
        cv2.rectangle(out, (x0, ty - th - 3), (x0 + tw + 4, ty + base - 1), col, -1)
        cv2.putText(out, text, (x0 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, thick // 2),
                    cv2.LINE_AA)
    return out


def _save_face_outputs(out_dir: Path, stem: str, results: list[FaceResult]) -> list[dict[str, Any]]:
    records = []
    for k, r in enumerate(results):
        rec = r.record()
        crop_img = (r.crop.astype(np.float32) * 0.5 + colour_heatmap(r.heat).astype(np.float32) * 0.5).astype(np.uint8)
        save_jpeg(out_dir / f"{stem}.face{k}.jpg", np.concatenate([r.crop, crop_img], axis=1), quality=92)
        save_png(out_dir / f"{stem}.face{k}.prob.png", prob_to_u16(r.heat))
        rec.update({"face": k, "crop": f"{stem}.face{k}.jpg", "heatmap": f"{stem}.face{k}.prob.png"})
        records.append(rec)
    return records


def analyse_image(an: FaceAnalyzer, path: Path, out_dir: Path, stem: str,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    t0 = time.perf_counter()
    image = load_image(path, max_pixels=max_pixels)
    results = an.analyse(image)
    save_jpeg(out_dir / f"{stem}.faces.jpg", annotate(image, results), quality=90)
    rec: dict[str, Any] = {"input": str(path), "stem": stem, "kind": "image", "width": image.shape[1],
                           "height": image.shape[0], "overview": f"{stem}.faces.jpg",
                           "faces": _save_face_outputs(out_dir, stem, results)}
    rec["result"] = NO_FACE if not results else (
        "fake face(s) found" if any(r.score >= DECISION for r in results) else "faces look real")
    rec["max_score"] = round(max((r.score for r in results), default=0.0), 6)
    rec["max_fake_prob"] = round(max((r.prob for r in results), default=0.0), 6)
    rec.update(an.thresholds())
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


@dataclass
class Track:
    box: tuple[float, ...]
    probs: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    best: FaceResult | None = None
    best_frame: np.ndarray | None = None


def track_faces(tracks: list[Track], results: list[FaceResult], frame_no: int, frame: np.ndarray,
                min_iou: float = 0.3) -> None:
    """Greedy IoU matching of this frame's faces to the tracks (a face starts a new track if none fits)."""
    free = set(range(len(tracks)))
    for r in sorted(results, key=lambda r: -r.face.score):
        best, best_iou = None, min_iou
        for t in free:
            iou = box_iou(tracks[t].box, r.face.box)
            if iou >= best_iou:
                best, best_iou = t, iou
        if best is None:
            tracks.append(Track(r.face.box))
            best = len(tracks) - 1
        else:
            free.discard(best)
        tr = tracks[best]
        tr.box = r.face.box
        tr.probs.append(r.prob)
        tr.scores.append(r.score)
        tr.frames.append(frame_no)
        if tr.best is None or r.score > tr.best.score:
            tr.best, tr.best_frame = r, frame


def analyse_video(an: FaceAnalyzer, path: Path, out_dir: Path, stem: str, every: int = 10,
                  max_frames: int | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ImageLoadError(path, "cannot open video", "OpenCV could not decode it; convert it to MP4 (H.264)")
    tracks: list[Track] = []
    frame_no, analysed = 0, 0
    try:
        while True:
            ok = cap.grab()
            if not ok:
                break
            if frame_no % every == 0:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
                    track_faces(tracks, an.analyse(rgb), frame_no, rgb)
                    analysed += 1
                    if max_frames is not None and analysed >= max_frames:
                        break
            frame_no += 1
    finally:
        cap.release()
    if analysed == 0:
        raise ImageLoadError(path, "no frame could be decoded", "the video is empty or corrupt")
    faces = []
    for k, tr in enumerate(tracks):
        rec = {"track": k, "score": round(float(np.mean(tr.scores)), 6), "max_score": round(max(tr.scores), 6),
               "fake_prob": round(float(np.mean(tr.probs)), 6), "max_fake_prob": round(max(tr.probs), 6),
               "frames": len(tr.probs), "first_frame": tr.frames[0], "last_frame": tr.frames[-1],
               "box": [round(float(v), 1) for v in tr.box]}
        if tr.best is not None:
            _save_face_outputs(out_dir, f"{stem}.track{k}", [tr.best])
            rec["crop"] = f"{stem}.track{k}.face0.jpg"
        faces.append(rec)
    if tracks:  # overview: the frame where the most suspicious track peaks, every track's mean labelled
        worst = max(tracks, key=lambda t: np.mean(t.scores))
        frame = worst.best_frame
        shown = [t.best for t in tracks if t.best_frame is frame]
        labels = [f"track {tracks.index(t)} fake {np.mean(t.scores):.2f}" for t in tracks if t.best_frame is frame]
        save_jpeg(out_dir / f"{stem}.faces.jpg", annotate(frame, shown, labels), quality=90)
    return {"input": str(path), "stem": stem, "kind": "video", "frames_read": frame_no, "frames_analysed": analysed,
            "every": every, "faces": faces, "overview": f"{stem}.faces.jpg" if tracks else None,
            "result": NO_FACE if not tracks else (
                "fake face(s) found" if any(f["score"] >= DECISION for f in faces) else "faces look real"),
            "max_score": round(max((f["score"] for f in faces), default=0.0), 6),
            "max_fake_prob": round(max((f["fake_prob"] for f in faces), default=0.0), 6),
            **an.thresholds(), "seconds": round(time.perf_counter() - t0, 3)}


def expand_inputs(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Files, directories (images and videos inside, non-recursive) and globs; (files, problems)."""
    files, problems, plain = [], [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not found:
                problems.append(f"{item}: directory contains no image or video files")
            files.extend(found)
        else:
            plain.append(item)
    more, probs = list_images(plain) if plain else ([], [])
    seen, unique = set(), []
    for f in files + more:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique, problems + probs


def run_faces(an: FaceAnalyzer, files: list[Path], out_dir: Path, every: int = 10, max_frames: int | None = None,
              progress: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[dict[str, Any]]:
    """Analyse every file; failures are recorded with an ``error`` key and the batch goes on."""

    out_dir.mkdir(parents=True, exist_ok=True)
    stems = output_stems(files)
    records: list[dict[str, Any]] = []
    for path in tqdm(files, unit="file", disable=not progress or len(files) < 2, desc="faces"):
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                rec = analyse_video(an, path, out_dir, stems[path], every, max_frames)
            else:
                rec = analyse_image(an, path, out_dir, stems[path], max_pixels=max_pixels)
        except ImageLoadError as exc:
            rec = {"input": str(path), "error": str(exc)}
            log.error("skipped %s", exc)
        except (ValueError, OSError, RuntimeError, MemoryError) as exc:
            rec = {"input": str(path), "error": f"{path}: {type(exc).__name__}: {exc}"}
            log.error("skipped %s: %s: %s", path, type(exc).__name__, exc)
        records.append(rec)
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(out_dir / "faces.jsonl", lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"))
    return records
