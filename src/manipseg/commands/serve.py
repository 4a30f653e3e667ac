"""``manipseg serve``: the web page and HTTP API (needs the ``serve`` extra: ``pip install manipseg[serve]``)."""
from __future__ import annotations

import argparse

HELP = "Run the web page and HTTP API (POST /v1/analyze) on this machine."


def configure(parser: argparse.ArgumentParser) -> None:
    from ..registry import DEFAULT_MODEL

    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"default detector: a registered name or a .safetensors/.yaml file (default: {DEFAULT_MODEL})")
    parser.add_argument("--max-bytes", type=int, default=25 * 1024 * 1024,
                        help="largest upload in bytes (default: 26214400 = 25 MiB)")
    parser.add_argument("--max-pixels", type=int, default=40_000_000,
                        help="largest image in pixels, refuses decompression bombs (default: 40000000)")
    parser.add_argument("--max-concurrent", type=int, default=1,
                        help="analyses run at the same time (default: 1)")
    parser.add_argument("--queue", type=int, default=4,
                        help="requests allowed to wait for a free slot; more get 503 (default: 4)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a request may wait and run before it gets 504 (default: 120)")


def run(args: argparse.Namespace) -> int:
    import logging

    log = logging.getLogger("manipseg.serve")
    if not 1 <= args.port <= 65535:
        log.error("--port must be a TCP port number from 1 to 65535, got %d", args.port)
        return 2
    try:
        import uvicorn

        from ..serve.app import create_app
        from ..serve.inference import Settings
    except ImportError as exc:
        log.error("the server needs extra packages (%s); install them with: pip install 'manipseg[serve]'", exc.name)
        return 2
    try:
        settings = Settings(model=args.model, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
                            max_concurrent=args.max_concurrent, queue=args.queue, timeout=args.timeout)
    except ValueError as exc:
        log.error("invalid option: %s", exc)
        return 2
    from .. import registry

    try:
        detector = registry.load_detector(args.model)
    except (registry.UnknownDetectorError, ImportError, OSError, ValueError, RuntimeError) as exc:
        log.error("cannot load model %r: %s", args.model, exc)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: other machines can reach this server, and it has no authentication; "
                    "put it behind a reverse proxy with access control if the network is not trusted", args.host)
    app = create_app(settings, preload=False, default_detector=detector)
    log.info("manipseg: open http://%s:%d/ in a browser (API schema at /openapi.json)",
             f"[{args.host}]" if ":" in args.host else args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    return 0
