"""Authentic photos with repeated structures: the false-alarm trap of a copy-move detector.

Two sets, both authentic (no pixel was moved), written by one command::

    python -m manipseg.eval.repeated --out runs/repeated            # [--data ROOT] [--sheets 60] [--seed 0]
    manipseg calibrate --model gsr-fused --report runs/repeated/collected runs/repeated/lookalike ...

- ``collected/``: the shared COCO photos (``natural/coco``: train2017 with its instance JSON, val2017 with
  its YOLO-seg labels) that hold at least ``min_instances`` (3) objects of one class other than person, each
  covering at least ``min_area`` (0.2 %) of the photo: rows of chairs, bowls, donuts, elephants, umbrellas.
  The files are copied unchanged. (The learned network saw COCO photos in training, as targets of generated
  forgeries and as authentic samples, so its false-alarm rate here is optimistic; the copy-move branch is
  not trained.)
- ``lookalike/``: contact sheets of *different* objects of one class, each from a different photo —
  different instances photographed, never a copy of one — ``cols`` x ``rows`` tiles (a ``tile``-pixel window
  around each object at its native pixels, on the photo's and the page's 8 x 8 JPEG grid: no resampling, no
  grid shift) on a white page with gutters, so the sheet has no splice seams, saved once as JPEG quality 92.
  Deterministic for a given ``seed`` and data.

A copy-move detector without pixel-level verification flags such scenes: their shapes and coarse texture
repeat. See ``CopyMoveDetector`` (step 6) and ``benchmarks/bench_fusion.py``.
"""
from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..io import atomic_write, load_image
from ..paths import data_root

PERSON = "person"


@dataclass(frozen=True)
class Instance:
    """One annotated object: its photo, class name and box (x0, y0, x1, y1) in pixels."""

    path: Path
    label: str
    box: tuple[float, float, float, float]
    area: float  # fraction of the photo


def coco_instances(coco_root: str | Path) -> list[Instance]:
    """Every non-crowd object of the shared COCO photos with its class: train2017 from
    ``instances_train2017.json``, val2017 from ``yolo-seg-labels/val2017`` (whose class numbers are the COCO category ids of
    the JSON, 1 = person). Raises FileNotFoundError naming the missing file."""
    root = Path(coco_root)
    json_path = root / "instances_train2017.json"
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: COCO instance annotations not found (is --data the shared data root?)")
    data = json.loads(json_path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    images = {im["id"]: im for im in data["images"]}
    out: list[Instance] = []
    for ann in data["annotations"]:
        im = images.get(ann["image_id"])
        path = root / "images" / "train2017" / im["file_name"] if im else None
        if im is None or ann.get("iscrowd") or not path.is_file():
            continue
        x, y, w, h = ann["bbox"]
        out.append(Instance(path, names[ann["category_id"]], (x, y, x + w, y + h),
                            float(ann["area"]) / (im["width"] * im["height"])))
    label_dir = root / "yolo-seg-labels" / "val2017"
    for lp in sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []:
        path = root / "images" / "val2017" / f"{lp.stem}.jpg"
        if not path.is_file():
            continue
        for line in lp.read_text().splitlines():
            vals = line.split()
            if len(vals) < 7 or (len(vals) - 1) % 2:
                continue
            xy = np.asarray(vals[1:], dtype=np.float64).reshape(-1, 2)
            # polygon area in normalised units is the fraction of the photo
            area = 0.5 * abs(float(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))))
            label = names.get(int(vals[0]))
            if label is None:
                raise ValueError(f"{lp}: class {vals[0]} is not a category of {json_path}")
            out.append(Instance(path, label, (*xy.min(axis=0), *xy.max(axis=0)), area))
    return out  # YOLO boxes stay normalised until the photo's size is known (_pixel_box)


