"""Latency of one ``POST /v1/analyze`` call against a real ``manipseg serve`` process.

    python benchmarks/bench_serve.py                         # 2-megapixel JPEG, detector noi
    python benchmarks/bench_serve.py --model ela --megapixels 12 --repeats 3
    python benchmarks/bench_serve.py --image photo.jpg

Starts ``python -m manipseg serve`` on a free loopback port, sends one warm-up request, then times
``--repeats`` requests from the client side (upload, decode, analysis, PNG encoding, JSON, download)
and prints the median with the server's own breakdown, for the default PNGs (probability map, mask, overlay), for all four
(``images=all``, adds the RGBA heatmap) and for none (``images=none``: the cost of analysis alone).
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np


def make_jpeg(megapixels: float, seed: int = 0) -> bytes:
    """skimage's astronaut resized to ~``megapixels`` (4:3) with mild noise, as a quality-90 JPEG."""
    from skimage import data

    width = int(round(np.sqrt(megapixels * 1e6 * 4 / 3)))
    height = int(round(width * 3 / 4))
    image = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    image += np.random.default_rng(seed).normal(0.0, 2.0, image.shape).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8)[:, :, ::-1],
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="noi")
    ap.add_argument("--megapixels", type=float, default=2.0)
    ap.add_argument("--image", type=Path, help="time this file instead of a generated photo")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    data = args.image.read_bytes() if args.image else make_jpeg(args.megapixels)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "manipseg", "serve", "--port", str(port), "--model", args.model],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(server.stderr.read() if server.stderr else "", file=sys.stderr)
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=300) as client:
            for images in ("default", "all", "none"):  # default = prob, mask, overlay (what the page uses)
                files = {"image": ("bench.jpg", data, "image/jpeg")}
                form = {} if images == "default" else {"images": images}
                client.post("/v1/analyze", files=files, data=form)  # warm-up
                walls, server_side, last = [], [], None
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    resp = client.post("/v1/analyze", files=files, data=form)
                    walls.append(time.perf_counter() - t)
                    resp.raise_for_status()
                    last = resp.json()
                    server_side.append(last["seconds"])
                assert last is not None
                print(f"{args.model} {last['width']}x{last['height']} ({last['width'] * last['height'] / 1e6:.2f} MP, "
                      f"upload {len(data) / 1e6:.2f} MB) images={images}: "
                      f"client {statistics.median(walls):.3f} s median of {args.repeats} "
                      f"(min {min(walls):.3f}), server {statistics.median(server_side):.3f} s "
                      f"[decode {last['timings']['decode']:.3f}, predict {last['timings']['predict']:.3f}, "
                      f"encode {last['timings']['encode']:.3f}], response {len(resp.content) / 1e6:.2f} MB")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
