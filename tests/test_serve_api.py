"""HTTP API of ``manipseg serve``: every endpoint, every limit, errors as stable JSON codes."""
from __future__ import annotations

import base64
import io
import logging
import socket
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import serve_support as sup  # noqa: E402
from manipseg import registry  # noqa: E402
from manipseg.serve.app import create_app  # noqa: E402
from manipseg.serve.inference import Settings  # noqa: E402


def client(**settings) -> TestClient:
    settings.setdefault("model", "test-square")
    return TestClient(create_app(Settings(**settings)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def api():
    with client() as c:
        yield c


@pytest.fixture
def slow_gate():
    sup.SLOW_GATE.clear()
    while sup.SLOW_STARTED.acquire(blocking=False):
        pass
    yield sup.SLOW_GATE
    sup.SLOW_GATE.set()


def small_photo() -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (160, 120), interpolation=cv2.INTER_AREA)


def post(c: TestClient, data: bytes, name: str = "photo.png", ctype: str = "image/png", **fields):
    return c.post("/v1/analyze", files={"image": (name, data, ctype)}, data={k: str(v) for k, v in fields.items()})


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    raw = base64.b64decode(url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)


def assert_error(resp: httpx.Response, status: int, code: str, *fragments: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    for frag in fragments:
        assert frag in message, message
    assert "Traceback" not in message
    return message


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (valid CRC) but whose data is tiny."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


# -- endpoints --------------------------------------------------------------------------------------

def test_healthz_info_and_models(api):
    health = api.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["busy"] == 0 and health.json()["capacity"] == 5

    info = api.get("/v1/info").json()
    assert info["default_model"] == "test-square"
    assert info["limits"] == {"max_bytes": Settings.max_bytes, "max_pixels": Settings.max_pixels,
                              "max_concurrent": 1, "queue": 4, "timeout": 120.0}

    models = api.get("/v1/models").json()
    assert models["default"] == "test-square"
    by_name = {m["name"]: m for m in models["models"]}
    assert set(by_name) == set(registry.names())
    assert by_name["test-square"]["default"] and not by_name["noi"]["default"]
    assert by_name["noi"]["available"] and by_name["noi"]["threshold"] == pytest.approx(0.5)
    # what is listed is what analyze does: no bundled weights -> unavailable, with the reason; the threshold
    # of a network is the one its weights store (the one the detector uses), not the class default
    assert not by_name["test-gsr-absent"]["available"] and "no trained weights" in by_name["test-gsr-absent"]["reason"]
    assert post(api, sup.encode(small_photo()), model="test-gsr-absent").status_code == 503
    used = registry.load_detector("gsr-compact").threshold
    assert by_name["gsr-compact"]["available"] and by_name["gsr-compact"]["threshold"] == pytest.approx(used)
    assert used != pytest.approx(0.5)


def test_registry_default_model_is_the_server_default():
    assert Settings().model == registry.DEFAULT_MODEL
    assert registry.DEFAULT_MODEL in registry.names()


def test_analyze_known_answer(api):
    jpeg = sup.encode(small_photo(), ".jpg")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    resp = post(api, jpeg, "x.jpg", "image/jpeg")
    assert resp.status_code == 200, resp.text
    r = resp.json()
    assert (r["width"], r["height"]) == (160, 120)
    assert r["model"] == "test-square" and r["score"] == 0.75 and r["threshold"] == 0.5
    assert r["level"] == "high" and "not proof" in r["reading"]
    assert r["seconds"] >= r["timings"]["predict"] >= 0
    prob = decode_data_url(r["prob_png"])
    assert prob.dtype == np.uint16 and prob.shape == (120, 160)
    expected = np.zeros((120, 160), np.uint16)
    expected[30:90, 40:120] = 65535
    np.testing.assert_array_equal(prob, expected)
    mask = decode_data_url(r["mask_png"])
    # prob_to_mask dilates by a 5x5 square: the square grows by 2 pixels on each side
    grown = np.zeros((120, 160), np.uint8)
    grown[28:92, 38:122] = 255
    np.testing.assert_array_equal(mask, grown)
    assert r["flagged_fraction"] == pytest.approx(grown.astype(bool).mean())
    overlay = decode_data_url(r["overlay_png"])
    assert overlay.shape == (120, 160, 3)
    # untouched where prob = 0 (outside the caption band at the top and the colour bar at the bottom right)
    np.testing.assert_array_equal(overlay[60, 5, ::-1], image[60, 5])
    assert r["verdict"] == "uncalibrated" and r["false_alarm_rate"] is None and r["score_threshold"] == 0.5
    assert "heatmap_png" not in r  # on request only
    heat = decode_data_url(post(api, jpeg, images="heatmap").json()["heatmap_png"])
    assert heat.shape == (120, 160, 4) and heat[60, 80, 3] == 255 and heat[5, 5, 3] == 0


def test_analyze_with_a_real_detector_and_threshold(api):
    image = small_photo()
    resp = post(api, sup.encode(image), model="noi", threshold="0.9")
    assert resp.status_code == 200, resp.text
    r = resp.json()
    assert r["model"] == "noi" and r["threshold"] == 0.9 and 0.0 <= r["score"] <= 1.0
    assert decode_data_url(r["prob_png"]).shape == (120, 160)


def test_threshold_zero_marks_everything_and_bad_thresholds_are_refused(api):
    data = sup.encode(small_photo())
    assert post(api, data, threshold="0").json()["flagged_fraction"] == 1.0
    for bad in ("abc", "1.5", "-0.1", "nan", "inf"):
        assert_error(post(api, data, threshold=bad), 422, "invalid_threshold", "[0, 1]")


def test_images_option(api):
    data = sup.encode(small_photo())
    r = post(api, data, images="all").json()
    assert sorted(k for k in r if k.endswith("_png")) == ["heatmap_png", "mask_png", "overlay_png", "prob_png"]
    r = post(api, data, images="none").json()
    assert not any(k.endswith("_png") for k in r) and r["score"] == 0.75
    r = post(api, data, images="mask, prob").json()
    assert sorted(k for k in r if k.endswith("_png")) == ["mask_png", "prob_png"]
    assert_error(post(api, data, images="thumbnail"), 400, "invalid_request", "comma list")


def test_uploads_stay_in_memory(api, monkeypatch):
    """No temporary file is made for a 2.5 MB upload (Starlette's own form parser would spool it)."""
    import tempfile

    def forbidden(*args, **kwargs):
        raise AssertionError("a temporary file was created")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, forbidden)
    noise = np.random.default_rng(2).integers(0, 255, (900, 900, 3), dtype=np.uint8)
    data = sup.encode(noise)
    assert len(data) > 2_000_000
    resp = post(api, data, images="none")
    assert resp.status_code == 200 and resp.json()["width"] == 900


# -- content sniffing and bad images ---------------------------------------------------------------

def test_content_is_sniffed_not_the_name_or_type(api):
    resp = post(api, sup.encode(small_photo()), "notes.txt", "text/plain")
    assert resp.status_code == 200 and resp.json()["width"] == 160
    assert_error(post(api, b"<html>definitely not a photo</html>" * 10, "photo.jpg", "image/jpeg"),
                 415, "not_an_image", "photo.jpg", "whatever its name says")


def test_empty_truncated_tiny_and_unsupported(api):
    assert_error(post(api, b"", "empty.png"), 422, "empty_file", "empty.png")
    jpeg = sup.encode(small_photo(), ".jpg")
    assert_error(post(api, jpeg[: len(jpeg) // 2], "cut.jpg", "image/jpeg"), 422, "corrupt_image",
                 "cut.jpg", "truncated or corrupt")
    assert_error(post(api, sup.encode(np.zeros((4, 4, 3), np.uint8))), 422, "image_too_small", "4x4")
    ok, tiff = cv2.imencode(".tiff", np.random.default_rng(0).random((16, 16, 3)).astype(np.float32))
    assert ok
    assert_error(post(api, tiff.tobytes(), "float.tif", "image/tiff"), 422, "unsupported_mode",
                 "TIFF", "convert it")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    assert_error(post(api, heic, "IMG_0001.HEIC", "image/heic"), 422, "unsupported_mode", "HEIC", "JPEG")


def test_uploaded_file_name_is_sanitised_in_messages(api):
    body = (b'--zz\r\nContent-Disposition: form-data; name="image"; filename="../..\\etc/pass\x07wd"\r\n\r\n'
            + b"junk" * 10 + b"\r\n--zz--\r\n")
    resp = api.post("/v1/analyze", content=body, headers={"content-type": "multipart/form-data; boundary=zz"})
    msg = assert_error(resp, 415, "not_an_image")
    assert msg.startswith("passwd:")


# -- size and pixel limits -------------------------------------------------------------------------

def test_upload_too_large_is_413():
    with client(max_bytes=20_000) as c:
        big = sup.encode(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8))
        assert len(big) > 20_000 + 64 * 1024
        assert_error(post(c, big), 413, "upload_too_large", "20,000 bytes")
        # inside the envelope allowance but above the file limit: refused while parsing the part
        assert_error(post(c, big[:30_000]), 413, "upload_too_large")
        assert post(c, sup.encode(small_photo(), ".jpg", IMWRITE_JPEG_QUALITY=60)).status_code == 200


def test_chunked_upload_without_content_length_is_cut_off():
    with client(max_bytes=10_000) as c:
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode()
        sent = []

        def body():
            yield head
            for _ in range(400):  # 400 x 1 KiB = far above 10 KB + envelope
                sent.append(1)
                yield b"\0" * 1024
            yield f"\r\n--{boundary}--\r\n".encode()

        resp = c.post("/v1/analyze", content=body(),
                      headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_error(resp, 413, "upload_too_large")


def test_too_many_pixels_header_is_refused_before_decoding(api):
    assert_error(post(api, png_with_size(50_000, 50_000), "bomb.png"), 413, "too_many_pixels",
                 "bomb.png", "declares 50000x50000 = 2,500,000,000 pixels", "40,000,000")


def test_real_decompression_bomb_and_configurable_pixel_cap():
    bomb = sup.encode(np.zeros((3000, 3000), np.uint8))  # 9 MP of zeros is a ~9 KB PNG
    assert len(bomb) < 20_000
    with client(max_pixels=4_000_000) as c:
        assert_error(post(c, bomb, "zeros.png"), 413, "too_many_pixels", "declares 3000x3000 = 9,000,000 pixels",
                     "at most 4,000,000")
        assert post(c, sup.encode(small_photo())).status_code == 200


# -- requests that are not what the API expects ----------------------------------------------------

def test_malformed_requests(api):
    assert_error(api.post("/v1/analyze", json={"image": "x"}), 415, "unsupported_media_type", "multipart")
    assert_error(api.post("/v1/analyze", data={"model": "noi"}, files={"other": ("a.png", b"x", "image/png")}),
                 422, "missing_image", "'image'")
    assert_error(api.post("/v1/analyze", content=b"--x\r\ngarbage",
                          headers={"content-type": "multipart/form-data; boundary=x"}), 400, "invalid_request")
    assert_error(api.post("/v1/analyze", content=b"", headers={"content-type": "multipart/form-data"}),
                 400, "invalid_request", "boundary")
    assert_error(api.get("/v1/nothing"), 404, "not_found", "/v1/nothing")
    assert_error(api.get("/v1/analyze"), 405, "method_not_allowed")
    assert_error(api.delete("/healthz"), 405, "method_not_allowed")


def test_unknown_model_gets_a_suggestion_and_paths_are_never_loaded(api):
    data = sup.encode(small_photo())
    assert_error(post(api, data, model="nio"), 422, "unknown_model", "Did you mean 'noi'?", "Known detectors")
    for hostile in ("/etc/passwd.json", "../weights/x.safetensors", "config.yaml"):
        assert_error(post(api, data, model=hostile), 422, "unknown_model")


def test_detector_without_weights_is_503_and_then_listed_unavailable():
    with client() as c:
        listed = {m["name"]: m["available"] for m in c.get("/v1/models").json()["models"]}
        assert listed["test-noweights"] is True  # not known until someone tries it
        msg = assert_error(post(c, sup.encode(small_photo()), model="test-noweights"), 503, "model_unavailable",
                           "'test-noweights'", "pick another detector")
        assert "/srv" not in msg  # server paths stay in the server log
        listed = {m["name"]: m["available"] for m in c.get("/v1/models").json()["models"]}
        assert listed["test-noweights"] is False and listed["test-square"] is True


def test_internal_errors_are_logged_not_shown(api, caplog):
    with caplog.at_level(logging.ERROR, logger="manipseg.serve"):
        msg = assert_error(post(api, sup.encode(small_photo()), model="test-broken"), 500, "internal_error")
    assert "secret" not in msg and "RuntimeError" not in msg
    assert any("secret internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert api.get("/healthz").json()["busy"] == 0  # the slot was released


def test_security_headers_and_openapi(api):
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    schema = api.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/v1/analyze", "/v1/models", "/v1/info", "/healthz"}
    body = schema["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["image"] and body["properties"]["image"]["format"] == "binary"
    assert {"413", "415", "503", "504"} <= set(schema["paths"]["/v1/analyze"]["post"]["responses"])
    assert api.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_page_and_assets_need_no_network(api):
    import re

    for path in ("/", "/static/app.js", "/static/app.css"):
        resp = api.get(path)
        assert resp.status_code == 200
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", resp.text), path
        assert "@import" not in resp.text and "url(http" not in resp.text


# -- time-out and concurrency ----------------------------------------------------------------------

def test_timeout_is_504_and_the_slot_stays_taken_until_the_job_ends(slow_gate):
    with client(model="test-slow", timeout=0.5, queue=0) as c:
        t = time.perf_counter()
        assert_error(post(c, sup.encode(small_photo())), 504, "timeout", "0.5 s")
        assert time.perf_counter() - t < 5
        assert c.get("/healthz").json()["busy"] == 1  # the thread is still running
        assert_error(post(c, sup.encode(small_photo())), 503, "busy")
        slow_gate.set()
        deadline = time.monotonic() + 5
        while c.get("/healthz").json()["busy"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.get("/healthz").json()["busy"] == 0
        assert post(c, sup.encode(small_photo())).status_code == 200


def test_concurrency_above_the_bound_gets_503_on_a_real_server(slow_gate):
    app = create_app(Settings(model="test-slow", max_concurrent=1, queue=1, timeout=30))
    data = sup.encode(small_photo())
    files = {"image": ("a.png", data, "image/png")}
    with sup.live_server(app) as url:
        results: dict[str, httpx.Response] = {}

        def send(key: str) -> None:
            results[key] = httpx.post(url + "/v1/analyze", files=files, timeout=30)

        first = threading.Thread(target=send, args=("first",))
        first.start()
        assert sup.SLOW_STARTED.acquire(timeout=10)  # the first request is running
        second = threading.Thread(target=send, args=("second",))
        second.start()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/healthz").json()["busy"] < 2:  # the second one is queued
            assert time.monotonic() < deadline
            time.sleep(0.02)

        third = httpx.post(url + "/v1/analyze", files=files, timeout=10)
        assert_error(third, 503, "busy", "try again")
        assert third.headers["retry-after"] == "5"
        t = time.perf_counter()  # the event loop still serves everything else at once
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        assert httpx.get(url + "/v1/models", timeout=5).status_code == 200
        assert httpx.get(url + "/", timeout=5).status_code == 200
        assert time.perf_counter() - t < 2

        slow_gate.set()
        first.join(20)
        second.join(20)
        assert results["first"].status_code == 200 and results["second"].status_code == 200
        assert httpx.get(url + "/healthz").json()["busy"] == 0
        assert httpx.post(url + "/v1/analyze", files=files, timeout=10).status_code == 200


def _read_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> str:
    """Read a raw HTTP reply until ``marker`` appears, the peer closes, or ``limit`` bytes arrived."""
    reply = b""
    while marker not in reply and len(reply) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply.decode("latin-1")


def test_declared_oversize_body_is_refused_before_it_is_sent():
    app = create_app(Settings(model="test-square", max_bytes=1000))
    with sup.live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=z\r\n"
                      b"Content-Length: 1000000000\r\n\r\n")
            reply = _read_until(s, b"upload_too_large")  # answered although no byte of the body was sent
        assert reply.startswith("HTTP/1.1 413"), reply
        assert '"code":"upload_too_large"' in reply.replace(" ", "")


def test_slow_upload_gets_408():
    app = create_app(Settings(model="test-square", timeout=0.5))
    with sup.live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=z\r\n"
                      b"Content-Length: 5000\r\n\r\n--z\r\n")  # ... and then nothing more
            t = time.perf_counter()
            reply = _read_until(s, b"upload_timeout")
            assert time.perf_counter() - t < 5
        assert reply.startswith("HTTP/1.1 408"), reply
        assert httpx.get(url + "/healthz").status_code == 200


# -- the command line ------------------------------------------------------------------------------

def test_serve_command_options_and_bad_model(capsys):
    from manipseg.cli import build_parser, main

    parser, _ = build_parser()
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, registry.DEFAULT_MODEL)
    assert (args.max_concurrent, args.queue) == (1, 4)
    assert main(["serve", "--model", "nio"]) == 2
    assert main(["serve", "--max-concurrent", "0"]) == 2