def _pixel_box(inst: Instance, hw: tuple[int, int]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = inst.box
    if max(x0, y0, x1, y1) <= 1.0 + 1e-9:  # YOLO: normalised
        h, w = hw
        return x0 * w, y0 * h, x1 * w, y1 * h
    return inst.box


def repeated_photos(instances: Sequence[Instance], min_instances: int = 3, min_area: float = 0.002,
                    exclude: Sequence[str] = (PERSON,)) -> list[tuple[Path, str, int]]:
    """Photos holding ``min_instances`` or more objects of one class (not in ``exclude``), each at least
    ``min_area`` of the photo: (path, class, count) with the most frequent such class, sorted by path."""
    counts: dict[Path, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for inst in instances:
        if inst.label not in exclude and inst.area >= min_area:
            counts[inst.path][inst.label] += 1
    out = []
    for path in sorted(counts):
        label, n = max(counts[path].items(), key=lambda kv: (kv[1], kv[0]))
        if n >= min_instances:
            out.append((path, label, n))
    return out


def lookalike_sheets(instances: Sequence[Instance], n: int = 60, cols: int = 3, rows: int = 2, tile: int = 160,
                     gutter: int = 16, min_side: int = 48, seed: int = 0,
                     exclude: Sequence[str] = (PERSON,)) -> list[tuple[np.ndarray, str, list[str]]]:
    """``n`` contact sheets, each of ``cols * rows`` different objects of one class: (RGB image, class, the
    tiles' sources as ``file#x0,y0``). Objects smaller than ``min_side`` pixels are not used; each tile comes from
    a different photo (two crops of one photo could share pixels); classes found in fewer photos than there are
    tiles are skipped; classes are taken in turn."""
    if tile % 8 or gutter % 8:
        raise ValueError(f"tile ({tile}) and gutter ({gutter}) must be multiples of 8 (the JPEG grid)")
    per = cols * rows
    by_class: dict[str, list[Instance]] = defaultdict(list)
    for inst in instances:
        if inst.label not in exclude:
            by_class[inst.label].append(inst)
    cache: dict[Path, np.ndarray] = {}

    def crop(inst: Instance) -> np.ndarray:
        """A ``tile`` x ``tile`` window of the photo centred on the object, at its native pixels, its corner on the
        photo's 8 x 8 JPEG grid (the page keeps every tile on the grid too: no resampling, no grid shift)."""
        img = cache[inst.path]
        h, w = img.shape[:2]
        x0, y0, x1, y1 = _pixel_box(inst, (h, w))
        xa = int(np.clip(round(((x0 + x1) / 2 - tile / 2) / 8) * 8, 0, (w - tile) // 8 * 8))
        ya = int(np.clip(round(((y0 + y1) / 2 - tile / 2) / 8) * 8, 0, (h - tile) // 8 * 8))
        return img[ya:ya + tile, xa:xa + tile]

    def big_enough(inst: Instance) -> bool:
        if inst.path not in cache:
            cache[inst.path] = load_image(inst.path)
        h, w = cache[inst.path].shape[:2]
        x0, y0, x1, y1 = _pixel_box(inst, (h, w))
        return min(x1 - x0, y1 - y0) >= min_side and min(h, w) >= tile

    usable: dict[str, list[Instance]] = {}
    for label in sorted(by_class):
        ok = [i for i in by_class[label] if big_enough(i)]
        if len({i.path for i in ok}) >= per:  # objects from at least `per` different photos
            usable[label] = ok
    if not usable:
        raise ValueError(f"no class has {per} objects of at least {min_side} px: cannot make look-alike sheets")
    rng = np.random.default_rng(seed)
    labels = sorted(usable)
    sheets = []
    for k in range(n):
        label = labels[k % len(labels)]
        # one object per photo: two crops of one photo could share pixels (a copy, not a look-alike)
        chosen, seen = [], set()
        for idx in rng.permutation(len(usable[label])):
            if usable[label][int(idx)].path not in seen:
                chosen.append(int(idx))
                seen.add(usable[label][int(idx)].path)
            if len(chosen) == per:
                break
        page = np.full((rows * tile + (rows + 1) * gutter, cols * tile + (cols + 1) * gutter, 3), 255, np.uint8)
        sources = []
        for j, idx in enumerate(chosen):
            inst = usable[label][int(idx)]
            patch = crop(inst)
            r, c = divmod(j, cols)
            y, x = gutter + r * (tile + gutter), gutter + c * (tile + gutter)
            page[y:y + tile, x:x + tile] = patch
            sources.append(f"{inst.path.name}#{int(inst.box[0])},{int(inst.box[1])}")
        sheets.append((page, label, sources))
    return sheets


def write_sets(data_root: str | Path, out: str | Path, sheets: int = 60, seed: int = 0) -> dict[str, int]:
    """Write ``collected/`` and ``lookalike/`` (see the module doc) under ``out`` with a ``manifest.json``."""
    out = Path(out)
    instances = coco_instances(Path(data_root) / "natural" / "coco")
    collected = repeated_photos(instances)
    (out / "collected").mkdir(parents=True, exist_ok=True)
    (out / "lookalike").mkdir(parents=True, exist_ok=True)
    manifest: dict[str, list] = {"collected": [], "lookalike": []}
    for path, label, count in collected:
        dest = out / "collected" / f"{path.parent.name}-{path.name}"
        atomic_write(dest, lambda tmp, src=path: shutil.copyfile(src, tmp))
        manifest["collected"].append({"file": dest.name, "source": f"{path.parent.name}/{path.name}",
                                      "class": label, "instances": count})
    for k, (page, label, sources) in enumerate(lookalike_sheets(instances, n=sheets, seed=seed)):
        dest = out / "lookalike" / f"sheet-{k:03d}-{label.replace(' ', '_')}.jpg"
        ok, buf = cv2.imencode(".jpg", page[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        atomic_write(dest, lambda tmp, b=buf: tmp.write_bytes(b.tobytes()))
        manifest["lookalike"].append({"file": dest.name, "class": label, "tiles": sources})
    atomic_write(out / "manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))
    return {"collected": len(manifest["collected"]), "lookalike": len(manifest["lookalike"])}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m manipseg.eval.repeated", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (collected/, lookalike/, manifest.json)")
    p.add_argument("--data", default=None, help="data root (default: $MANIPSEG_DATA or ../shared/data)")
    p.add_argument("--sheets", type=int, default=60, help="look-alike contact sheets to make (default 60)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    counts = write_sets(data_root(args.data), args.out, sheets=args.sheets, seed=args.seed)
    print(f"{args.out}: {counts['collected']} collected photos, {counts['lookalike']} look-alike sheets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
