"""The ASGI application: the web page, ``POST /v1/analyze``, ``GET /v1/models``, ``GET /v1/info`` and
``GET /healthz``. Build it with :func:`create_app`; ``manipseg serve`` runs it with uvicorn.
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..contract import Detector
from .errors import ERROR_CODES, ApiError, install_error_handlers
from .inference import DEFAULT_IMAGES, IMAGE_KINDS, DetectorPool, Gate, Settings, analyze
from .upload import parse_multipart, read_body

log = logging.getLogger("manipseg.serve")

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; object-src 'none'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds a strict Content-Security-Policy and friends to every response (the page needs no CDN)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- response models (they document the API in the OpenAPI schema) -------------------------------

class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code: " + ", ".join(sorted(ERROR_CODES)))
    message: str = Field(description="what went wrong and what to do, for people")


class ErrorResponse(BaseModel):
    error: ErrorBody


class Timings(BaseModel):
    decode: float = Field(description="seconds to decode the upload (and load the detector on first use)")
    predict: float = Field(description="seconds the detector took")
    encode: float = Field(description="seconds for the mask, the overlay and the PNG encoding")


class AnalyzeResult(BaseModel):
    model: str = Field(description="detector that produced the result")
    score: float = Field(ge=0, le=1, description="image-level score in [0, 1]; evidence, not proof")
    verdict: str = Field(description="'likely manipulated', 'inconclusive' or 'no clear sign' (calibrated on "
                                     "authentic photos), or 'uncalibrated'")
    score_threshold: float = Field(description="score from which the image is judged 'likely manipulated'")
    false_alarm_rate: float | None = Field(description="at most this share of authentic photos reach score_threshold "
                                                       "(the calibration's rate, an upper bound at 95 % confidence for "
                                                       "the bundled detectors); null when uncalibrated")
    level: str = Field(description="low, medium or high")
    reading: str = Field(description="plain-words reading of the score")
    threshold: float = Field(description="threshold applied to the probability map to draw the mask")
    width: int
    height: int
    flagged_fraction: float = Field(description="fraction of pixels inside the mask")
    seconds: float = Field(description="server time for decoding, analysis and encoding")
    timings: Timings
    prob_png: str | None = Field(None, description="probability map, 16-bit grayscale PNG (0..65535 = 0..1), data URL")
    mask_png: str | None = Field(None, description="binary mask, 8-bit PNG (255 = flagged), data URL")
    overlay_png: str | None = Field(None, description="photo with heatmap and mask outline, RGB PNG, data URL")
    heatmap_png: str | None = Field(None, description="heatmap with alpha = probability, RGBA PNG, data URL "
                                                      "(only when asked for with images)")


class ModelInfo(BaseModel):
    name: str
    summary: str
    default: bool
    available: bool = Field(description="false when the detector's code or trained weights are missing")
    reason: str | None = Field(None, description="why the detector is unavailable")
    threshold: float | None = Field(description="the mask threshold the detector uses by default (from its weights "
                                                "when they store one)")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]


class Limits(BaseModel):
    max_bytes: int
    max_pixels: int
    max_concurrent: int
    queue: int
    timeout: float


class InfoResponse(BaseModel):
    version: str
    default_model: str
    limits: Limits


class Health(BaseModel):
    status: str
    version: str
    busy: int = Field(description="requests running or waiting")
    capacity: int


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": ", ".join(sorted(c for c, s in ERROR_CODES.items() if s == status))}
    for status in sorted(set(ERROR_CODES.values()))
}

ANALYZE_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary",
                      "description": "the photo: JPEG, PNG, TIFF, BMP, GIF or WebP (identified by content)"},
            "model": {"type": "string", "description": "detector name from GET /v1/models (default: server's)"},
            "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                          "description": "mask threshold in [0, 1] (default: the detector's own)"},
            "images": {"type": "string", "default": ",".join(DEFAULT_IMAGES),
                       "description": "PNGs to return: a comma list of " + ", ".join(IMAGE_KINDS)
                                      + ", or 'all' or 'none'"},
        },
    }}},
}


def _parse_threshold(raw: str | None) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError("invalid_threshold", f"threshold must be a number in [0, 1], got {raw[:40]!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ApiError("invalid_threshold", f"threshold must be a number in [0, 1], got {raw[:40]!r}")
    return value


def _parse_images(raw: str | None) -> tuple[str, ...]:
    if raw is None or raw.strip() == "":
        return DEFAULT_IMAGES
    value = raw.strip().lower()
    if value == "all":
        return IMAGE_KINDS
    if value == "none":
        return ()
    kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in IMAGE_KINDS]
    if unknown or not kinds:
        raise ApiError("invalid_request", f"images must be 'all', 'none' or a comma list of {', '.join(IMAGE_KINDS)}; "
                                          f"got {raw[:60]!r}")
    return kinds


def _clean_filename(name: str | None) -> str:
    """A short, printable base name for messages (the name is never used to touch the file system)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:80]
    return base or "upload"


