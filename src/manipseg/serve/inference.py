"""Everything that happens to one uploaded image, and the gate that bounds how many run at once.

:class:`Gate` runs jobs on a pool of ``max_concurrent`` threads (so the event loop stays responsive) and
admits at most ``max_concurrent + queue`` jobs; the next one is refused at once with ``busy`` (503).
A job that exceeds the time-out is answered with ``timeout`` (504); if it is already running, its
thread keeps its slot until it finishes, so the bound on concurrent inferences always holds.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from .. import registry
from ..calibration import verdict_of
from ..contract import Detector
from ..io import ImageLoadError, decode_image, prob_to_u16
from .errors import ApiError

log = logging.getLogger("manipseg.serve")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Server configuration. Defaults suit a laptop: one inference at a time, a short queue."""

    model: str = registry.DEFAULT_MODEL
    max_bytes: int = 25 * 1024 * 1024        # 25 MiB upload
    max_pixels: int = 40_000_000             # 40 megapixels: any camera photo, not a decompression bomb
    max_concurrent: int = 1
    queue: int = 4
    timeout: float = 120.0                   # seconds, queueing + inference

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 64:
            raise ValueError("max_bytes must be >= 1 and max_pixels >= 64")
        if self.max_concurrent < 1 or self.queue < 0:
            raise ValueError("max_concurrent must be >= 1 and queue >= 0")
        if not self.timeout > 0:
            raise ValueError("timeout must be > 0 seconds")


class Gate:
    """Bounded concurrency (a pool of ``max_concurrent`` threads) with a bounded queue and a time-out."""

    def __init__(self, max_concurrent: int, queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.capacity = max_concurrent + queue
        self.admitted = 0  # running + waiting; only touched on the event loop thread
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None  # made on first use, again after shutdown

    async def run(self, fn: Callable[[], T], timeout: float) -> T:
        if self.admitted >= self.capacity:
            raise ApiError("busy", f"the server is busy ({self.max_concurrent} running, "
                                   f"{self.capacity - self.max_concurrent} waiting); try again in a few seconds",
                           headers={"Retry-After": "5"})
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.max_concurrent,
                                                               thread_name_prefix="manipseg-infer")
        job = self._pool.submit(fn)
        self.admitted += 1

        def release(_: concurrent.futures.Future) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._release)

        job.add_done_callback(release)
        result = asyncio.wrap_future(job, loop=loop)
        # a job that ends after its request timed out must not log "exception was never retrieved"
        result.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(result), timeout)
        except TimeoutError:
            started = not job.cancel()
            where = "while analysing the image" if started else "waiting in the queue"
            raise ApiError("timeout", f"no result within {timeout:g} s ({where}); try a smaller image "
                                      "or try again later") from None

    def _release(self) -> None:
        self.admitted -= 1

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def model_label(spec: str) -> str:
    """The name clients use for the server's model: a registry name, or a weights/config file's stem."""
    return spec if spec in registry.names() else Path(spec).stem


