"""``manipseg train CONFIG.yaml``: train what the config's ``recipe:`` names (``segment``, the default: a GSR-Net
segmenter; ``gan``: the GAN blender / inpainter alone; ``faces``: the face classifier), with one engine
(:mod:`manipseg.train.engine`): checkpoints, ``--resume``, Ctrl-C / SIGTERM, ``--max-minutes``."""
from __future__ import annotations

import argparse

HELP = "train a segmentation network, the GAN blender/inpainter or the face classifier from a config (recipe:)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training config (.yaml, .toml or .json); its top-level 'recipe:' (segment, gan, "
                                  "faces; default segment) says what it trains; see configs/README.md")
    p.add_argument("--out", "-o", default=None,
                   help="run directory for checkpoints, logs and weights (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint, with the run's own settings "
                        "(segment: its config.yaml, --set values included); --set may still change steps, logging, "
                        "checkpoint and validation settings")
    p.add_argument("--force", action="store_true",
                   help="start over in an --out that already holds a run (its checkpoints and weights are deleted)")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps (train.steps; faces: steps)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 (repeatable)")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these weights: segment: model.init (tensors of matching name and shape); "
                        "faces: fine-tuning (fresh optimiser and schedule)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training time budget: the run stops after the first step past it, then validates and "
                        "exports (faces: the learning rate also decays over it)")
    p.add_argument("--ddp", action="store_true",
                   help="segment: DistributedDataParallel under torchrun (gloo on CPU, nccl on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")


def run(args: argparse.Namespace, recipe: str | None = None) -> int:
    """Run ``manipseg train``; ``recipe`` forces the recipe (the old entry points), which the config may
    then only confirm."""
    import sys
    from pathlib import Path

    from ..train.config import ConfigError, apply_overrides, load_raw, recipe_of

    if args.resume and args.force:
        print("error: --resume continues the run and --force starts it over: choose one", file=sys.stderr)
        return 2
    if args.max_minutes is not None and not args.max_minutes > 0:
        print(f"error: --max-minutes must be > 0, got {args.max_minutes}", file=sys.stderr)
        return 2
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    try:
        named = recipe_of(apply_overrides(load_raw(args.config), list(args.overrides)), args.config)
        if recipe is not None and named != recipe and named != "segment":
            raise ConfigError(f"{args.config}: a config of recipe {named!r}; train it with: manipseg train {args.config}")
        recipe = recipe or named
        if recipe != "segment" and args.ddp:
            raise ConfigError(f"--ddp trains segmentation networks only; {args.config} is a {recipe!r} config")
        if recipe == "gan" and args.init:
            raise ConfigError("--init: the gan recipe starts from fresh weights (a pre-trained blender can start the "
                              "joint G of a segment run: gan.init)")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return {"segment": _segment, "gan": _gan, "faces": _faces}[recipe](args, run_dir)


def _report(args, run_dir, body) -> int:
    """Run ``body()`` (it trains and prints its result) and turn the training errors into exit codes."""
    import sys

    from ..device import DeviceError
    from ..train.config import ConfigError
    from ..train.engine import TrainingError, TrainingInterrupted

    try:
        body()
    except TrainingInterrupted as stop:
        where = f"checkpoint {stop.checkpoint}" if stop.checkpoint else "no checkpoint (no step completed)"
        print(f"interrupted at step {stop.step}; {where}; continue with: manipseg train {args.config} --out {run_dir} "
              "--resume", file=sys.stderr)
        return 130
    except (TrainingError, DeviceError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _segment(args: argparse.Namespace, run_dir) -> int:
    import sys

    from ..train.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={int(args.steps)}")
    if args.init is not None:
        overrides.append(f"model.init={args.init}")
    try:
        cfg = load_config(args.config, overrides)
        if args.resume:
            cfg = resumed_config(run_dir, cfg, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from ..train.loop import Dist, Trainer, init_distributed

    if args.threads:
        torch.set_num_threads(int(args.threads))
    def body() -> None:
        dist = init_distributed(args.device) if args.ddp else Dist()
        trainer = Trainer(cfg, run_dir, device=args.device, dist=dist, max_minutes=args.max_minutes)
        result = trainer.run(resume=args.resume, force=args.force)
        if dist.main and result.model_path:
            print(f"trained {result.step} steps; model: {result.model_path}")

    try:
        return _report(args, run_dir, body)
    finally:
        if args.ddp and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _gan(args: argparse.Namespace, run_dir) -> int:
    import torch

    from ..train.gan_pretrain import GanRun, load_config

    def body() -> None:
        overrides = list(args.overrides) + ([f"train.steps={int(args.steps)}"] if args.steps is not None else [])
        cfg = load_config(args.config, overrides)
        if args.threads:
            torch.set_num_threads(int(args.threads))
        step = GanRun(cfg, run_dir, args.device, max_minutes=args.max_minutes).run(resume=args.resume, force=args.force)
        print(f"trained to step {step}; generator: {run_dir / 'generator.safetensors'}")

    return _report(args, run_dir, body)


def _faces(args: argparse.Namespace, run_dir) -> int:
    from pathlib import Path

    from ..train.config import ConfigError
    from ..train.engine import Engine

    def body() -> None:
        from ..faces.train import FaceRecipe, TrainConfig

        if str(args.device) != "cpu":
            raise ConfigError(f"--device {args.device}: the faces recipe trains on the CPU only (--device cpu)")
        overrides = list(args.overrides) + ([f"steps={int(args.steps)}"] if args.steps is not None else [])
        cfg = TrainConfig.load(Path(args.config), overrides)
        if args.threads:
            cfg.threads = int(args.threads)
        recipe = FaceRecipe(cfg, run_dir, Path(args.init) if args.init else None)
        result = Engine(recipe, args.max_minutes).run(resume=args.resume, force=args.force)
        print(f"trained {result.step} steps; model: {result.model_path}")

    return _report(args, run_dir, body)


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
