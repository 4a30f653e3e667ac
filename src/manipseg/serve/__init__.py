"""The web page and HTTP API of manipseg (``manipseg serve``; needs ``pip install 'manipseg[serve]'``).

``create_app(Settings(...))`` builds the FastAPI application:

- ``GET /``: the page (static files in ``static/``, no CDN): drop a photo, see heatmap, mask and score.
- ``POST /v1/analyze``: multipart ``image`` (+ ``model``, ``threshold``, ``images``) -> JSON with the
  score, a plain-words reading, size, timings and PNG data URLs (probability map, mask, overlay).
- ``GET /v1/models``, ``GET /v1/info``, ``GET /healthz``; the OpenAPI schema at ``/openapi.json``.

Uploads are read in memory with a byte cap, identified by content, decoded under a pixel cap, and
analysed on a bounded thread pool with a bounded queue and a time-out. Errors are JSON
``{"error": {"code", "message"}}`` with the stable codes of :data:`errors.ERROR_CODES`.
"""
