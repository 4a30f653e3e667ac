"""What several commands do the same way: report a bad output folder or an unloadable detector in one line."""
from __future__ import annotations

import sys
from pathlib import Path


def out_dir_or_none(path: str) -> Path | None:
    """:func:`manipseg.io.prepare_out_dir`, or None after printing the one-line error (the caller exits 2)."""
    from ..io import OutputDirError, prepare_out_dir

    try:
        return prepare_out_dir(path)
    except OutputDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def detector_or_none(name: str, device: str):
    """:func:`manipseg.registry.load_detector`, or None after printing the one-line error (exit 2)."""
    from .. import registry

    try:
        return registry.load_detector(name, device=device)
    except (registry.UnknownDetectorError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def add_pool_arguments(p) -> None:
    """``--workers N``, ``--ray`` and ``--ray-address ADDRESS``: where the work runs (:mod:`manipseg.parallel`)."""
    p.add_argument("--workers", "-j", type=int, default=1, metavar="N",
                   help="worker processes on this machine, each with its share of the CPU threads (default 1: "
                        "this process); with --ray, the number of Ray workers (default one per CPU)")
    p.add_argument("--ray", action="store_true",
                   help="run the workers on Ray (a local instance unless --ray-address); needs "
                        "pip install 'manipseg[ray]'")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="the Ray cluster to run on (implies --ray), e.g. auto on a cluster node, or ray://head:10001")


def pool_or_none(args):
    """The :class:`manipseg.parallel.PoolSpec` of ``--workers`` / ``--ray``, or None after printing why not."""
    import importlib.util

    from ..parallel import PoolSpec

    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return None
    use_ray = bool(args.ray or args.ray_address)
    if use_ray and importlib.util.find_spec("ray") is None:
        print("error: --ray needs Ray: pip install 'manipseg[ray]'", file=sys.stderr)
        return None
    return PoolSpec(workers=args.workers, ray=use_ray, ray_address=args.ray_address or None)
