"""The GSR-Net training loop: segment, refine, checkpoint, validate, log; single process or DDP.

One step (paper §3.2-3.3, §4.1):

1. a batch of inputs — generated forgeries (copy-paste M and the other kinds), G(M) for a fraction of the
   copy-pasted ones through the generator hook, and real forgeries when configured — with random flips;
2. forward, two-class softmax cross-entropy on the segmentation and boundary heads, backward;
3. for each refinement pass: M' = T⊙P + M⊙(1−P), K' = K − K⊙P from the boundary P just predicted
   (:mod:`manipseg.train.refine`), forward M' through the same network, loss on K' and boundary(K'),
   backward (only samples with a target T count). Gradients of all passes accumulate; DDP synchronises
   them once, on the last backward;
4. one Adam step (lr 1e-4, weight decay 5e-5 by default).

Runs are reproducible: the data of step ``s`` is a function of ``(seed, s)``, and checkpoints hold the
model, optimizer, scheduler, step and every RNG state, so ``--resume`` continues the same run.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from . import checkpoint as ckpt
from .config import DEFAULTS, resolve_path
from .data import StepSampler, TrainingSet, apply_generator, generated_selection, load_generator
from .engine import Clock, Engine, Plan, Recipe, Result, StepCheckpoints, TrainingError
from .engine import TrainingInterrupted  # noqa: F401  (part of this module's API since before the engine)
from .losses import distillation_loss, gsr_loss
from .refine import refine
from .validate import dct_input, predict_probs, score

log = logging.getLogger("manipseg.train")

CSV_FIELDS = ["step", "loss", "loss_seg", "loss_boundary", "loss_refine", "loss_distill", "lr", "imgs_per_s",
              "val_f1_dataset", "val_mcc_dataset", "val_f1_image", "val_mcc_image", "val_baseline_f1",
              "folder_f1_dataset", "folder_mcc_dataset", "folder_f1_image", "folder_mcc_image",
              "folder_baseline_f1", "gan_total", "gan_bg", "gan_grad", "gan_edge", "gan_adv", "gan_d"]


def _loader_worker_ignores_interrupts(worker_id: int) -> None:
    """Data-loader workers leave Ctrl-C and SIGTERM to the trainer: a job scheduler (or ``kill`` of the
    process group) signals every process of the run, and a worker dying first would crash the trainer with
    "DataLoader worker killed by signal" before it could write its checkpoint. The trainer's exit ends them."""

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


#: sections and keys a resumed run may change (everything else must match the checkpoint's settings)
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.num_workers", "log.", "checkpoint.", "validation.")


def settings_differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "",
                         defaults: dict[str, Any] | None = None) -> list[str]:
    """Dotted keys whose values differ between two configs (nested sections compared key by key). A key the
    saved settings lack counts as its default (``defaults``, the schema :data:`~manipseg.train.config.DEFAULTS`
    at the top level): a setting added to manipseg after the run started, left at its default, changes nothing."""
    if defaults is None:
        defaults = DEFAULTS if not prefix else {}
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = (saved[key] if key in saved else defaults.get(key)), now.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and dotted.count(".") < 1:
            below = defaults.get(key)
            out += settings_differences(a, b, dotted + ".", below if isinstance(below, dict) else {})
        elif a != b:
            out.append(dotted)
    return out


