"""JSON errors with stable codes: ``{"error": {"code": "...", "message": "..."}}``.

Clients branch on ``code`` (stable), people read ``message``. Nothing else leaks: unexpected exceptions are
logged server-side with their traceback and reported to the client as ``internal_error``.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("manipseg.serve")

#: every code the API can return, with its HTTP status (documented in the OpenAPI description).
ERROR_CODES: dict[str, int] = {
    "invalid_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "upload_timeout": 408,
    "upload_too_large": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "unsupported_media_type": 415,
    "empty_file": 422,
    "missing_image": 422,
    "corrupt_image": 422,
    "unsupported_mode": 422,
    "image_too_small": 422,
    "unknown_model": 422,
    "invalid_threshold": 422,
    "model_unavailable": 503,
    "busy": 503,
    "timeout": 504,
    "internal_error": 500,
}


class ApiError(Exception):
    """An error reported to the client as JSON with a stable ``code``."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"undeclared API error code {code!r}")
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code]
        self.message = message
        self.headers = headers or {}


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=ERROR_CODES[code],
                        headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response("not_found", f"no such endpoint: {request.url.path}")
        if exc.status_code == 405:
            return error_response("method_not_allowed", f"{request.method} is not allowed on {request.url.path}",
                                  headers=dict(exc.headers or {}))
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        resp = error_response("invalid_request", str(exc.detail))
        resp.status_code = status
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response("invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response("internal_error", "the server failed to process the request; the error was logged")
