"""``manipseg train CONFIG.yaml``: train a GSR-Net segmenter (segment + refine) from a config file."""
from __future__ import annotations

import argparse

HELP = "train a manipulation segmentation network from a YAML/TOML config (checkpoints, resume, DDP)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config (.yaml, .toml or .json); see configs/ for the paper's ablations")
    p.add_argument("--out", "-o", default=None,
                   help="run directory for checkpoints, logs and model.safetensors (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint, with the run's own settings "
                        "(its config.yaml, --set values included); --set may still change steps, logging, "
                        "checkpoint and validation settings")
    p.add_argument("--force", action="store_true",
                   help="start over in an --out that already holds a run (its checkpoints and weights are deleted)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 (repeatable)")
    p.add_argument("--ddp", action="store_true",
                   help="DistributedDataParallel under torchrun (gloo on CPU, nccl on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..train.config import ConfigError, load_config

    if args.resume and args.force:
        print("error: --resume continues the run and --force starts it over: choose one", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={int(args.steps)}")
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    try:
        cfg = load_config(args.config, overrides)
        if args.resume:
            cfg = resumed_config(run_dir, cfg, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from ..device import DeviceError
    from ..train.loop import Dist, Trainer, TrainingError, TrainingInterrupted, init_distributed

    if args.threads:
        torch.set_num_threads(int(args.threads))
    try:
        dist = init_distributed(args.device) if args.ddp else Dist()
        trainer = Trainer(cfg, run_dir, device=args.device, dist=dist)
        result = trainer.run(resume=args.resume, force=args.force)
    except TrainingInterrupted as stop:
        where = f"checkpoint {stop.checkpoint}" if stop.checkpoint else "no checkpoint (no step completed)"
        print(f"interrupted at step {stop.step}; {where}; continue with: manipseg train {args.config} --out {run_dir} "
              "--resume", file=sys.stderr)
        return 130
    except (TrainingError, DeviceError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.ddp and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if dist.main and result.model_path:
        print(f"trained {result.step} steps; model: {result.model_path}")
    return 0


def resumed_config(run_dir, cfg: dict, overrides: list[str]) -> dict:
    """The settings a resumed run continues with: the run's own ``config.yaml`` (which holds the ``--set``
    values of its start) with this call's overrides on top. The config file named now must describe the
    same run: a difference outside the keys a resume may change is an error naming those keys."""
    import yaml

    from ..train.config import ConfigError, apply_overrides, validate
    from ..train.loop import RESUMABLE_CHANGES, settings_differences

    path = run_dir / "config.yaml"
    if not path.is_file():
        return cfg  # the loop reports the missing checkpoint
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the run's settings: {exc}") from None

    def may_change(key: str) -> bool:
        return any(key == c or (c.endswith(".") and key.startswith(c)) for c in RESUMABLE_CHANGES)

    given = {o.partition("=")[0].strip() for o in overrides}
    differ = [k for k in settings_differences(saved, cfg) if not may_change(k) and k not in given]
    if differ:
        raise ConfigError(f"{path.parent}: the run was started with other settings for {', '.join(differ)} than "
                          "the config given now; resume with the config it was started with")
    bad = sorted(k for k in given if not may_change(k) and k.count(".") >= 1)
    if bad:
        raise ConfigError(f"--set {', '.join(bad)}: a resumed run cannot change this (only train.steps, logging, "
                          "checkpoint and validation settings); start a new run with --out elsewhere")
    return validate(apply_overrides(saved, overrides), origin=str(path))
