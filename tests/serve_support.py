"""Test detectors and a real uvicorn server for the ``manipseg serve`` tests (API and browser)."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

import cv2
import numpy as np

from manipseg import registry
from manipseg.contract import Detector, Prediction
from manipseg.models.gsr import GSRDetector


@registry.register("test-square", "test detector: the central quarter of the image, score 0.75")
class SquareDetector(Detector):
    """Known answer: prob = 1 on rows/cols [H/4, 3H/4) x [W/4, 3W/4), 0 elsewhere; score 0.75."""

    threshold = 0.5
    min_region = 0.0

    def _predict(self, image: np.ndarray) -> Prediction:
        h, w = image.shape[:2]
        prob = np.zeros((h, w), np.float32)
        prob[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
        return Prediction(prob, 0.75)


SLOW_GATE = threading.Event()  # cleared: test-slow blocks until a test sets it (or 10 s pass)
SLOW_STARTED = threading.Semaphore(0)


@registry.register("test-slow", "test detector that waits for SLOW_GATE")
class SlowDetector(Detector):
    def _predict(self, image: np.ndarray) -> Prediction:
        SLOW_STARTED.release()
        SLOW_GATE.wait(10.0)
        return Prediction(np.zeros(image.shape[:2], np.float32), 0.0)


@registry.register("test-broken", "test detector that fails")
class BrokenDetector(Detector):
    def _predict(self, image: np.ndarray) -> Prediction:
        raise RuntimeError("secret internal detail /srv/model.bin")


def encode(image: np.ndarray, ext: str = ".png", **params: int) -> bytes:
    flags = [v for kv in ((getattr(cv2, k), v) for k, v in params.items()) for v in kv]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image[:, :, ::-1]) if image.ndim == 3 else image, flags)
    assert ok
    return buf.tobytes()


def make_forgery(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A copy-move forgery of skimage's astronaut: a 120x120 patch copied elsewhere with added noise.
    Returns (image, bool mask of the pasted region)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    image = data.astronaut().copy()
    src = image[300:420, 330:450].astype(np.float32)
    noisy = np.clip(src + rng.normal(0, 12, src.shape), 0, 255).astype(np.uint8)
    image[60:180, 60:180] = noisy
    mask = np.zeros(image.shape[:2], bool)
    mask[60:180, 60:180] = True
    return image, mask


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@registry.register("test-noweights", "test detector whose trained weights are missing")
class NoWeightsDetector(Detector):
    @classmethod
    def from_pretrained(cls, path=None, device: str = "cpu") -> Detector:
        from manipseg.contract import ContractError

        raise ContractError("no trained weights are bundled for detector 'test-noweights' (looked for /srv/x)")

    def _predict(self, image: np.ndarray) -> Prediction:
        raise AssertionError("never built")


@registry.register("test-gsr-absent", "a network detector whose weights are not bundled")
class AbsentWeightsGSR(GSRDetector):
    arch = "compact"
