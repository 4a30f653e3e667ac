"""Image input that survives the real world, and atomic output.

:func:`load_image` reads JPEG, PNG, TIFF, BMP and WebP (and anything else Pillow reads) in 8 or 16 bits,
grayscale, palette, RGBA, LA, CMYK or RGB, applies the EXIF orientation, refuses images above a pixel
cap (decompression bombs), and returns an RGB ``uint8`` array. Every failure raises
:class:`ImageLoadError`, whose message names the file, the problem and what to do.

Conventions: alpha channels are dropped (the colour values are kept as stored, not composited), 16-bit
samples are scaled to 8 bits by ``round(v / 257)``, CMYK is converted with Pillow's ICC-less transform.
"""
from __future__ import annotations

import glob
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: default pixel cap: 100 megapixels (a 12-MP photo is well inside, a decompression bomb is not).
DEFAULT_MAX_PIXELS = 100_000_000
#: manipseg enforces its own cap (``max_pixels``, checked on the header before any pixel is decoded), so
#: Pillow's fixed guard (about 89 MP, a warning, and an error at twice that) is switched off: otherwise no
#: cap could be raised above it.
Image.MAX_IMAGE_PIXELS = None
#: suffixes of the files ``manipseg predict`` writes (never taken as inputs when a folder is listed)
OUTPUT_SUFFIXES = (".prob.png", ".mask.png", ".overlay.jpg", ".thumb.jpg")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".jfif", ".jpe", ".gif", ".ppm", ".pgm"}


class ImageLoadError(ValueError):
    """An input file that cannot be used as an image. ``str(err)`` names the file, problem and remedy."""

    def __init__(self, path: str | os.PathLike | None, problem: str, hint: str = "") -> None:
        self.path = str(path) if path is not None else "<bytes>"
        self.problem = problem
        self.hint = hint
        msg = f"{self.path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


