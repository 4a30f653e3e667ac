"""Forgery benchmarks as lists of (image, mask) samples.

Every format turns a folder (or a JSON list) into a :class:`Dataset`: a list of :class:`ForgerySample`
plus the mask convention of the release and a count of the release's known quirks. :meth:`Dataset.load`
returns the image as RGB ``uint8`` and the mask as ``bool`` (True = tampered), or ``None`` for authentic
images.

Mask conventions (``Dataset.convention``):

``white``     a pixel is tampered where its brightest channel is >= 128; masks whose only values are
              0 and 1 are read as 1 = tampered.
``black``     inverted masks (NIST16, DSO-1): a pixel is tampered where its brightest channel is < 128.
``green``     Columbia edge masks: tampered where green >= 128 and red < 128.

Quirks are counted per sample, once, by name (``Dataset.quirks``):

``missing_mask``         a tampered image without its mask: skipped (not in the sample list).
``missing_image``        a list entry (JSON, NIST CSV) naming an image that does not exist: skipped.
``mask_resized``         mask size differs from the image: resized with nearest neighbour.
``mask_exif_oriented``   the image has an EXIF orientation that swaps width and height and the mask
                         matches its stored (unrotated) pixels: the mask is turned the same way.
``empty_mask``           a tampered image whose mask has no tampered pixel: kept for image-level
                         metrics, excluded from pixel-level metrics.
``mostly_tampered_mask`` more than 50 % of the mask is tampered: kept; often a sign of an inverted
                         mask convention, so it is worth a look.
``paired_by_order``      Tp/Gt folders whose names do not match: paired in sorted order, as IMDL-BenCo does.

:func:`open_dataset` opens a path with a named format or detects the layout (``fmt="auto"``); an
unknown format name gets the list of known ones and the closest match.
"""
from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ..io import read_mask  # noqa: F401 - the mask reader of every dataset format (manipseg.io)
from ..io import IMAGE_SUFFIXES
from ..io import MASK_CONVENTIONS as CONVENTIONS
from ..io import load_image
from ..names import Registry

MASK_SUFFIXES = ("_mask", "-mask", "_gt", "-gt", "_groundtruth", "_GT", "_Mask", "mask", "_edgemask", "forged")


class DatasetError(ValueError):
    """A dataset path or layout that cannot be used; the message says which path and what is wrong."""


class UnknownFormatError(DatasetError):
    """A ``--format`` that is not a registered dataset format (the message suggests the closest)."""


@dataclass(frozen=True)
class ForgerySample:
    """One benchmark image. ``mask_path`` is None for authentic images."""

    image_path: Path
    mask_path: Path | None
    authentic: bool
    name: str