# -- distributed ---------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...).

    Backend: gloo on CPU, nccl on CUDA. Without those variables this is a single process.
    """
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise TrainingError("--ddp needs torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); "
                            "launch with: torchrun --nproc_per_node N -m manipseg.train CONFIG.yaml --ddp")
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


# -- building blocks -----------------------------------------------------------------------------------------
def build_model(cfg: dict[str, Any]) -> torch.nn.Module:
    from ..models.nets import build_network

    m = cfg["model"]
    return build_network(m["arch"], boundary_branch=m["boundary_branch"], guided_residual=m["guided_residual"],
                         dropout=float(m["dropout"]), **(m.get("options") or {}))


def init_from_weights(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Copy the tensors of a weights file into ``model`` where name and shape match (``model.init``).

    Returns ``{"loaded": [...], "new": [...], "skipped": [...]}``: ``new`` are the model's tensors the file
    lacks or has in another shape (they keep their fresh initialisation), ``skipped`` the file's tensors the
    model has no place for. Raises :class:`TrainingError` when nothing matches (wrong file)."""
    from ..models.weights import WeightsError, load_weights

    try:
        tensors, _ = load_weights(path)
    except WeightsError as exc:
        raise TrainingError(f"model.init: {exc}") from None
    own = model.state_dict()
    loaded = [k for k, v in tensors.items() if k in own and own[k].shape == v.shape]
    if not loaded:
        raise TrainingError(f"model.init: {path} has no tensor that fits this architecture")
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(tensors[k])
    new = sorted(k for k in own if k not in set(loaded))
    skipped = sorted(k for k in tensors if k not in own or own[k].shape != tensors[k].shape)
    return {"loaded": sorted(loaded), "new": new, "skipped": skipped}


def load_teacher(cfg: dict[str, Any], device: torch.device) -> torch.nn.Module | None:
    """The frozen teacher network of ``distill.teacher`` (eval mode, no gradients), or None when unset. Its batch
    norms are folded into the convolutions (``fold_batchnorm``: the same maps up to float rounding, 11 % less
    time for the VGG-16 teacher, whose forward pass is three quarters of a distillation step on the CPU).

    A weights file, not data: a relative path is relative to the working folder (as ``model.init``)."""
    from ..models.nets import fold_batchnorm
    from ..models.weights import WeightsError, network_from_weights

    path = cfg["distill"]["teacher"]
    if path is None:
        return None
    path = Path(os.path.expanduser(os.path.expandvars(str(path))))
    try:
        # building it draws initial weights, and so does folding (the SRM stem's plain convolution): leave the
        # run's RNG alone
        with torch.random.fork_rng(devices=[]):
            teacher, _ = network_from_weights(path)
            teacher = fold_batchnorm(teacher.float().eval())
    except (WeightsError, OSError) as exc:
        raise TrainingError(f"distill.teacher: {exc}") from None
    teacher = teacher.to(device)
    if cfg["train"]["channels_last"]:
        teacher = teacher.to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _lr_lambda(schedule: str, warmup: int, steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        scale = 1.0
        if warmup and step < warmup:
            scale = (step + 1) / warmup
        if schedule == "cosine":
            progress = min(1.0, step / max(1, steps))
            scale *= 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))
        return scale
    return f


def synthetic_dataset(cfg: dict[str, Any], sources: list[str], kinds: dict[str, float], length: int,
                      seed: int, size: int | None = None) -> tuple[Dataset, int | None]:
    """The generation engine's dataset and the integer code of its 'splice' kind."""
    from .. import generate

    d = cfg["data"]
    dirs = [str(resolve_path(s, d["root"])) for s in sources]
    missing = [p for p in dirs if not Path(p).is_dir()]
    if missing:
        raise TrainingError(f"photo folder(s) not found: {', '.join(missing)} (data.sources / validation.sources;"
                            f" relative paths are under the data root, set data.root or $MANIPSEG_DATA)")
    names = list(kinds)
    ds = generate.SyntheticDataset(dirs, names, int(size or d["size"]), int(length), int(seed), d["generate"] or None,
                                   kind_weights=[float(kinds[k]) for k in names])
    return ds, (names.index("splice") if "splice" in names else None)


def real_dataset(cfg: dict[str, Any]) -> Dataset | None:
    real = cfg["data"]["real"]
    if not real or real["weight"] <= 0:
        return None
    from .realdata import RealCrops

    return RealCrops(resolve_path(real["path"], cfg["data"]["root"]), real["format"], cfg["data"]["size"])