def _to_uint8_rgb(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "I" and arr.max(initial=0) <= 255:
            scaled = arr
        else:
            scaled = arr / 257.0
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "1":
        img = img.convert("L")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        img = img.convert("RGBA").convert("RGB") if img.mode != "LA" else img.convert("L")
    if img.mode in ("L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ImageLoadError(name, f"unsupported pixel mode {mode!r}", "convert it to RGB or grayscale") from exc
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _decode_16bit_colour(data: bytes, name: str) -> np.ndarray | None:
    """16-bit-per-channel colour PNG/TIFF: Pillow cannot keep them as RGB, OpenCV can."""
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
        return None
    arr = arr[:, :, :3][:, :, ::-1]  # BGR(A) -> RGB
    return np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 RGB array. See :func:`load_image`."""
    if len(data) == 0:
        raise ImageLoadError(name, "file is empty (0 bytes)", "re-download or re-export the image")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageLoadError(name, "not a recognised image format",
                             "supported: JPEG, PNG, TIFF, BMP, WebP, GIF") from exc
    except OSError as exc:
        raise ImageLoadError(name, f"cannot read image header: {exc}", "the file is probably corrupt") from exc
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            name, f"{width}x{height} = {width * height:,} pixels exceeds the cap of {max_pixels:,}",
            "possible decompression bomb; raise --max-pixels if the file is trusted")
    if width < 8 or height < 8:
        raise ImageLoadError(name, f"image of {width}x{height} pixels is too small", "minimum is 8x8")
    fmt = img.format or "?"
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(name, f"{fmt} data is truncated or corrupt: {exc}",
                             "re-download or re-export the image") from exc
    high_depth = fmt in ("PNG", "TIFF") and img.mode in ("RGB", "RGBA") and _looks_16bit(data, fmt)
    if high_depth:
        arr16 = _decode_16bit_colour(data, name)
        if arr16 is not None:
            orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
            if orientation == 1:
                return np.ascontiguousarray(arr16)
    return _to_uint8_rgb(img, name)


def _looks_16bit(data: bytes, fmt: str) -> bool:
    if fmt == "PNG" and len(data) > 25:
        return data[24] == 16  # IHDR bit depth
    if fmt == "TIFF":
        return True  # let OpenCV decide; it returns uint16 only for 16-bit files
    return False


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file to an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Raises :class:`ImageLoadError` (a ``ValueError``) naming the file and the problem for missing,
    empty, non-image, truncated, corrupt or over-sized files.
    """
    return decode_image(read_image_bytes(path), str(path), max_pixels=max_pixels)


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, with :class:`ImageLoadError` for a missing path, a folder or a read error."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "file not found", "check the path")
    if p.is_dir():
        raise ImageLoadError(p, "is a directory, not an image file")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ImageLoadError(p, f"cannot read file: {exc.strerror or exc}") from exc


#: how a ground-truth mask marks the tampered pixels (see :func:`read_mask`)
MASK_CONVENTIONS = ("white", "black", "green")


def _mask_array(path: str | os.PathLike) -> np.ndarray:
    """Raw mask pixels as uint8, (H, W) or (H, W, C >= 3)."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError as exc:
        raise ImageLoadError(path, "mask file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageLoadError(path, f"cannot read mask: {exc}") from exc
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if arr.max(initial=0) > 255:
            arr = arr / 257.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[:, :, :3] if arr.shape[2] >= 3 else arr[:, :, 0]
    return arr


def read_mask(path: str | os.PathLike, convention: str = "white") -> np.ndarray:
    """Read a ground-truth mask as bool (True = tampered) under one of :data:`MASK_CONVENTIONS`: ``white``
    (value >= 128 of the brightest channel, or > 0 for a 0/1 mask), ``black`` (< 128), ``green`` (Columbia's
    edge masks). Palette, 1-bit, 16-bit, RGBA and CMYK masks are handled. Raises :class:`ImageLoadError`."""
    arr = _mask_array(Path(path))
    if convention == "green":
        if arr.ndim != 3:
            raise ImageLoadError(path, "Columbia edge mask must be a colour image")
        return (arr[:, :, 1] >= 128) & (arr[:, :, 0] < 128)
    gray = arr.max(axis=2) if arr.ndim == 3 else arr
    if convention == "black":
        return gray < 128
    if convention == "white":
        if gray.max(initial=0) <= 1:
            return gray > 0
        return gray >= 128
    raise ValueError(f"unknown mask convention {convention!r}")


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A white-is-tampered ground-truth mask as bool (H, W): :func:`read_mask` with ``convention="white"``."""
    return read_mask(path, "white")


def is_output_file(path: Path) -> bool:
    """A file ``manipseg predict`` wrote (``.prob.png``, ``.mask.png``, ``.overlay.jpg``)."""
    return path.name.lower().endswith(OUTPUT_SUFFIXES)


@dataclass
class Listing:
    """What :func:`list_images` found: the files, the inputs that matched nothing (``problems``), and
    what it left out on purpose (``notes``: sub-folders without ``recursive``, manipseg's own outputs)."""

    files: list[Path]
    problems: list[tuple[str, str]]   # (input as given, what is wrong)
    notes: list[str]

    def __iter__(self):  # ``files, problems = list_images(...)`` keeps working
        return iter((self.files, [f"{item}: {why}" for item, why in self.problems]))


def list_images(inputs: list[str], recursive: bool = False) -> Listing:
    """Expand files, directories (image suffixes; sub-folders only with ``recursive``) and globs into a
    sorted, de-duplicated list of files. manipseg's own output files found in a folder are left out.
    Unpacks as ``(files, problems)``; see :class:`Listing`."""

    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            entries = sorted(p.rglob("*") if recursive else p.iterdir())
            images = [q for q in entries if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
            found = [q for q in images if not is_output_file(q)]
            if len(found) < len(images):
                notes.append(f"{item}: {len(images) - len(found)} manipseg output file(s) (*.prob.png, *.mask.png, "
                             "*.overlay.jpg, *.thumb.jpg) not taken as inputs")
            subdirs = [q for q in entries if q.is_dir()] if not recursive else []
            if subdirs:
                notes.append(f"{item}: {len(subdirs)} sub-folder(s) not searched (add --recursive to include them)")
            if not found:
                problems.append((item, "directory contains no image files"))
            files.extend(found)
        elif p.exists():
            files.append(p)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                problems.append((item, "pattern matched no files"))
            files.extend(found)
        else:
            problems.append((item, "no such file or directory"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return Listing(unique, problems, notes)


class OutputDirError(ValueError):
    """An output folder that cannot be used; the message names it and says what to do."""


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (with its parents) and check that files can be written there, before any work.

    Raises :class:`OutputDirError` with one clear line for a path that is a file, lies under a file, cannot
    be created, or is not writable."""
    out = Path(path)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == out else f"lies under {parent}, which is"
            raise OutputDirError(f"output folder {out} {where} a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create output folder {out}: {exc.strerror or exc}; choose another --out") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".manipseg-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirError(f"cannot write in output folder {out}: {exc.strerror or exc}; "
                             "choose another --out or fix its permissions") from None
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Write a file atomically: ``writer`` writes to a temporary file in the same directory, which is
    then renamed over ``path``. A crash leaves either the old file or the new one, never half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return target


def encode_png(array: np.ndarray) -> bytes:
    """A uint8/uint16 gray or uint8 RGB array encoded as PNG bytes (16-bit kept as 16-bit)."""
    import cv2

    arr = np.ascontiguousarray(array)
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"PNG encoding failed for a {arr.dtype} array of shape {arr.shape}")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """An RGB uint8 array encoded as JPEG bytes at ``quality``."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"JPEG encoding failed for an array of shape {rgb.shape}")
    return buf.tobytes()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically save a uint8/uint16 gray or uint8 RGB array as PNG (16-bit kept as 16-bit)."""
    return write_bytes_atomic(path, encode_png(array))


def save_jpeg(path: str | os.PathLike, rgb: np.ndarray, quality: int = 90) -> Path:
    """Atomically save an RGB uint8 array as JPEG."""
    return write_bytes_atomic(path, encode_jpeg(rgb, quality))


def prob_to_u16(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as the 16-bit values of a ``.prob.png`` (value = P x 65535, rounded; computed
    in float32, 25x faster than in float64 on a 12-MP map, at most 1/65535 apart)."""
    p = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0) * np.float32(65535.0)
    return np.rint(p).astype(np.uint16)


def read_prob_png(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.prob.png`` written by ``manipseg predict`` back to float32 probabilities."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageLoadError(path, "cannot read probability map")
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return arr.astype(np.float32) / 255.0


def output_stems(files: list[Path]) -> dict[Path, str]:
    """Output stem per input; inputs sharing a stem (a.jpg, a.png, dir1/a.jpg) get ``a``, ``a-2``, ..."""
    stems: dict[Path, str] = {}
    used: set[str] = set()
    for f in files:
        stem, k = f.stem, 2
        while stem in used:
            stem = f"{f.stem}-{k}"
            k += 1
        used.add(stem)
        stems[f] = stem
    return stems
