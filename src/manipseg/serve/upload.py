"""Bounded, in-memory reading of a ``multipart/form-data`` upload.

The body is streamed and counted: a declared ``Content-Length`` above the cap is refused before reading,
and a body that grows past the cap is refused as soon as it does (413). Parts are parsed in memory by
python-multipart, so an upload is never written to disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError

#: room for multipart boundaries, part headers and the small text fields beside the file.
ENVELOPE_BYTES = 64 * 1024
MAX_PARTS = 16
MAX_FIELD_BYTES = 4096


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)

    @property
    def is_file(self) -> bool:
        """File parts: those with a filename, and the ``image`` field even when a client omits it."""
        return self.filename is not None or self.name == "image"


@dataclass
class Form:
    fields: dict[str, str]
    files: dict[str, Part]


def _too_large(max_bytes: int) -> ApiError:
    return ApiError("upload_too_large",
                    f"the upload is larger than this server's limit of {max_bytes:,} bytes; "
                    "send a smaller file (e.g. re-export the photo as JPEG)")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) anything above ``max_bytes`` + the multipart envelope."""
    cap = max_bytes + ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError("invalid_request", "Content-Length is not a number") from None
        if length > cap:
            raise _too_large(max_bytes)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise _too_large(max_bytes)
    except ClientDisconnect:
        raise ApiError("invalid_request", "the client closed the connection during the upload") from None
    return bytes(body)


def parse_multipart(body: bytes, content_type: str, max_bytes: int) -> Form:
    """Parse a multipart body in memory: text fields (each at most 4 KiB) and file parts."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise ApiError("unsupported_media_type",
                       "send the image as multipart/form-data with a file field named 'image'")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError("invalid_request", "multipart/form-data request without a valid boundary")

    parts: list[Part] = []
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    current: list[Part | None] = [None]
    finished: list[bool] = [False]

    def on_part_begin() -> None:
        headers.clear()
        if len(parts) >= MAX_PARTS:
            raise ApiError("invalid_request", f"too many form fields (at most {MAX_PARTS})")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise ApiError("invalid_request", "a multipart part lacks 'Content-Disposition: form-data; name=...'")
        filename = options.get(b"filename")
        part_type = headers.get(b"content-type")
        current[0] = Part(name.decode("utf-8", "replace"),
                          filename.decode("utf-8", "replace") if filename is not None else None,
                          part_type.decode("latin-1") if part_type else None)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current[0]
        assert part is not None
        part.data.extend(data[start:end])
        limit = max_bytes if part.is_file else MAX_FIELD_BYTES
        if len(part.data) > limit:
            if part.is_file:
                raise _too_large(max_bytes)
            raise ApiError("invalid_request", f"form field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        if current[0] is not None:
            parts.append(current[0])
        current[0] = None

    def on_end() -> None:
        finished[0] = True

    parser = MultipartParser(boundary, {
        "on_end": on_end,
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError("invalid_request", f"malformed multipart body: {exc}") from None
    if not finished[0]:
        raise ApiError("invalid_request", "incomplete multipart body: the closing boundary is missing")

    fields: dict[str, str] = {}
    files: dict[str, Part] = {}
    for part in parts:
        if part.is_file:
            files.setdefault(part.name, part)
        else:
            try:
                fields.setdefault(part.name, part.data.decode("utf-8"))
            except UnicodeDecodeError:
                raise ApiError("invalid_request", f"form field {part.name!r} is not valid UTF-8") from None
    return Form(fields, files)