def _collate_val_generated(cfg: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    v = cfg["validation"]
    n = int(v["generated"])
    if n <= 0:
        return []
    kinds = v["kinds"] or cfg["data"]["kinds"] or {"splice": 1.0}
    if isinstance(kinds, list):
        kinds = {k: 1.0 for k in kinds}
    kinds = {k: w for k, w in kinds.items() if k != "authentic"} or {"splice": 1.0}
    ds, _ = synthetic_dataset(cfg, v["sources"], kinds, n, int(v["seed"]), v["size"])
    out = []
    for i in range(n):
        s = ds[i]
        out.append((s["image"].permute(1, 2, 0).numpy(), s["mask"][0].numpy() > 0.5))
    return out


def _collate_val_folder(cfg: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    v = cfg["validation"]
    if not v["folder"]:
        return []
    from .realdata import load_forgeries

    return load_forgeries(resolve_path(v["folder"], cfg["data"]["root"]), v["format"],
                          max_images=int(v["max_images"]), max_side=int(v["max_side"]))


class Trainer(Recipe):
    """Trains one run: the segmentation recipe of the training :class:`~manipseg.train.engine.Engine`.
    ``model`` and ``train_set`` may be injected (tests, custom data); by default they are built from the
    config. Outputs go to ``run_dir``: ``config.yaml``, ``train.csv``, ``checkpoints/``,
    ``model.safetensors`` (and ``tensorboard/`` when enabled). ``max_minutes``: a time budget (the run
    stops, validates and exports after the first step past it)."""

    def __init__(self, cfg: dict[str, Any], run_dir: str | os.PathLike, device: str = "cpu",
                 model: torch.nn.Module | None = None, train_set: Dataset | None = None,
                 dist: Dist | None = None, export: bool = True, max_minutes: float | None = None) -> None:
        from ..device import resolve_device

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = dist or Dist()
        if self.dist.enabled and str(device) == "cuda":
            device = f"cuda:{self.dist.local_rank}"  # one GPU per rank
        self.device = resolve_device(device)
        self.export_model = export
        self.max_minutes = max_minutes
        if max_minutes is not None and self.dist.enabled:
            raise TrainingError("a time budget (--max-minutes) is not available under --ddp (the ranks could stop "
                                "at different steps); set train.steps instead")
        self._model_override = model
        self._train_set_override = train_set

    # -- setup ---------------------------------------------------------------------------------------------
    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def plan(self) -> Plan:
        t, c, lg = self.cfg["train"], self.cfg["checkpoint"], self.cfg["log"]
        return Plan(run_dir=self.run_dir, steps=int(t["steps"]), images_per_step=int(t["batch_size"]) * self.dist.world,
                    csv_fields=CSV_FIELDS, checkpoints=StepCheckpoints(self.run_dir, int(c["keep"])),
                    log_every=int(t["log_every"]), validate_every=int(self.cfg["validation"]["every"] or 0),
                    checkpoint_every=int(c["every"] or 0), final_validation="after", outputs=("model.safetensors",),
                    main=self.dist.main, progress_bar=bool(lg["progress"]), tensorboard=bool(lg["tensorboard"]))

    def setup(self, checkpoint: dict[str, Any] | None, clock: Clock) -> int:
        t = self.cfg["train"]
        steps = int(t["steps"])
        main = self.dist.main
        # held-out sets first: whatever randomness they use must not shift the training RNG streams
        self._val_generated = _collate_val_generated(self.cfg) if main else []
        self._val_folder = _collate_val_folder(self.cfg) if main else []
        start = self._setup(resume=checkpoint is not None, checkpoint=checkpoint)
        if start > steps:
            raise TrainingError(f"the checkpoint is at step {start}, beyond train.steps={steps}; raise --steps")
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False), encoding="utf-8")
        loader, self._sampler = self._loader(start, steps)
        self._batches = iter(loader)
        self._steps_done = start
        return start

    def _setup(self, resume: bool, checkpoint: dict[str, Any] | None = None) -> int:
        t, d = self.cfg["train"], self.cfg["data"]
        self._seed(int(t["seed"]))
        model = self._model_override if self._model_override is not None else build_model(self.cfg)
        if self.cfg["model"].get("init") and not resume:
            # a weights file, not data: a relative path is relative to the working folder
            init_path = Path(os.path.expanduser(os.path.expandvars(str(self.cfg["model"]["init"]))))
            init = init_from_weights(model, init_path)
            log.info("model.init: %d tensors loaded, %d new, %d skipped", len(init["loaded"]), len(init["new"]),
                     len(init["skipped"]))
        model = model.to(self.device)
        if t["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.gan = None
        if self.cfg["gan"]["enabled"]:
            if self.dist.enabled:
                raise TrainingError("joint GAN training (gan.enabled) runs in one process; pre-train the blender "
                                    "with manipseg train configs/gan/gan_blender.yaml and use it through data.generator under DDP")
            from .gan_joint import JointGan

            self.gan = JointGan(self.cfg["gan"], self.device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(t["schedule"], int(t["warmup"]), int(t["steps"])))
        # every rank starts from the same weights; dropout then differs per rank
        self._seed(int(t["seed"]) + 7919 * self.dist.rank + 1)
        start = 0
        if resume:
            path = ckpt.latest_checkpoint(self.run_dir)
            if path is None:
                raise TrainingError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
            start = self._restore(ckpt.load_checkpoint(path) if checkpoint is None else checkpoint, path)
            log.info("resumed %s at step %d", path, start)
        self.net = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, device_ids=None if self.device.type == "cpu" else [self.device])
        self.generator = load_generator(d["generator"], d["generator_args"]) if d["generated_fraction"] > 0 else None
        self.teacher = load_teacher(self.cfg, self.device)
        if self.gan is not None:
            self.generator = self.gan
        return start

    def _restore(self, state: dict[str, Any], path: Path) -> int:
        saved = state.get("config", {})
        changed = [k for k in settings_differences(saved, self.cfg)
                   if not any(k == c or (c.endswith(".") and k.startswith(c)) for c in RESUMABLE_CHANGES)]
        if changed:
            raise TrainingError(f"{path}: the checkpoint was trained with other settings for {', '.join(changed)}; "
                                "resume with the run's own settings (its config.yaml); only train.steps, logging, "
                                "checkpoint and validation settings may change")
        if state.get("world") != self.dist.world:
            raise TrainingError(f"{path}: saved by {state.get('world')} process(es), resuming with {self.dist.world}: "
                                "the data shards would differ")
        self.load_state_dict(state)
        return int(state["step"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.gan is not None:
            self.gan.load_state_dict(state["gan"])
        ckpt.set_rng_state(state["rng"][self.dist.rank])

    def _loader(self, start: int, stop: int) -> tuple[DataLoader, StepSampler]:
        t, d = self.cfg["train"], self.cfg["data"]
        if self._train_set_override is not None:
            dataset = self._train_set_override
        else:
            synth, splice = (None, None)
            real = real_dataset(self.cfg)
            if d["kinds"] and (real is None or d["real"]["weight"] < 1.0):
                total = int(t["steps"]) * int(t["batch_size"]) * self.dist.world
                synth, splice = synthetic_dataset(self.cfg, d["sources"], d["kinds"], total, int(t["seed"]))
            dataset = TrainingSet(synth, real, d["real"]["weight"] if d["real"] else 0.0, int(t["seed"]),
                                  flip=bool(t["flip"]), splice_code=splice)
        sampler = StepSampler(int(t["batch_size"]), start, stop, self.dist.rank, self.dist.world)
        workers = int(t["num_workers"])
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                            generator=torch.Generator().manual_seed(0),  # never touch the global RNG
                            persistent_workers=False, prefetch_factor=2 if workers else None,
                            worker_init_fn=_loader_worker_ignores_interrupts if workers else None)
        return loader, sampler

    # -- one step ------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        batch = next(self._batches, None)
        if batch is None:
            raise TrainingError(f"the data loader stopped at step {step} before train.steps={self.cfg['train']['steps']}")
        stats = self._step(batch, self._sampler.indices(step))
        self._steps_done = step + 1
        return stats

    def row(self, step: int, history: list[dict[str, float]]) -> dict[str, Any]:
        """The losses of the logged step itself (averaged over the DDP ranks) and the learning rate."""
        return {**self._mean_over_ranks(history[-1]), "lr": self.scheduler.get_last_lr()[0]}

    def _step(self, batch: dict[str, torch.Tensor], indices: list[int]) -> dict[str, float]:
        from ..device import autocast
        from ..models.nets import normalise

        t, lo, r, d = self.cfg["train"], self.cfg["loss"], self.cfg["refine"], self.cfg["data"]
        dev = self.device
        image = batch["image"].to(dev)
        mask = batch["mask"].to(dev)
        boundary = batch["boundary"].to(dev)
        target = batch["target"].to(dev)
        has_target = batch["has_target"].to(dev)
        gan_stats = self.gan.train_step(batch) if self.gan is not None else {}
        if self.generator is not None:
            select = generated_selection(indices, batch["is_splice"], float(d["generated_fraction"]), int(t["seed"]))
            image = apply_generator(self.generator, image, mask, select.to(dev))
        loss_kw = dict(seg_weight=float(lo["seg_weight"]), boundary_weight=float(lo["boundary_weight"]),
                       boundary_class_weights=lo["boundary_class_weights"], seg_class_weights=lo["seg_class_weights"])
        passes = 1 + (int(r["passes"]) if r["enabled"] else 0)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        stats = {"loss": 0.0, "loss_seg": 0.0, "loss_boundary": 0.0, "loss_refine": 0.0}
        if self.teacher is not None:
            stats["loss_distill"] = 0.0
        sample_weight = None
        for p in range(passes):
            last = p == passes - 1
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else self.net.no_sync()
            with sync:
                x = normalise(image.float())
                if t["channels_last"]:
                    x = x.contiguous(memory_format=torch.channels_last)
                dct = dct_input(self.net, image.cpu().numpy(), dev)  # of this pass's (refined) images
                with autocast(dev, enabled=bool(t["bf16"])):
                    out = self.net(x, dct) if dct is not None else self.net(x)
                losses = gsr_loss(out, mask, boundary, sample_weight=sample_weight, **loss_kw)
                if self.teacher is not None and p == 0:  # the teacher's map of the input the student sees
                    with torch.no_grad(), autocast(dev, enabled=bool(t["bf16"])):
                        tdct = dct_input(self.teacher, image.cpu().numpy(), dev)
                        taught = self.teacher(x, tdct) if tdct is not None else self.teacher(x)
                    kd = distillation_loss(out["seg"], taught["seg"], float(self.cfg["distill"]["temperature"]))
                    losses = {**losses, "total": losses["total"] + float(self.cfg["distill"]["weight"]) * kd,
                              "distill": kd}
                weight = 1.0 if p == 0 else float(r["weight"])
                (weight * losses["total"]).backward()
            values = {k: float(v.detach().item()) for k, v in losses.items()}
            stats["loss"] += weight * values["total"]
            if p == 0:
                stats["loss_seg"], stats["loss_boundary"] = values["seg"], values["boundary"]
                if "distill" in values:
                    stats["loss_distill"] = values["distill"]
            else:
                stats["loss_refine"] += values["total"]
            if not last:
                prob = torch.softmax(out["boundary"].detach().float(), dim=1)[:, 1:2]
                ref = refine(image, target, mask, prob, has_target, threshold=float(r["threshold"]),
                             restrict_to_mask=bool(r["restrict_to_mask"]), boundary_width=int(r["boundary_width"]))
                image, mask, boundary = ref.image, ref.mask, ref.boundary
                sample_weight = has_target.float()
        if t["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(t["grad_clip"]))
        self.optimizer.step()
        self.scheduler.step()
        if not math.isfinite(stats["loss"]):
            raise TrainingError(f"the loss became {stats['loss']}; lower train.lr or set train.grad_clip")
        return {**stats, **gan_stats}

    # -- validation, checkpoints, export -------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Validation on rank 0 (the others wait at a barrier)."""
        import torch.distributed as dist

        val = self._validate_main() if self.dist.main else {}
        if self.dist.enabled:
            dist.barrier()
        return val

    def _validate_main(self) -> dict[str, float]:
        t = self.cfg["train"]
        res: dict[str, float] = {}
        for prefix, samples in (("val", self._val_generated), ("folder", self._val_folder)):
            if not samples:
                continue
            probs = predict_probs(self.model, [s[0] for s in samples], self.device, bool(t["bf16"]),
                                  bool(t["channels_last"]))
            for k, v in score(probs, [s[1] for s in samples]).items():
                res[f"{prefix}_{k}"] = v
        return res

    def after_step(self, step: int, validation: dict[str, float] | None) -> None:
        c = self.cfg["checkpoint"]
        if self.dist.main and c.get("export_every") and step % int(c["export_every"]) == 0 \
                and step < int(self.cfg["train"]["steps"]):
            # weights-only snapshots, to choose the step on real data afterwards (benchmarks/bench_real.py)
            self._export({}, step, self.run_dir / "snapshots" / f"model_{step:08d}.safetensors")

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, scheduler, the joint GAN and every rank's RNG state (collective under DDP). With
        joint GAN training, the main process also writes the generator's snapshot of this step."""
        import torch.distributed as dist

        step = self._steps_done
        rng = ckpt.rng_state()
        if self.dist.enabled:
            states: list[Any] = [None] * self.dist.world
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        if not self.dist.main:
            return {}
        state = {"step": step, "world": self.dist.world, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": states, "sampler": {"next_step": step, "batch_size": int(self.cfg["train"]["batch_size"])},
                 "config": self.cfg}
        if self.gan is not None:
            state["gan"] = self.gan.state_dict()
            self.gan.save(self.run_dir / "snapshots" / f"G_{step:08d}.safetensors", {"step": step})
        return state

    def export(self, step: int, validation: dict[str, float]) -> Path | None:
        return self._export(validation, step) if self.export_model else None

    def _export(self, val: dict[str, float], step: int, path: Path | None = None) -> Path:
        from ..models.weights import save_weights

        meta: dict[str, Any] = {"step": step, "config": self.cfg, "validation": val}
        if "val_f1_dataset_threshold" in val:
            meta["threshold"] = val["val_f1_dataset_threshold"]
        arch = getattr(self.model, "arch", self.cfg["model"]["arch"])
        kwargs = getattr(self.model, "arch_kwargs", {})
        if self.gan is not None and path is None:
            self.gan.save(self.run_dir / "generator.safetensors", {"step": step, "config": self.cfg})
        return save_weights(path or self.run_dir / "model.safetensors", self.model, arch, kwargs, meta)

    # -- the run -------------------------------------------------------------------------------------------
    def run(self, resume: bool = False, force: bool = False) -> Result:
        """Train (or continue with ``resume``). A folder that already holds a run is refused unless
        ``resume`` continues it or ``force`` starts over (its checkpoints and weights are removed first).
        Ctrl-C / SIGTERM writes a checkpoint of the last completed step and raises
        :class:`TrainingInterrupted`."""
        return Engine(self, self.max_minutes).run(resume=resume, force=force)

    def _mean_over_ranks(self, stats: dict[str, float]) -> dict[str, float]:
        """Losses averaged over the DDP ranks (for the log); unchanged in a single process."""
        if not self.dist.enabled:
            return stats
        import torch.distributed as dist

        keys = sorted(stats)
        buf = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(buf)
        return {k: float(x) / self.dist.world for k, x in zip(keys, buf)}
