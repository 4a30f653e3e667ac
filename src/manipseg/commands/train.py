"""``manipseg train CONFIG.yaml``: train a GSR-Net segmenter (segment + refine) from a config file."""
from __future__ import annotations

import argparse

HELP = "train a manipulation segmentation network from a YAML/TOML config (checkpoints, resume, DDP)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config (.yaml, .toml or .json); see configs/ for the paper's ablations")
    p.add_argument("--out", "-o", default=None,
                   help="run directory for checkpoints, logs and model.safetensors (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 (repeatable)")
    p.add_argument("--ddp", action="store_true",
                   help="DistributedDataParallel under torchrun (gloo on CPU, nccl on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    from ..train.config import ConfigError, load_config

    log = logging.getLogger("manipseg.train")
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={int(args.steps)}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from ..device import DeviceError
    from ..train.loop import Dist, Trainer, TrainingError, init_distributed

    if args.threads:
        torch.set_num_threads(int(args.threads))
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    try:
        dist = init_distributed(args.device) if args.ddp else Dist()
        trainer = Trainer(cfg, run_dir, device=args.device, dist=dist)
        result = trainer.run(resume=args.resume)
    except (TrainingError, DeviceError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.ddp and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if dist.main:
        for k, v in result.validation.items():
            log.info("%s = %.4f", k, v)
        if result.model_path:
            print(f"trained {result.step} steps; model: {result.model_path}")
    return 0
