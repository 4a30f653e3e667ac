"""One worker pool for ``predict``, ``evaluate`` and ``generate``: in this process, in N local processes, or
on Ray (a local instance, or a cluster's address to spread the work over several machines).

Every backend runs the same two functions: ``factory(*args)`` builds a worker's state once (a detector, a
generation dataset), then ``task(state, item)`` turns one item into one result. Items are submitted as
results come back (at most ``window`` in flight), so inputs are streamed, never all held in memory, and
results are yielded in input order (``ordered=True``) or as they complete. Worker processes get their share
of the CPU threads (never more threads than cores in total) and ignore Ctrl-C: the driver handles it, so an
interrupted run stops after the items in flight and nothing is written by a worker half-way.

``factory``, ``task``, their arguments, the items and the results must be picklable (module-level
functions, plain data). On a Ray cluster every node must have manipseg installed, and any file a factory
reads (a model's weights) must exist at the same path on every node; items carry their own bytes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import registry
from .machine import cpu_count

#: seconds to wait for Ray workers to start (load their model) before giving up
READY_TIMEOUT = 600.0


class PoolError(RuntimeError):
    """A worker could not be started or died (not a failure of one item: tasks report those themselves)."""


@dataclass(frozen=True)
class PoolSpec:
    """Where the work runs: ``workers`` local processes (1 = in this process), or Ray when ``ray`` is set
    (``ray_address`` None = a local instance started for the run). ``threads`` per worker defaults to the
    CPUs divided among the workers (at least 1)."""

    workers: int = 1
    ray: bool = False
    ray_address: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads per worker must be at least 1, got {self.threads}")

    @property
    def parallel(self) -> bool:
        return self.ray or self.workers > 1

    def threads_per_worker(self, cpus: int | None = None) -> int:
        if self.threads is not None:
            return self.threads
        return max(1, (cpus or cpu_count()) // self.workers)


def set_threads(threads: int) -> None:
    """Limit torch, OpenCV and the BLAS / OpenMP pools of this process to ``threads``."""

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # read by torch and ONNX Runtime sessions created from now on
    import cv2

    cv2.setNumThreads(threads)
    if "torch" in sys.modules:  # torch is imported only by detectors that run it
        sys.modules["torch"].set_num_threads(threads)


def pinned_environment(detector: Any) -> dict[str, str]:
    """Environment variables that make a worker's copy of ``detector`` compute exactly what it computes here:
    this process's bf16 decision and network runtime (both measured per thread count, and a worker has
    fewer threads), so 1 worker, N workers and Ray write the same bytes."""
    env = {}
    for d in (detector, getattr(detector, "artifact", None), getattr(detector, "similarity", None)):
        if d is not None and isinstance(getattr(d, "runtime", None), str):  # a network: what it really runs
            env["MANIPSEG_RUNTIME"] = d.runtime
            env["MANIPSEG_BF16"] = "1" if getattr(d, "use_bf16", False) else "0"
            break
    return env


def absolute_if_file(spec: str) -> str:
    """``spec`` as an absolute path when it names an existing file (a model or calibration file a worker,
    perhaps on another machine, must open), unchanged otherwise (a registered name)."""
    p = Path(spec)
    return str(p.resolve()) if p.is_file() else spec


def worker_detector(model: str, device: str, env: dict[str, str]) -> Any:
    """A worker's copy of the driver's detector: loaded from ``model`` under the driver's pinned decisions
    (``env``, from :func:`pinned_environment`)."""
    os.environ.update(env)

    return registry.load_detector(model, device=device)


# ----- local worker processes ------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init_process(factory: Callable[..., Any], args: tuple, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    set_threads(threads)
    try:
        _STATE["state"] = factory(*args)
    except Exception as exc:  # noqa: BLE001 - reported to the driver with the first task, as a PoolError
        _STATE["error"] = f"{type(exc).__name__}: {exc}"


def _run_in_process(task: Callable[[Any, Any], Any], item: Any) -> Any:
    if "error" in _STATE:
        raise PoolError(f"a worker could not start: {_STATE['error']}")
    return task(_STATE["state"], item)


# ----- Ray actors ------------------------------------------------------------------------------------
class _RayWorker:
    def __init__(self, factory: Callable[..., Any], args: tuple, threads: int) -> None:
        set_threads(threads)
        self.state = factory(*args)

    def run(self, task: Callable[[Any, Any], Any], item: Any) -> Any:
        return task(self.state, item)


class WorkerPool:
    """``with WorkerPool(factory, args, spec) as pool: for result in pool.imap(task, items): ...``"""

    def __init__(self, factory: Callable[..., Any], args: tuple = (), spec: PoolSpec | None = None) -> None:
        self.factory, self.args, self.spec = factory, tuple(args), spec or PoolSpec()
        self._state: Any = None
        self._executor = None
        self._actors: list = []
        self._ray_started = False
        self.size = 1

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> "WorkerPool":
        spec = self.spec
        if spec.ray:
            self._start_ray()
        elif spec.workers > 1:
            self._executor = ProcessPoolExecutor(
                spec.workers, mp_context=mp.get_context("spawn"), initializer=_init_process,
                initargs=(self.factory, self.args, spec.threads_per_worker()))
            self.size = spec.workers
        else:
            self._state = self.factory(*self.args)
        return self

    def _start_ray(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise PoolError("the Ray backend needs Ray: pip install 'manipseg[ray]'") from exc
        spec = self.spec
        if not ray.is_initialized():
            ray.init(address=spec.ray_address, num_cpus=None if spec.ray_address else cpu_count(),
                     include_dashboard=False, log_to_driver=False)
            self._ray_started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = spec.threads or (max(1, cpus // spec.workers) if spec.workers > 1 else 1)
        count = spec.workers if spec.workers > 1 else max(1, cpus // threads)
        if count * threads > cpus:  # actors that can never be scheduled would wait forever
            self.close()
            raise PoolError(f"{count} Ray workers of {threads} CPU(s) each need {count * threads} CPUs but the "
                            f"cluster has {cpus}: use fewer --workers")
        remote = ray.remote(num_cpus=threads)(_RayWorker)
        self._actors = [remote.remote(self.factory, self.args, threads) for _ in range(count)]
        self.size = count
        ready = [a.__ray_ready__.remote() for a in self._actors]
        done, pending = ray.wait(ready, num_returns=len(ready), timeout=READY_TIMEOUT)
        try:
            ray.get(done)  # a worker whose factory failed (model not found on that node...) raises here
        except ray.exceptions.RayActorError as exc:
            self.close()
            raise PoolError(f"a Ray worker could not start: {exc}") from exc
        if pending:
            self.close()
            raise PoolError(f"{len(pending)} of {count} Ray workers did not start within {READY_TIMEOUT:.0f} s "
                            "(CPUs taken by other Ray jobs?): use fewer --workers")

    def __exit__(self, *exc: Any) -> None:
        self.close(cancel=exc[0] is not None)

    def close(self, cancel: bool = False) -> None:
        """Stop the workers; ``cancel`` drops queued items (the ones running finish first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None
        if self._actors:
            import ray

            for a in self._actors:
                ray.kill(a)
            self._actors = []
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    # -- work ---------------------------------------------------------------------------------------
    def imap(self, task: Callable[[Any, Any], Any], items: Iterable[Any], ordered: bool = True,
             window: int | None = None) -> Iterator[Any]:
        """Results of ``task(state, item)`` for every item, with at most ``window`` (default twice the
        workers) items submitted and not yet yielded."""
        window = max(1, window or 2 * self.size)
        if self._executor is not None:
            yield from self._imap_futures(task, items, ordered, window)
        elif self._actors:
            yield from self._imap_ray(task, items, ordered, window)
        else:
            for item in items:
                yield task(self._state, item)

    def _imap_futures(self, task, items, ordered: bool, window: int) -> Iterator[Any]:
        pending: deque = deque()
        it = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(self._executor.submit(_run_in_process, task, item))
                if not pending:
                    return
                if ordered:
                    yield pending.popleft().result()
                else:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in [f for f in pending if f in done]:
                        pending.remove(f)
                        yield f.result()
        except BrokenProcessPool as exc:
            raise PoolError(f"a worker process died ({exc}); if it ran out of memory, use fewer --workers "
                            "or smaller images (--max-pixels)") from exc
        finally:
            for f in pending:
                f.cancel()

    def _imap_ray(self, task, items, ordered: bool, window: int) -> Iterator[Any]:
        import ray

        free = deque(self._actors)
        queued: deque = deque()              # (seq, item) read, waiting for a free actor
        running: dict = {}                   # ref -> (seq, actor)
        done: dict[int, Any] = {}            # seq -> ref finished, not yet yielded (ordered mode)
        it = iter(items)
        exhausted, seq, next_out = False, 0, 0
        while True:
            while not exhausted and len(queued) + len(running) + len(done) < window:
                try:
                    queued.append((seq, next(it)))
                    seq += 1
                except StopIteration:
                    exhausted = True
            while queued and free:
                k, item = queued.popleft()
                actor = free.popleft()
                running[actor.run.remote(task, item)] = (k, actor)
            if ordered and next_out in done:
                yield self._ray_result(done.pop(next_out))
                next_out += 1
                continue
            if not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1)
            k, actor = running.pop(ready[0])
            free.append(actor)
            if ordered:
                done[k] = ready[0]
            else:
                yield self._ray_result(ready[0])

    @staticmethod
    def _ray_result(ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            raise PoolError(f"a Ray worker died: {exc}") from exc
