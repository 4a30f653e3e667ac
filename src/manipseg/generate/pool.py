"""A pool of authentic images (with their annotated regions) that the generator draws from.

Images are found recursively under the given folders (skipping hidden folders and annotation folders
named in ``ANNOTATION_DIRS``, e.g. ``segmentations/`` and ``masks/``), sorted (so the pool's order, and therefore every
generated sample, does not depend on the file system), decoded lazily, resized so the shorter side is
``size`` and centre-cropped to ``size`` x ``size``, and kept in an LRU cache; or, when a sample asks for a
:class:`View`, a window of the photo at (or near) its native pixels.

Annotated regions are attached when the folder layout has them (``<root>/images/<split>/<stem>.jpg``):

- COCO polygons from ``<root>/instances_<split>.json`` (or ``<root>/annotations/instances_<split>.json``),
  crowd (RLE) annotations skipped;
- YOLO-seg polygons from ``<root>/yolo-seg-labels/<split>/<stem>.txt`` (or ``<root>/labels/...``) when
  the image is not in a COCO JSON;
- BSDS500 human segmentations ``<root>/segmentations/<split>/<stem>_<k>.png`` (one label map per
  annotator, every labelled region of every annotator is a candidate).
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..io import IMAGE_SUFFIXES, ImageLoadError, load_image

log = logging.getLogger(__name__)


#: folders whose images are annotations (label maps, masks), never authentic photos
ANNOTATION_DIRS = {"segmentations", "masks", "labels", "yolo-seg-labels", "annotations", "boundaries", "groundtruth"}


class SourceError(ValueError):
    """A source folder that cannot be used (missing, not a folder, no images)."""


@dataclass
class ObjectSet:
    """Annotated regions of one image at pool geometry, stored compactly as label maps.

    Region ``k`` is ``maps[entries[k][0]] == entries[k][1]``; ``areas[k]`` is its image fraction and
    ``ids[k]`` a human-readable id (``coco:<ann id>``, ``bsds:<annotator>:<label>``, ``yolo:<line>``).
    """

    maps: list[np.ndarray] = field(default_factory=list)
    entries: list[tuple[int, int]] = field(default_factory=list)
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def mask(self, k: int) -> np.ndarray:
        m, label = self.entries[k]
        return self.maps[m] == label


@dataclass(frozen=True)
class View:
    """A ``size`` x ``size`` window of a photo rescaled by ``scale`` (relative to its native pixels;
    raised to the smallest scale that still fits the window), at fractional position ``(fx, fy)`` in [0, 1]
    of the free room. ``scale=1`` keeps the native pixels exactly (camera noise, JPEG block grid)."""

    scale: float = 1.0
    fx: float = 0.5
    fy: float = 0.5


def _fit(img_hw: tuple[int, int], size: int, view: View | None = None) -> tuple[float, int, int, int, int]:
    """Scale so the shorter side is ``size`` (or as ``view`` says); returns (scale, new_w, new_h, crop_x, crop_y)."""
    h, w = img_hw
    s = size / min(h, w)
    fx = fy = 0.5
    if view is not None:
        s, fx, fy = max(s, float(view.scale)), float(view.fx), float(view.fy)
    nw, nh = max(size, int(round(w * s))), max(size, int(round(h * s)))
    if view is None:
        return s, nw, nh, (nw - size) // 2, (nh - size) // 2
    return s, nw, nh, int(fx * (nw - size)), int(fy * (nh - size))


def _resize_crop(img: np.ndarray, size: int, nearest: bool = False, view: View | None = None) -> np.ndarray:
    s, nw, nh, cx, cy = _fit(img.shape[:2], size, view)
    if (nw, nh) != (img.shape[1], img.shape[0]):
        interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    return np.ascontiguousarray(img[cy:cy + size, cx:cx + size])


class ImagePool:
    """Authentic images under ``dirs`` (recursively), served at ``size`` x ``size`` with their regions.

    ``cache_size`` decoded images (per size) are kept (about 0.2-0.5 MB each at 256 px with their
    region maps, so the default 1024 costs at most ~0.5 GB per worker); the pool pickles without its
    cache, so it can be sent to DataLoader / multiprocessing / Ray workers cheaply.
    """

    def __init__(self, dirs: Sequence[str | os.PathLike] | str | os.PathLike, size: int = 256,
                 cache_size: int = 1024, annotations: bool = True) -> None:
        if isinstance(dirs, (str, os.PathLike)):
            dirs = [dirs]
        if not dirs:
            raise SourceError("no source folders given: pass at least one folder of authentic images")
        self.size = int(size)
        self.cache_size = int(cache_size)
        self.annotations = annotations
        self.paths: list[Path] = []
        self.ids: list[str] = []
        for d in dirs:
            root = Path(d)
            if not root.exists():
                raise SourceError(f"{root}: source folder does not exist (check the path)")
            if not root.is_dir():
                raise SourceError(f"{root}: is a file, not a folder of images")
            found = sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                            and not any(part.startswith(".") or part.lower() in ANNOTATION_DIRS
                                       for part in p.relative_to(root).parts[:-1])),
                           key=lambda p: p.relative_to(root).as_posix())
            if not found:
                raise SourceError(f"{root}: contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                                  "searched recursively")
            for p in found:
                self.paths.append(p)
                self.ids.append(f"{root.name}/{p.relative_to(root).as_posix()}")
        self._cache: OrderedDict = OrderedDict()
        self._coco: dict[Path, dict | None] = {}
        #: index -> why, for photos that failed to decode (skipped from then on)
        self.unreadable: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        state["_coco"] = {}
        return state

    def image(self, index: int, size: int | None = None) -> np.ndarray:
        """RGB uint8 ``size`` x ``size`` image ``index`` (treat as read-only: it is cached)."""
        return self.get(index, size)[0]

    def objects(self, index: int, size: int | None = None) -> ObjectSet:
        return self.get(index, size)[1]

    def get(self, index: int, size: int | None = None, view: View | None = None) -> tuple[np.ndarray, ObjectSet]:
        """Image ``index`` and its regions at ``size`` x ``size``: fitted and centre-cropped (cached), or the
        window ``view`` describes (only the decoded photo is cached then).

        A photo that cannot be decoded is reported once (a warning naming the file and why) and skipped
        from then on: the next readable photo of the pool takes its place, so a folder with some broken
        files still yields every sample asked for. :class:`SourceError` when no photo is readable."""
        index = int(index)
        for _ in range(len(self.paths)):
            if index not in self.unreadable:
                try:
                    return self._get(index, size, view)
                except ImageLoadError as exc:
                    self.unreadable[index] = str(exc)
                    log.warning("skipping unreadable source photo (reported once): %s", exc)
            index = (index + 1) % len(self.paths)
        raise SourceError(f"none of the {len(self.paths)} source photos can be read (first: "
                          f"{next(iter(self.unreadable.values()), '?')})")

    def _get(self, index: int, size: int | None, view: View | None) -> tuple[np.ndarray, ObjectSet]:
        size = int(size or self.size)
        key = (int(index), size) if view is None else (int(index), "raw")
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        path = self.paths[index]
        if view is not None:
            raw = hit if hit is not None else self._remember(key, load_image(path))
            img = _resize_crop(raw, size, view=view)
            objs = self._load_objects(path, raw.shape[:2], size, view) if self.annotations else ObjectSet()
            return img, objs
        if hit is not None:
            return hit
        raw = load_image(path)
        img = _resize_crop(raw, size)
        objs = self._load_objects(path, raw.shape[:2], size) if self.annotations else ObjectSet()
        for m in objs.maps:
            m.setflags(write=False)
        return self._remember(key, (img, objs))

    def _remember(self, key, value):
        for arr in (value if isinstance(value, tuple) else (value,)):
            if isinstance(arr, np.ndarray):
                arr.setflags(write=False)
        self._cache[key] = value
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    # ----- annotations -------------------------------------------------------------------------
    @staticmethod
    def _layout(path: Path) -> tuple[Path, str] | None:
        if path.parent.parent.name == "images":
            return path.parent.parent.parent, path.parent.name
        return None

    def _coco_index(self, json_path: Path) -> dict | None:
        if json_path not in self._coco:
            try:
                data = json.loads(json_path.read_text())
                by_name: dict[str, list[dict]] = {}
                names = {im["id"]: im["file_name"] for im in data.get("images", [])}
                for ann in data.get("annotations", []):
                    name = names.get(ann.get("image_id"))
                    if name is not None and not ann.get("iscrowd", 0) and isinstance(ann.get("segmentation"), list):
                        by_name.setdefault(name, []).append(ann)
                self._coco[json_path] = by_name
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s: cannot read COCO annotations (%s); its images get no object regions", json_path, exc)
                self._coco[json_path] = None
        return self._coco[json_path]

    def _load_objects(self, path: Path, raw_hw: tuple[int, int], size: int, view: View | None = None) -> ObjectSet:
        layout = self._layout(path)
        if layout is None:
            return ObjectSet()
        root, split = layout
        s, _, _, cx, cy = _fit(raw_hw, size, view)
        polys: list[tuple[str, list[np.ndarray]]] = []
        for jp in (root / f"instances_{split}.json", root / "annotations" / f"instances_{split}.json"):
            if jp.is_file():
                index = self._coco_index(jp)
                if index and path.name in index:
                    for ann in index[path.name]:
                        rings = [np.asarray(seg, dtype=np.float64).reshape(-1, 2) for seg in ann["segmentation"]
                                 if len(seg) >= 6]
                        if rings:
                            polys.append((f"coco:{ann.get('id')}", rings))
                    break
        if not polys:
            h, w = raw_hw
            for lp in (root / "yolo-seg-labels" / split / f"{path.stem}.txt", root / "labels" / split / f"{path.stem}.txt"):
                if lp.is_file():
                    for n, line in enumerate(lp.read_text().splitlines()):
                        vals = line.split()
                        if len(vals) >= 7 and (len(vals) - 1) % 2 == 0:
                            xy = np.asarray(vals[1:], dtype=np.float64).reshape(-1, 2) * (w, h)
                            polys.append((f"yolo:{n}", [xy]))
                    break
        objs = ObjectSet()
        ids, areas = [], []
        for oid, rings in polys:
            m = np.zeros((size, size), dtype=np.uint8)
            cv2.fillPoly(m, [np.rint(r * s - (cx, cy)).astype(np.int32) for r in rings], 1)
            a = np.count_nonzero(m)
            if a:
                objs.maps.append(m)
                objs.entries.append((len(objs.maps) - 1, 1))
                ids.append(oid)
                areas.append(a / m.size)
        seg_dir = root / "segmentations" / split
        if seg_dir.is_dir():
            for sp in sorted(seg_dir.glob(f"{path.stem}_*.png")):
                lab = cv2.imread(str(sp), cv2.IMREAD_UNCHANGED)
                if lab is None or lab.ndim != 2:
                    log.warning("%s: unreadable segmentation, skipped", sp)
                    continue
                lab = _resize_crop(lab.astype(np.uint16), size, nearest=True, view=view)
                counts = np.bincount(lab.ravel())
                objs.maps.append(lab.astype(np.uint8) if len(counts) <= 256 else lab)
                annot = sp.stem.rsplit("_", 1)[-1]
                for label in np.flatnonzero(counts):
                    objs.entries.append((len(objs.maps) - 1, int(label)))
                    ids.append(f"bsds:{annot}:{int(label)}")
                    areas.append(counts[label] / lab.size)
        objs.ids = ids
        objs.areas = np.asarray(areas, dtype=np.float64)
        return objs
