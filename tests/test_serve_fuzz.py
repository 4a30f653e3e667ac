"""Schemathesis fuzzes the published OpenAPI schema: whatever a client sends, no 5xx."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

import serve_support  # noqa: E402,F401  (registers the test detectors)
from manipseg.serve.app import create_app  # noqa: E402
from manipseg.serve.inference import Settings  # noqa: E402

app = create_app(Settings(model="test-square", max_bytes=200_000, max_pixels=1_000_000), preload=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])


def test_fuzzing_reaches_the_analysis_with_valid_images():
    """The fuzzer alone rarely makes a valid image; check the schema's example shape is accepted too."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, format="PNG")
    op = schema["/v1/analyze"]["POST"]
    case = op.Case(body={"image": buf.getvalue(), "model": "test-square", "threshold": 0.5},
                   media_type="multipart/form-data")
    response = case.call()
    assert response.status_code == 200, response.text[:300]
    assert response.json()["score"] == 0.75