def create_app(settings: Settings | None = None, preload: bool = True,
               default_detector: Detector | None = None) -> FastAPI:
    """The application. ``preload`` loads the default detector at start-up so the first request is fast
    and a broken model stops the server before it accepts requests; ``default_detector`` supplies it
    already loaded."""
    settings = settings or Settings()
    pool = DetectorPool(settings.model, default_detector)
    gate = Gate(settings.max_concurrent, settings.queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if preload:
            pool.get(pool.default_spec)
        yield
        gate.shutdown()

    app = FastAPI(
        title="manipseg",
        version=__version__,
        description=("Find where a photo was manipulated: a probability heatmap, a mask and an image-level "
                     "score. Errors are JSON `{\"error\": {\"code\", \"message\"}}` with a stable code. "
                     "A score is evidence for a person to weigh, never proof."),
        docs_url=None, redoc_url=None,  # Swagger UI/ReDoc load from a CDN; the schema is at /openapi.json
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.gate = gate
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)

    @app.post("/v1/analyze", response_model=AnalyzeResult, responses=ERRORS, openapi_extra={"requestBody": ANALYZE_BODY},
              summary="Analyse one image")
    async def analyze_image(request: Request) -> JSONResponse:
        try:
            body = await asyncio.wait_for(read_body(request, settings.max_bytes), settings.timeout)
        except TimeoutError:
            raise ApiError("upload_timeout", f"the upload did not complete within {settings.timeout:g} s") from None
        form = parse_multipart(body, request.headers.get("content-type", ""), settings.max_bytes)
        del body
        part = form.files.get("image")
        if part is None:
            raise ApiError("missing_image", "no file field named 'image' in the form")
        spec = pool.resolve(form.fields.get("model"))
        threshold = _parse_threshold(form.fields.get("threshold"))
        images = _parse_images(form.fields.get("images"))
        data = bytes(part.data)
        name = _clean_filename(part.filename)
        result = await gate.run(lambda: analyze(data, name, spec, threshold, settings, pool, images),
                                settings.timeout)
        return JSONResponse(result)

    @app.get("/v1/models", response_model=ModelsResponse, summary="Detectors this server can run")
    async def models() -> dict[str, Any]:
        return {"default": pool.default_name, "models": pool.describe()}

    @app.get("/v1/info", response_model=InfoResponse, summary="Version, default model and limits")
    async def info() -> dict[str, Any]:
        return {"version": __version__, "default_model": pool.default_name,
                "limits": {"max_bytes": settings.max_bytes, "max_pixels": settings.max_pixels,
                           "max_concurrent": settings.max_concurrent, "queue": settings.queue,
                           "timeout": settings.timeout}}

    @app.get("/healthz", response_model=Health, summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "busy": gate.admitted, "capacity": gate.capacity}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(files(__package__) / "static" / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static")
    return app
