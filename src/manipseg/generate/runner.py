"""Write a generated dataset to disk, in one process, a local process pool, or on Ray.

Layout of ``out``::

    images/<id>.png       the forgery M (PNG: no compression beyond what the post-processing drew)
    masks/<id>.png        K, 0 / 255
    boundaries/<id>.png   boundary of K, 0 / 255
    authentic/<id>.png    the authentic target T at the same geometry (every kind has one)
    sources/<id>.png      the aligned source S (only with ``save_sources``, kinds that have one)
    manifest.jsonl        one JSON record per sample, in index order
    config.json           everything needed to regenerate the same bytes

Workers only render (generate and PNG-encode) and return bytes; the driver writes every file
atomically, so the local and Ray backends produce byte-identical folders.
"""
from __future__ import annotations

import json
import logging
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..io import atomic_write, load_image, save_png
from ..parallel import PoolSpec, WorkerPool
from .config import GenConfig

log = logging.getLogger(__name__)


@dataclass
class GenerateSpec:
    """What to generate: everything that determines the output bytes."""

    sources: list[str]
    kinds: list[str]
    n: int
    size: int = 256
    seed: int = 0
    config: dict = field(default_factory=dict)
    save_sources: bool = False
    generator: str | None = None  # trained GAN blender (.safetensors) for the 'gan' kind
    inpainter: str | None = None  # trained GAN inpainter for the 'inpaint-gan' kind

    def dataset(self):
        from .dataset import SyntheticDataset

        if {"gan", "inpaint-gan"} & set(self.kinds):
            from .learned import LearnedDataset

            return LearnedDataset(self.sources, self.kinds, size=self.size, length=self.n, seed=self.seed,
                                  config=GenConfig.from_dict(self.config), generator=self.generator,
                                  inpainter=self.inpainter)
        return SyntheticDataset(self.sources, self.kinds, size=self.size, length=self.n, seed=self.seed,
                                config=GenConfig.from_dict(self.config))


@dataclass
class Rendered:
    index: int
    record: dict | None
    files: dict[str, bytes]
    error: str | None = None


def sample_id(index: int) -> str:
    return f"{index:07d}"


def _png(arr: np.ndarray) -> bytes:
    import cv2

    a = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else np.ascontiguousarray(arr)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _jsonable(meta: dict) -> dict:
    return json.loads(json.dumps(meta, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def render_one(ds, index: int, save_sources: bool) -> Rendered:
    """Generate sample ``index`` of ``ds`` and encode its files; errors are returned, not raised."""
    try:
        s = ds.sample(index)
    except Exception as exc:  # noqa: BLE001 - a batch job reports a failed sample and goes on
        log.debug("sample %d failed:\n%s", index, traceback.format_exc())
        return Rendered(index, None, {}, f"{type(exc).__name__}: {exc}")
    sid = sample_id(index)
    files = {f"images/{sid}.png": _png(s.image),
             f"masks/{sid}.png": _png(s.mask.astype(np.uint8) * 255),
             f"boundaries/{sid}.png": _png(s.boundary.astype(np.uint8) * 255)}
    rec = {"id": sid, "index": index, "kind": s.meta["kind"], "image": f"images/{sid}.png",
           "mask": f"masks/{sid}.png", "boundary": f"boundaries/{sid}.png", "authentic": None, "source": None,
           "mask_fraction": round(float(s.mask.mean()), 6)}
    if s.target is not None:
        files[f"authentic/{sid}.png"] = _png(s.target)
        rec["authentic"] = f"authentic/{sid}.png"
    if save_sources and s.source is not None:
        files[f"sources/{sid}.png"] = _png(s.source)
        rec["source"] = f"sources/{sid}.png"
    rec["meta"] = _jsonable(s.meta)
    return Rendered(index, rec, files)


# ----- backends (manipseg.parallel: in this process, worker processes, or Ray) -------------------------
def _dataset_state(spec: GenerateSpec) -> tuple:
    """A worker's state: the dataset built once, so its decoded-image cache stays warm."""
    return spec.dataset(), spec.save_sources


def _render_chunk(state: tuple, indices: list[int]) -> list[Rendered]:
    ds, save_sources = state
    return [render_one(ds, i, save_sources) for i in indices]


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


def iter_pool(spec: GenerateSpec, pool: PoolSpec | None = None, chunk: int = 8) -> Iterator[Rendered]:
    """Rendered samples, in index order, rendered where ``pool`` says (one thread per worker: generation is
    spread over processes, not threads)."""
    pool = pool or PoolSpec()
    if pool.parallel and pool.threads is None:
        pool = replace(pool, threads=1)
    with WorkerPool(_dataset_state, (spec,), pool) as workers:
        for results in workers.imap(_render_chunk, _chunks(spec.n, chunk)):
            yield from results


def iter_local(spec: GenerateSpec, workers: int = 1, chunk: int = 8) -> Iterator[Rendered]:
    """Rendered samples, in index order; ``workers`` > 1 uses spawned worker processes."""
    yield from iter_pool(spec, PoolSpec(workers=workers), chunk)


def iter_ray(spec: GenerateSpec, address: str | None = None, chunk: int = 16,
             actors: int | None = None) -> Iterator[Rendered]:
    """Rendered samples from Ray actors (``address`` None starts a local instance; ``actors`` defaults to one
    per CPU of the cluster). Source folders must be readable at the same paths on every Ray node."""
    yield from iter_pool(spec, PoolSpec(workers=actors or 1, ray=True, ray_address=address), chunk)


# ----- driver --------------------------------------------------------------------------------------
def write_dataset(spec: GenerateSpec, out: str | Path, results: Iterable[Rendered],
                  progress: Callable[[int], None] | None = None) -> tuple[list[dict], list[tuple[int, str]]]:
    """Write every rendered sample's files atomically, then ``manifest.jsonl`` and ``config.json``.

    Returns (records in index order, failures as (index, message))."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[int, dict] = {}
    failures: list[tuple[int, str]] = []
    for r in results:
        if r.error is not None:
            failures.append((r.index, r.error))
            log.warning("sample %d skipped: %s", r.index, r.error)
        else:
            for rel, data in r.files.items():
                atomic_write(out / rel, lambda tmp, d=data: tmp.write_bytes(d))
            records[r.index] = r.record  # type: ignore[assignment]
        if progress:
            progress(1)
    ordered = [records[i] for i in sorted(records)]
    text = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in ordered)
    atomic_write(out / "manifest.jsonl", lambda tmp: tmp.write_text(text))
    cfg = json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n"
    atomic_write(out / "config.json", lambda tmp: tmp.write_text(cfg))
    return ordered, sorted(failures)


def write_preview(out: str | Path, records: list[dict], count: int = 16, cell: int = 160) -> Path | None:
    """Contact sheet ``preview.png``: one row per sample (forgery / mask / boundary / authentic target)."""
    import cv2

    from ..visualize import grid

    out = Path(out)
    rows = []
    for rec in records[:count]:
        img = load_image(out / rec["image"]).copy()
        mask = cv2.imread(str(out / rec["mask"]), cv2.IMREAD_GRAYSCALE)
        bnd = cv2.imread(str(out / rec["boundary"]), cv2.IMREAD_GRAYSCALE)
        row = [img, mask, bnd]
        if rec.get("authentic"):
            row.append(load_image(out / rec["authentic"]))
        label = f"{rec['id']} {rec['kind']}"
        cv2.putText(row[0], label, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(row[0], label, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        rows.append(row)
    if not rows:
        return None
    return save_png(out / "preview.png", grid(rows, cell=cell))