@dataclass
class Dataset:
    """A list of samples with the release's mask convention and counted quirks."""

    root: Path
    format: str
    samples: list[ForgerySample]
    convention: str = "white"
    quirk_names: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"unknown mask convention {self.convention!r}; expected one of {CONVENTIONS}")
        self.quirk_names = defaultdict(set, self.quirk_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> ForgerySample:
        return self.samples[i]

    def __iter__(self) -> Iterator[ForgerySample]:
        return iter(self.samples)

    @property
    def n_authentic(self) -> int:
        return sum(s.authentic for s in self.samples)

    @property
    def n_tampered(self) -> int:
        return len(self.samples) - self.n_authentic

    @property
    def quirks(self) -> dict[str, int]:
        """Quirk name -> number of samples affected."""
        return {k: len(v) for k, v in sorted(self.quirk_names.items()) if v}

    def note(self, quirk: str, name: str) -> None:
        self.quirk_names[quirk].add(name)

    def load(self, i: int, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Image (H, W, 3) uint8 RGB and mask (H, W) bool, or None for an authentic image.

        The mask is brought to the image size (nearest neighbour) and the quirk counted if it differs.
        """
        s = self.samples[i]
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        image = load_image(s.image_path, **kwargs)
        if s.authentic or s.mask_path is None:
            return image, None
        mask = read_mask(s.mask_path, self.convention)
        h, w = image.shape[:2]
        if mask.shape != (h, w):
            oriented = _apply_exif_orientation(mask, s.image_path) if mask.shape == (w, h) else None
            if oriented is not None:
                mask = oriented
                self.note("mask_exif_oriented", s.name)
            else:
                import cv2

                mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                self.note("mask_resized", s.name)
        if not mask.any():
            self.note("empty_mask", s.name)
        elif mask.mean() > 0.5:
            self.note("mostly_tampered_mask", s.name)
        return image, mask

    def subset(self, limit: int | None) -> "Dataset":
        """At most ``limit`` samples (all when None), sharing the quirk counter: the first tampered and
        the first authentic ones in the dataset's proportion (at least one of each when both exist)."""
        if limit is None or limit >= len(self.samples):
            return self
        tampered = [s for s in self.samples if not s.authentic]
        authentic = [s for s in self.samples if s.authentic]
        n_t = round(limit * len(tampered) / len(self.samples))
        if tampered and authentic and limit >= 2:
            n_t = min(max(n_t, 1), limit - 1)
        chosen = tampered[:n_t] + authentic[: limit - n_t]
        sub = Dataset(self.root, self.format, chosen, self.convention)
        sub.quirk_names = self.quirk_names
        return sub


# -- masks ----------------------------------------------------------------------------------------

_EXIF_TRANSPOSE = {5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def _apply_exif_orientation(mask: np.ndarray, image_path: Path) -> np.ndarray | None:
    """The mask turned by the image's EXIF orientation when that orientation swaps width and height
    (the image is loaded upright, its mask was drawn on the stored pixels); None otherwise."""

    with Image.open(image_path) as img:
        orientation = img.getexif().get(0x0112, 1)
    method = _EXIF_TRANSPOSE.get(orientation)
    if method is None:
        return None
    turned = Image.fromarray(mask.astype(np.uint8) * 255).transpose(getattr(Image.Transpose, method))
    return np.asarray(turned) >= 128


# -- helpers ------------------------------------------------------------------------------------

def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _child(root: Path, *names: str) -> Path | None:
    """The first existing sub-folder of ``root`` among ``names`` (case-insensitive)."""
    if not root.is_dir():
        return None
    by_lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for n in names:
        if n.lower() in by_lower:
            return by_lower[n.lower()]
    return None


def _strip_mask_suffix(stem: str) -> str:
    for suf in MASK_SUFFIXES:
        if stem.endswith(suf) and len(stem) > len(suf):
            return stem[: -len(suf)]
    return stem


def _mask_index(masks: list[Path]) -> dict[str, Path]:
    """Mask stem -> path, also under the stem without a mask suffix (``_mask``, ``_gt``...)."""
    index: dict[str, Path] = {}
    for m in masks:
        index.setdefault(m.stem, m)
    for m in masks:
        index.setdefault(_strip_mask_suffix(m.stem), m)
    return index


def _unique_names(samples: list[tuple[Path, Path | None, bool]], root: Path) -> list[ForgerySample]:
    """Sample names are image stems, or root-relative paths (with '__') when stems collide."""
    counts: dict[str, int] = defaultdict(int)
    for img, _, _ in samples:
        counts[img.stem] += 1
    out = []
    for img, mask, auth in samples:
        name = img.stem
        if counts[name] > 1:
            try:
                rel = img.relative_to(root).with_suffix("")
            except ValueError:
                rel = img.with_suffix("")
            name = "__".join(rel.parts)
        out.append(ForgerySample(img, mask, auth, name))
    return out


def _pair(root: Path, fmt: str, convention: str, tampered: list[Path], find_mask: Callable[[Path], Path | None],
          authentic: list[Path] = ()) -> Dataset:
    rows: list[tuple[Path, Path | None, bool]] = []
    missing = []
    for img in tampered:
        m = find_mask(img)
        if m is None:
            missing.append(img.stem)
        else:
            rows.append((img, m, False))
    rows.extend((a, None, True) for a in authentic)
    ds = Dataset(root, fmt, _unique_names(rows, root), convention)
    for name in missing:
        ds.note("missing_mask", name)
    return ds


# -- generic formats ----------------------------------------------------------------------------

def open_generic(root: Path) -> Dataset:
    """Generic layout: ``images/`` + ``masks/`` matched by stem (a mask may add ``_mask``/``_gt``),
    optional ``authentic/`` of untampered images. Masks: white = tampered (>= 128; 0/1 masks: 1)."""
    img_dir = _child(root, "images", "image", "imgs")
    mask_dir = _child(root, "masks", "mask", "gt", "groundtruth", "ground_truth")
    if img_dir is None or mask_dir is None:
        raise DatasetError(f"{root}: the generic layout needs 'images/' and 'masks/' folders")
    index = _mask_index(_images_in(mask_dir))
    auth_dir = _child(root, "authentic", "au", "real", "pristine")
    authentic = _images_in(auth_dir) if auth_dir else []
    return _pair(root, "generic", "white", _images_in(img_dir), lambda p: index.get(p.stem), authentic)


def open_inthewild(root: Path) -> Dataset:
    """In-the-Wild (Huh et al. 2018, folder ``label_in_wild``): ``images/*.jpg`` and ``masks/*.png`` with
    the same stem, 201 spliced images, no authentic ones; white = tampered. Same layout as the generic one."""
    ds = open_generic(root)
    ds.format = "inthewild"
    return ds


def open_noso(root: Path) -> Dataset:
    """NoSo (Novozamsky & Sorel 2018) as found in the development data: ``images/NN_mod[_k].png`` and
    ``masks/NN_mod[_k].png`` (also accepted: ``masks/NN_mod[_k]_mask.png``); 255 = tampered. The masks
    cover both the copied source and the pasted target of each copy-move."""
    ds = open_generic(root)
    ds.format = "noso"
    return ds


def open_tpgt(root: Path) -> Dataset:
    """IMDL-BenCo ``ManiDataset`` layout: ``Tp/`` tampered images and ``Gt/`` masks. Paired by stem (a mask
    may add ``_gt``/``_mask``); when no stem matches and the counts agree, paired in sorted order as
    IMDL-BenCo does (counted as ``paired_by_order``). Optional ``Au/`` authentic images. Masks: white =
    tampered (IMDL-BenCo thresholds the channel mean at 127.5)."""
    tp = _child(root, "Tp")
    gt = _child(root, "Gt")
    if tp is None or gt is None:
        raise DatasetError(f"{root}: the Tp/Gt layout needs 'Tp/' and 'Gt/' folders")
    images, masks = _images_in(tp), _images_in(gt)
    index = _mask_index(masks)
    au = _child(root, "Au")
    authentic = _images_in(au) if au else []
    by_order = not any(p.stem in index for p in images) and len(images) == len(masks) and images
    if by_order:
        pairs = dict(zip(images, masks))
        ds = _pair(root, "tpgt", "white", images, pairs.get, authentic)
        for s in ds.samples:
            if not s.authentic:
                ds.note("paired_by_order", s.name)
        return ds
    return _pair(root, "tpgt", "white", images, lambda p: index.get(p.stem), authentic)


def open_json(path: Path) -> Dataset:
    """IMDL-BenCo ``JsonDataset``: a JSON list of ``[image_path, mask_path]`` pairs, ``"Negative"`` as mask
    path for an authentic image. Relative paths are resolved against the JSON file's folder, then the
    current directory. Masks: white = tampered."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the JSON list: {exc}") from exc
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: expected a JSON list of [image, mask or \"Negative\"] pairs")

    def resolve(p: str) -> Path:
        q = Path(p)
        if q.is_absolute():
            return q
        near = path.parent / q
        return near if near.exists() else q

    entries: list[tuple[Path, Path | None, bool]] = []
    missing_image, missing_mask = [], []
    for k, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) >= 2 and all(isinstance(x, str) for x in row[:2])):
            raise DatasetError(f"{path}: entry {k} is {row!r}; expected [image_path, mask_path or \"Negative\"]")
        img = resolve(row[0])
        if not img.is_file():
            missing_image.append(img.stem)
            continue
        if row[1] == "Negative":
            entries.append((img, None, True))
            continue
        mask = resolve(row[1])
        if not mask.is_file():
            missing_mask.append(img.stem)
            continue
        entries.append((img, mask, False))
    ds = Dataset(path, "json", _unique_names(entries, path.parent), "white")
    for n in missing_image:
        ds.note("missing_image", n)
    for n in missing_mask:
        ds.note("missing_mask", n)
    return ds


# -- benchmark adapters -------------------------------------------------------------------------

def _casia_parts(root: Path) -> tuple[list[Path], list[Path], dict[str, Path]]:
    tampered, authentic, gts = [], [], []
    for p in _images_in(root, recursive=True):
        parts = {q.lower() for q in p.relative_to(root).parts[:-1]}
        if p.stem.lower().endswith("_gt") or any("groundtruth" in q.replace(" ", "") for q in parts):
            gts.append(p)
        elif "au" in parts:
            authentic.append(p)
        elif "tp" in parts:
            tampered.append(p)
    index = {}
    for g in gts:
        stem = g.stem[:-3] if g.stem.lower().endswith("_gt") else g.stem
        index.setdefault(stem, g)
    return tampered, authentic, index


def _open_casia(root: Path, fmt: str) -> Dataset:
    tampered, authentic, index = _casia_parts(root)
    if not tampered:
        raise DatasetError(f"{root}: no tampered images found under a 'Tp' folder (CASIA layout)")
    return _pair(root, fmt, "white", tampered, lambda p: index.get(p.stem), authentic)


def open_casia1(root: Path) -> Dataset:
    """CASIA v1.0 with the community ground truth (namtpham/casia1groundtruth): tampered images under
    ``Tp/`` (or ``Modified Tp/Tp/``, sub-folders ``CM``/``Sp``), named ``Sp_[DS]_...jpg``; authentic under
    ``Au/``; masks ``<image stem>_gt.png`` anywhere in the tree (e.g. ``CASIA 1.0 groundtruth/CM/``).
    White = tampered. Tampered images without a ``_gt`` mask are skipped and counted."""
    return _open_casia(root, "casia1")


def open_casia2(root: Path) -> Dataset:
    """CASIA v2.0 with the community ground truth (namtpham/casia2groundtruth): ``Tp/Tp_[DS]_...`` (tif or
    jpg), ``Au/Au_...``, masks ``<image stem>_gt.png`` anywhere in the tree (e.g. ``CASIA 2 Groundtruth/``).
    White = tampered. Several v2 tampered images have no mask in that release: skipped and counted."""
    return _open_casia(root, "casia2")


def open_coverage(root: Path) -> Dataset:
    """COVERAGE (Wen et al. 2016): ``image/NNNt.tif`` tampered, ``image/NNN.tif`` its authentic twin,
    ``mask/NNNforged.tif`` the pasted region (``NNNcopy.tif`` is the source, ``NNNpaste.tif`` the
    similar-but-genuine object; neither is used). White = tampered. Several masks are not the size of
    their image: resized with nearest neighbour and counted (``mask_resized``)."""
    img_dir = _child(root, "image", "images")
    mask_dir = _child(root, "mask", "masks")
    if img_dir is None or mask_dir is None:
        raise DatasetError(f"{root}: COVERAGE needs 'image/' and 'mask/' folders")
    masks = {m.stem: m for m in _images_in(mask_dir)}
    tampered, authentic = [], []
    for p in _images_in(img_dir):
        if re.fullmatch(r"\d+t", p.stem):
            tampered.append(p)
        elif re.fullmatch(r"\d+", p.stem):
            authentic.append(p)
    return _pair(root, "coverage", "white", tampered, lambda p: masks.get(p.stem[:-1] + "forged"), authentic)


def open_columbia(root: Path) -> Dataset:
    """Columbia Uncompressed Image Splicing (Hsu & Chang 2006): ``4cam_splc/*.tif`` spliced,
    ``4cam_auth/*.tif`` authentic, ``4cam_splc/edgemask/<stem>_edgemask.jpg`` colour-coded masks (JPEG):
    the spliced-in region is green ((0, 255, 0) or (0, 200, 0)), the host region red. Tampered = green
    >= 128 and red < 128, robust to the JPEG noise of the masks."""
    splc = _child(root, "4cam_splc")
    if splc is None:
        raise DatasetError(f"{root}: Columbia needs a '4cam_splc/' folder")
    edge = _child(splc, "edgemask") or _child(root, "edgemask")
    masks = {m.stem: m for m in _images_in(edge)} if edge else {}
    auth = _child(root, "4cam_auth")
    return _pair(root, "columbia", "green", _images_in(splc), lambda p: masks.get(p.stem + "_edgemask"),
                 _images_in(auth) if auth else [])


def open_dso1(root: Path) -> Dataset:
    """DSO-1 (Carvalho et al. 2013, ``tifs-database``): ``DSO-1/splicing-NN.png`` tampered,
    ``DSO-1/normal-NN.png`` authentic, masks ``DSO-1-Fake-Images-Masks/splicing-NN.png``. Also accepted:
    ``images/`` and ``masks/``. Masks are inverted: black (< 128) = tampered, as photoholmes reads them
    (one other public loader reads them the other way; a wrong convention shows up as a large
    ``mostly_tampered_mask`` count, and ``convention="white"`` overrides it)."""
    img_dir = _child(root, "DSO-1", "images")
    mask_dir = _child(root, "DSO-1-Fake-Images-Masks", "masks")
    if img_dir is None or mask_dir is None:
        raise DatasetError(f"{root}: DSO-1 needs 'DSO-1/' (or 'images/') and 'DSO-1-Fake-Images-Masks/' "
                           "(or 'masks/') folders")
    masks = _mask_index(_images_in(mask_dir))
    imgs = _images_in(img_dir)
    tampered = [p for p in imgs if p.stem.lower().startswith("splicing")]
    authentic = [p for p in imgs if p.stem.lower().startswith("normal")]
    return _pair(root, "dso1", "black", tampered, lambda p: masks.get(p.stem), authentic)


def open_nist16(root: Path) -> Dataset:
    """NIST Nimble 2016 (NC2016_Test): the reference CSV ``reference/manipulation/NC2016-manipulation-ref.csv``
    (``|``-separated; columns ``ProbeFileName``, ``ProbeMaskFileName``, ``IsTarget``; paths relative to the
    root). ``IsTarget == Y`` with a mask -> tampered, ``N`` -> authentic. Without the CSV: ``probe/`` images
    and ``mask/`` masks matched by stem. Masks are inverted: black (0) = manipulated, white = untouched."""
    refs = sorted((root / "reference").rglob("*manipulation-ref.csv")) if (root / "reference").is_dir() else []
    if not refs:
        probe = _child(root, "probe", "probes")
        mask_dir = _child(root, "mask", "masks")
        if probe is None or mask_dir is None:
            raise DatasetError(f"{root}: NIST16 needs reference/manipulation/*-manipulation-ref.csv or "
                               "'probe/' and 'mask/' folders")
        masks = _mask_index(_images_in(mask_dir, recursive=True))
        return _pair(root, "nist16", "black", _images_in(probe), lambda p: masks.get(p.stem))
    entries: list[tuple[Path, Path | None, bool]] = []
    seen: set[str] = set()
    missing_image, missing_mask = [], []
    with refs[0].open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="|")
        need = {"ProbeFileName", "ProbeMaskFileName", "IsTarget"}
        if not need.issubset(reader.fieldnames or []):
            raise DatasetError(f"{refs[0]}: expected columns {sorted(need)}, found {reader.fieldnames}")
        for row in reader:
            probe = row["ProbeFileName"]
            if not probe or probe in seen:
                continue
            seen.add(probe)
            img = root / probe
            if not img.is_file():
                missing_image.append(img.stem)
                continue
            if row["IsTarget"].strip().upper() != "Y":
                entries.append((img, None, True))
                continue
            mask_name = (row["ProbeMaskFileName"] or "").strip()
            if not mask_name or not (root / mask_name).is_file():
                missing_mask.append(img.stem)
                continue
            entries.append((img, root / mask_name, False))
    ds = Dataset(root, "nist16", _unique_names(entries, root), "black")
    for n in missing_image:
        ds.note("missing_image", n)
    for n in missing_mask:
        ds.note("missing_mask", n)
    return ds


_IMD_TAMPERED = re.compile(r"(.+)_(\d+)")


def open_imd2020(root: Path) -> Dataset:
    """IMD2020 (Novozamsky et al. 2020): one folder per source photo with ``<id>_orig.<ext>`` authentic,
    ``<id>_<k>.<ext>`` manipulated and ``<id>_<k>_mask.png`` its mask; white = tampered."""
    files = _images_in(root, recursive=True)
    masks = {(m.parent, m.stem[: -len("_mask")]): m for m in files if m.stem.endswith("_mask")}
    tampered, authentic = [], []
    for p in files:
        if p.stem.endswith("_mask"):
            continue
        if p.stem.endswith("_orig"):
            authentic.append(p)
        elif _IMD_TAMPERED.fullmatch(p.stem):
            tampered.append(p)
    if not tampered:
        raise DatasetError(f"{root}: no IMD2020-style '<id>_<k>.<ext>' images found")
    return _pair(root, "imd2020", "white", tampered, lambda p: masks.get((p.parent, p.stem)), authentic)


_COMOFOD = re.compile(r"(\d+)_([FOBM])(?:_([A-Z]{2}\d+))?")


def open_comofod(root: Path) -> Dataset:
    """CoMoFoD (Tralic et al. 2013): ``NNN_F.png`` forged, ``NNN_O.png`` original, ``NNN_B.png`` binary
    mask (white = forged regions, source and target), ``NNN_M.png`` coloured mask (used when ``_B`` is
    absent; any bright colour = forged). Post-processed variants ``NNN_F_JC1.jpg`` ... ``NNN_F_NA3.png``
    (JC: JPEG, IB: blur, NA: noise, BC: brightness, CR: colour reduction, CA: contrast) share the mask of
    ``NNN_F``; ``NNN_O_<pp>`` are authentic."""
    tampered, authentic, masks = [], [], {}
    for p in _images_in(root, recursive=True):
        m = _COMOFOD.fullmatch(p.stem)
        if not m:
            continue
        num, kind, _ = m.groups()
        if kind == "F":
            tampered.append(p)
        elif kind == "O":
            authentic.append(p)
        elif kind == "B" or (kind == "M" and (p.parent, num) not in masks):
            masks[(p.parent, num)] = p
    if not tampered:
        raise DatasetError(f"{root}: no CoMoFoD-style 'NNN_F.<ext>' images found")

    def find(p: Path) -> Path | None:
        return masks.get((p.parent, _COMOFOD.fullmatch(p.stem).group(1)))

    return _pair(root, "comofod", "white", tampered, find, authentic)


def open_cvip(root: Path) -> Dataset:
    """CVIP Copy-Move Forgeries (Ardizzone et al. 2015) and similar copy-move sets that keep a mask beside
    each forgery: every image under ``root`` (recursively) whose mask is a file of the same stem plus a
    mask suffix (``_mask``, ``_gt``, ``mask``...) in the same folder, or of the same stem in a sibling
    ``mask(s)/``/``gt/`` folder. White = tampered. The release's exact file naming was not available to
    check; other layouts need ``--format generic`` after re-arranging, or a JSON list."""
    files = _images_in(root, recursive=True)
    mask_dirs = {"mask", "masks", "gt", "groundtruth", "ground_truth"}

    def is_mask(p: Path) -> bool:
        return p.parent.name.lower() in mask_dirs or _strip_mask_suffix(p.stem) != p.stem

    masks = [p for p in files if is_mask(p)]
    by_dir: dict[Path, dict[str, Path]] = defaultdict(dict)
    for m in masks:
        folder = m.parent.parent if m.parent.name.lower() in mask_dirs else m.parent
        by_dir[folder].setdefault(_strip_mask_suffix(m.stem), m)
        by_dir[folder].setdefault(m.stem, m)

    def find(p: Path) -> Path | None:
        return by_dir.get(p.parent, {}).get(p.stem) or by_dir.get(p.parent.parent, {}).get(p.stem)

    images = [p for p in files if not is_mask(p)]
    if not images or not masks:
        raise DatasetError(f"{root}: no images with masks found for the copy-move (CVIP) layout")
    return _pair(root, "cvip", "white", images, find)


# -- registry and detection ---------------------------------------------------------------------

@dataclass(frozen=True)
class Format:
    name: str
    opener: Callable[[Path], Dataset]
    detect: Callable[[Path], bool]

    @property
    def summary(self) -> str:
        return (self.opener.__doc__ or "").strip().split("\n")[0]


def _has(root: Path, pattern: str, limit_depth: int = 2) -> bool:
    for depth in range(limit_depth + 1):
        if next(iter(root.glob("/".join(["*"] * depth + [pattern]))), None) is not None:
            return True
    return False


def _detect_casia(root: Path) -> str | None:
    if not _has(root, "Tp", 2) or not _has(root, "*_gt.*", 3):
        return None
    tp_files = [p.name for p in root.rglob("*") if p.is_file() and p.parent.name.lower() in ("tp", "cm", "sp")][:50]
    if any(n.startswith("Tp_") for n in tp_files):
        return "casia2"
    return "casia1"


#: every dataset format, in detection order (most specific first)
FORMATS = Registry("dataset format", error=UnknownFormatError, also=("auto",), plural="formats")


def register_format(name: str, opener: Callable[[Path], Dataset], detect: Callable[[Path], bool]) -> None:
    FORMATS.add(name, Format(name, opener, detect), replace=True)


register_format("json", open_json, lambda p: p.is_file() and p.suffix.lower() == ".json")
register_format("nist16", open_nist16, lambda p: p.is_dir() and (
    _has(p, "reference/*/*manipulation-ref.csv", 0) or (_child(p, "probe") is not None and _child(p, "mask") is not None)))
register_format("columbia", open_columbia, lambda p: p.is_dir() and _child(p, "4cam_splc") is not None)
register_format("coverage", open_coverage, lambda p: p.is_dir() and _child(p, "image") is not None
                and _child(p, "mask") is not None and _has(p, "mask/*forged.tif*", 0))
register_format("dso1", open_dso1, lambda p: p.is_dir() and (
    _child(p, "DSO-1-Fake-Images-Masks") is not None or _has(p, "masks/splicing-*", 0)))
register_format("tpgt", open_tpgt, lambda p: p.is_dir() and _child(p, "Tp") is not None and _child(p, "Gt") is not None)
register_format("casia1", open_casia1, lambda p: p.is_dir() and _detect_casia(p) == "casia1")
register_format("casia2", open_casia2, lambda p: p.is_dir() and _detect_casia(p) == "casia2")
register_format("imd2020", open_imd2020, lambda p: p.is_dir() and _has(p, "*_orig.*", 1) and _has(p, "*_0_mask.*", 1))
register_format("comofod", open_comofod, lambda p: p.is_dir() and _has(p, "[0-9][0-9]*_F.*", 1)
                and (_has(p, "[0-9][0-9]*_B.*", 1) or _has(p, "[0-9][0-9]*_M.*", 1)))
register_format("noso", open_noso, lambda p: p.is_dir() and _has(p, "images/[0-9][0-9]_mod*.png", 0)
                and _child(p, "masks") is not None)
register_format("generic", open_generic, lambda p: p.is_dir() and _child(p, "images", "image") is not None
                and _child(p, "masks", "mask", "gt") is not None)
register_format("inthewild", open_inthewild, lambda p: False)  # same layout as generic: by name only
register_format("cvip", open_cvip, lambda p: False)  # loose layout: by name only


def detect_format(path: str | Path) -> str:
    """The first registered format whose layout matches ``path`` (most specific first)."""
    p = Path(path)
    for fmt in FORMATS.values():
        if fmt.detect(p):
            return fmt.name
    raise DatasetError(
        f"{p}: cannot recognise the dataset layout; pass --format with one of {', '.join(FORMATS.names())} "
        "(the generic layout is 'images/' + 'masks/' matched by file stem, optional 'authentic/')")


def open_dataset(path: str | Path, fmt: str = "auto", convention: str | None = None) -> Dataset:
    """Open a benchmark folder (or IMDL-BenCo JSON list) as a :class:`Dataset`.

    ``convention`` overrides the format's mask convention (one of :data:`CONVENTIONS`), e.g. for a
    re-released copy of a benchmark whose masks were inverted.
    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or directory")
    name = detect_format(p) if fmt == "auto" else fmt.lower()
    if name not in FORMATS:
        raise FORMATS.unknown(fmt)
    if convention is not None and convention not in CONVENTIONS:
        raise DatasetError(f"unknown mask convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    ds = FORMATS.get(name).opener(p)
    if convention is not None:
        ds.convention = convention
    if not ds.samples:
        raise DatasetError(f"{p}: no usable samples found as format {name!r} (quirks: {ds.quirks or 'none'})")
    return ds