class DetectorPool:
    """Detectors loaded once and shared. Clients may only name registered detectors (never paths)."""

    def __init__(self, default_spec: str, default_detector: Detector | None = None) -> None:
        self.default_spec = default_spec
        self.default_name = model_label(default_spec)
        self._loaded: dict[str, Detector] = {default_spec: default_detector} if default_detector else {}
        self._failed: set[str] = set()  # specs that failed to load: listed as unavailable
        self._lock = threading.Lock()

    def resolve(self, name: str | None) -> str:
        """The spec to load for a client-supplied model name (``None`` = the default)."""
        if name is None or name == "" or name == self.default_name:
            return self.default_spec
        if name in registry.names():
            return name
        raise ApiError("unknown_model", str(registry.DETECTORS.unknown(name[:100], also=[self.default_name])))

    def get(self, spec: str) -> Detector:
        with self._lock:
            det = self._loaded.get(spec)
            if det is None:
                try:
                    det = registry.load_detector(spec)
                except (ImportError, OSError, ValueError, KeyError, RuntimeError) as exc:
                    log.warning("cannot load detector %r: %s: %s", spec, type(exc).__name__, exc)
                    self._failed.add(spec)
                    raise ApiError("model_unavailable",
                                   f"detector {model_label(spec)!r} cannot be loaded on this server (for example, "
                                   "its trained weights are not installed); pick another detector") from None
                self._failed.discard(spec)
                self._loaded[spec] = det
            return det

    def describe(self) -> list[dict[str, Any]]:
        """Every registered detector (and a custom default model), with its default threshold."""
        out = []
        names = registry.names()
        for entry in registry.entries():
            item: dict[str, Any] = {"name": entry.name, "summary": entry.summary,
                                    "default": entry.name == self.default_name}
            try:
                cls = entry.load()
                ok, why = cls.availability()
                loaded = self._loaded.get(entry.name)
                item.update(available=ok and entry.name not in self._failed,
                            threshold=float(loaded.threshold) if loaded is not None else cls.default_threshold())
                if not item["available"]:
                    item["reason"] = why or "it failed to load on this server"
            except (ImportError, AttributeError) as exc:
                log.debug("detector %s not importable: %s", entry.name, exc)
                item.update(available=False, threshold=None)
            out.append(item)
        if self.default_name not in names:
            det = self.get(self.default_spec)
            out.insert(0, {"name": self.default_name, "summary": det.summary or f"model from {self.default_name}",
                           "default": True, "available": True, "threshold": float(det.threshold)})
        return out


# -- the analysis itself (runs on a worker thread) ------------------------------------------------

_IMAGE_ERRORS = [  # (substring of ImageLoadError.problem, code) -- kept in step with manipseg.io
    ("file is empty", "empty_file"),
    ("not a recognised image format", "not_an_image"),
    ("exceeds the cap", "too_many_pixels"),
    ("too small", "image_too_small"),
    ("unsupported pixel mode", "unsupported_mode"),
    ("truncated or corrupt", "corrupt_image"),
    ("cannot read image header", "corrupt_image"),
]

_MAGIC = [  # container signatures: recognised files Pillow cannot decode get a specific message
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"), (b"BM", "BMP"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
]


def sniff(data: bytes) -> str | None:
    """The container format named by the leading bytes, whatever the file name or Content-Type claim."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC"
        if brand in (b"avif", b"avis"):
            return "AVIF"
    return None


def decode_upload(data: bytes, filename: str, max_pixels: int) -> np.ndarray:
    """Decode uploaded bytes by their content; every failure becomes an :class:`ApiError`."""
    try:
        return decode_image(data, filename, max_pixels=max_pixels)
    except ImageLoadError as exc:
        code = next((c for key, c in _IMAGE_ERRORS if key in exc.problem), "corrupt_image")
        if code == "not_an_image":
            fmt = sniff(data)
            if fmt in ("HEIC", "AVIF"):
                raise ApiError("unsupported_mode", f"{filename}: {fmt} photos are not supported by this server; "
                                                   "export the photo as JPEG or PNG") from None
            if fmt is not None:
                raise ApiError("unsupported_mode", f"{filename}: a {fmt} file whose pixel format cannot be read "
                                                   "(e.g. floating-point samples); convert it to 8- or 16-bit "
                                                   "RGB or grayscale") from None
            raise ApiError(code, f"{filename}: not an image this server can read (the content is not JPEG, PNG, "
                                 "TIFF, BMP, GIF or WebP, whatever its name says)") from None
        if code == "too_many_pixels":
            declared = re.search(r"\d+x\d+ = [\d,]+ pixels", exc.problem)
            size = f" declares {declared.group(0)}" if declared else ""
            raise ApiError(code, f"{filename}: the image{size}; this server accepts at most {max_pixels:,} "
                                 "pixels (a possible decompression bomb); send a smaller image") from None
        hint = f" ({exc.hint})" if exc.hint else ""
        raise ApiError(code, f"{filename}: {exc.problem}{hint}") from None
    except (ValueError, OSError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as exc:
        # hostile files can trip decoder errors manipseg.io does not classify
        log.warning("undecodable upload %r: %s: %s", filename, type(exc).__name__, exc)
        raise ApiError("corrupt_image", f"{filename}: the image data is corrupt and cannot be decoded") from None


def png_data_url(array: np.ndarray) -> str:
    """Encode a gray (uint8/uint16), RGB or RGBA (uint8) array as a ``data:image/png;base64,`` URL."""
    import cv2

    arr = np.ascontiguousarray(array)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    # level 1: level 6 is 3x slower for ~10 % smaller files
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


_VERDICT_LEVEL = {"likely manipulated": "high", "inconclusive": "medium", "no clear sign": "low"}


def reading(score: float, verdict: dict[str, Any] | None = None) -> tuple[str, str]:
    """A level and a plain-words reading of an image-level score. A score is evidence, never proof.
    With a calibrated ``verdict`` (:func:`manipseg.calibration.verdict_of`) the level follows it and the
    reading states the false-alarm rate; uncalibrated detectors get fixed cut-offs."""
    if verdict is not None and verdict.get("false_alarm_rate") is not None:
        v, rate = verdict["verdict"], 100 * verdict["false_alarm_rate"]
        if v == "likely manipulated":
            return "high", (f"Likely manipulated: the score reaches the level that at most {rate:.0f} % of authentic "
                            "photos reach. This is not proof: check the marked regions and where the photo came from.")
        if v == "inconclusive":
            return "medium", ("Inconclusive: higher than most authentic photos score, but below the decision "
                              f"level (at most {rate:.0f} % false alarms). Worth a closer look; compression, resizing or "
                              "noise can cause this too.")
        return "low", ("No clear sign of editing: the score is in the range of most authentic photos, so no "
                       "region is marked. This does not prove the photo is authentic.")
    if score >= 0.6:
        return "high", ("Strong signs that some regions differ from the rest of the photo, as editing often "
                        "leaves. This is not proof: check the marked regions and where the photo came from.")
    if score >= 0.3:
        return "medium", ("Some regions look inconsistent with the rest of the photo. Worth a closer look, but "
                          "compression, resizing or strong noise can cause this too.")
    return "low", ("No strong sign of editing was found. This does not prove the photo is authentic: some "
                   "edits leave no trace this detector can see.")


IMAGE_KINDS = ("prob", "mask", "overlay", "heatmap")
DEFAULT_IMAGES = ("prob", "mask", "overlay")  # the heatmap layer costs ~25 % more time; on request only


def analyze(data: bytes, filename: str, spec: str, threshold: float | None, settings: Settings,
            pool: DetectorPool, images: tuple[str, ...] = DEFAULT_IMAGES) -> dict[str, Any]:
    """Decode, predict, post-process and encode one upload (``images``: which PNGs to return).
    Runs on a worker thread."""
    from ..postprocess import prob_to_mask
    from ..predict import caption
    from ..visualize import heatmap, overlay

    t0 = time.perf_counter()
    image = decode_upload(data, filename, settings.max_pixels)
    det = pool.get(spec)
    t1 = time.perf_counter()
    pred = det.predict(image)
    t2 = time.perf_counter()
    thr = float(det.threshold) if threshold is None else threshold
    mask = prob_to_mask(pred.prob, thr, min_region=det.min_region)
    verdict = verdict_of(det, float(pred.score))
    if verdict["verdict"] == "no clear sign":
        mask = np.zeros_like(mask)  # judged authentic: no regions are marked (the map is still returned)
    prob = pred.prob
    render = {
        "prob": lambda: prob_to_u16(prob),
        "mask": lambda: mask.astype(np.uint8) * 255,
        "overlay": lambda: overlay(image, prob, mask, legend=True,
                                   caption=caption(verdict, float(pred.score), det.name)),
        "heatmap": lambda: np.dstack([heatmap(prob), np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)]),
    }
    result = {f"{kind}_png": png_data_url(render[kind]()) for kind in images}
    t3 = time.perf_counter()
    level, text = reading(pred.score, verdict)
    return {
        "model": pool.default_name if spec == pool.default_spec else spec,
        "score": float(pred.score),
        "verdict": verdict["verdict"],
        "score_threshold": verdict["score_threshold"],
        "false_alarm_rate": verdict["false_alarm_rate"],
        "level": level,
        "reading": text,
        "threshold": thr,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "flagged_fraction": float(mask.mean()),
        "seconds": round(t3 - t0, 4),
        "timings": {"decode": round(t1 - t0, 4), "predict": round(t2 - t1, 4), "encode": round(t3 - t2, 4)},
        **result,
    }
