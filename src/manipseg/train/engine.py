"""One training engine for every recipe: the step loop, its log line and CSV, validation, checkpoints,
resume, Ctrl-C / SIGTERM, a time budget and the final export.

A :class:`Recipe` says what one kind of training does (segmentation: :class:`manipseg.train.loop.Trainer`,
GAN pre-training: :class:`manipseg.train.gan_pretrain.GanRun`, faces: :class:`manipseg.faces.train.FaceRecipe`);
the :class:`Engine` runs it::

    start = recipe.setup(checkpoint or None, clock)       # build; restore the checkpoint when resuming
    for s in range(start, plan.steps):
        stats = recipe.step(s)                            # one optimisation step -> its losses
        (every plan.log_every steps, at validations and at the end) a CSV row: recipe.row(...) + validation
        (every plan.validate_every steps / at the end) recipe.validate()
        recipe.after_step(step, validation)               # snapshots, best weights...
        (every plan.checkpoint_every steps / at the end) a checkpoint: recipe.state_dict() + step + RNG
    recipe.export(step, validation)

Checkpoints hold ``recipe.state_dict()`` plus ``step``, ``minutes`` (training time so far, for the time
budget), ``rng`` (Python, numpy and torch RNG states, :func:`manipseg.train.checkpoint.rng_state`, unless the
recipe's state has its own ``rng``, as a DDP run has one per rank) and ``log_pending`` (the stats of the
steps since the last CSV row). They are written with ``torch.save`` and load with ``weights_only=True``,
either as ``checkpoints/step_XXXXXXXX.pt`` (:class:`StepCheckpoints`) or as one file (:class:`SingleCheckpoint`).

Ctrl-C (and SIGTERM, which ``manipseg``'s command line turns into Ctrl-C) writes a checkpoint of the last
completed step and raises :class:`TrainingInterrupted`. With a time budget (``max_minutes``) the run stops
after the first step past it, validates, checkpoints and exports as at its last step.
"""
from __future__ import annotations

import abc
import csv
import io as _io
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..io import atomic_write
from . import checkpoint as ckpt

log = logging.getLogger("manipseg.train")


class TrainingError(RuntimeError):
    """A run that cannot start or continue (bad data, mismatched resume...)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during training; a checkpoint of the last completed step was written."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


# -- checkpoint stores -----------------------------------------------------------------------------------------
class StepCheckpoints:
    """``RUN_DIR/checkpoints/step_XXXXXXXX.pt`` + ``latest.json``, the newest ``keep`` kept (:mod:`.checkpoint`)."""

    def __init__(self, run_dir: Path, keep: int) -> None:
        self.run_dir, self.keep = Path(run_dir), int(keep)
        self.where = self.run_dir / "checkpoints"

    def save(self, step: int, state: dict[str, Any]) -> Path:
        return ckpt.save_checkpoint(self.run_dir, step, state, keep=self.keep)

    def latest(self) -> Path | None:
        return ckpt.latest_checkpoint(self.run_dir)

    def clear(self) -> None:
        shutil.rmtree(self.where, ignore_errors=True)


class SingleCheckpoint:
    """One checkpoint file (e.g. ``RUN_DIR/last.pt``), replaced atomically at every save."""

    def __init__(self, path: Path) -> None:
        self.path = self.where = Path(path)

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        return self.path

    def latest(self) -> Path | None:
        return self.path if self.path.is_file() else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


# -- the recipe interface --------------------------------------------------------------------------------------
@dataclass
class Plan:
    """How the Engine runs a recipe: its schedule and its files (all steps are counted from 1)."""

    run_dir: Path
    steps: int                                # train until this step
    images_per_step: int                      # images one step trains on, all processes together (img/s)
    csv_fields: list[str]                     # columns of the CSV log ("step" first)
    checkpoints: StepCheckpoints | SingleCheckpoint
    csv_name: str = "train.csv"
    csv_float_format: str = "{:.6g}"
    log_every: int = 1                        # a CSV row every N steps (and at validations and the last step)
    validate_every: int = 0                   # 0: only at the end
    checkpoint_every: int = 0                 # 0: only at the end
    #: "in_step": the last validation goes into the last step's row; "after": into a row of its own, after the
    #: last checkpoint (segmentation's train.csv)
    final_validation: str = "in_step"
    loss_key: str = "loss"                    # the stat shown on the log line
    outputs: tuple[str, ...] = ()             # files (in run_dir) that mark a trained run besides checkpoints
    main: bool = True                         # this process writes the files (rank 0 of a DDP run)
    progress_bar: bool = False
    tensorboard: bool = False


class Clock:
    """Training time of a run, over all its sessions, and its budget (``minutes``; None: no budget)."""

    def __init__(self, budget_minutes: float | None = None, minutes_before: float = 0.0) -> None:
        self.budget, self.before = budget_minutes, float(minutes_before)
        self.t0 = time.time()

    def start(self) -> None:
        self.t0 = time.time()

    def minutes(self) -> float:
        return self.before + (time.time() - self.t0) / 60

    def fraction(self) -> float:
        """Share of the budget used (0 without a budget)."""
        return self.minutes() / self.budget if self.budget else 0.0

    def over(self) -> bool:
        return self.budget is not None and self.minutes() > self.budget


class Recipe(abc.ABC):
    """One kind of training, run by :class:`Engine`. A recipe builds its model, data and optimiser in
    :meth:`setup` and trains one step per :meth:`step`; the Engine does the rest (logging, validation
    schedule, checkpoints, resume, interruption, time budget, export). Steps are 0-based in :meth:`step`
    (``step(s)`` trains the ``s + 1``-th step) and 1-based everywhere else (rows, checkpoints)."""

    @abc.abstractmethod
    def plan(self) -> Plan:
        """The schedule and files of this run (called before :meth:`setup`)."""

    @abc.abstractmethod
    def setup(self, checkpoint: dict[str, Any] | None, clock: Clock) -> int:
        """Build the run; with ``checkpoint`` (the latest one, loaded) restore it (:meth:`load_state_dict`, and
        its RNG state at the point of the build where it was taken). Returns the step to start from."""

    @abc.abstractmethod
    def step(self, step: int) -> dict[str, float]:
        """Train step ``step`` (0-based); returns its losses (``plan().loss_key`` among them)."""

    def row(self, step: int, history: list[dict[str, float]]) -> dict[str, Any]:
        """The CSV values of step ``step`` from the stats of the steps since the last row (default: their
        means). Called on every process of a DDP run."""
        return {k: float(np.mean([h[k] for h in history])) for k in history[0]} if history else {}

    def validate(self) -> dict[str, float]:
        """Validation metrics (columns of the CSV); called on every process of a DDP run."""
        return {}

    def after_step(self, step: int, validation: dict[str, float] | None) -> None:
        """After the row of ``step`` is written (``validation``: its metrics, None when not validated)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs to continue the run (tensors, numbers, strings, lists, dicts)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s content (called by :meth:`setup`)."""

    def export(self, step: int, validation: dict[str, float]) -> Path | None:
        """The run's final output (weights), written by the main process; its path or None."""
        return None


@dataclass
class Result:
    step: int
    losses: list[float] = field(default_factory=list)   # plan.loss_key of every step run in this call
    validation: dict[str, float] = field(default_factory=dict)
    model_path: Path | None = None


# -- logs ------------------------------------------------------------------------------------------------------
class CsvLog:
    """Append-only CSV of training metrics; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None, fields: list[str], float_format: str = "{:.6g}") -> None:
        self.path, self.fields, self.float_format = path, list(fields), float_format
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) <= resume_step]
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(buf.getvalue(), encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.fields).writerow(
                {k: (self.float_format.format(v) if isinstance(v, float) else v) for k, v in row.items()
                 if k in self.fields})


class _Progress:
    """A log line with step, loss, speed and ETA: every ``every`` seconds (60) when no progress bar is shown
    (``log.progress: false``, the usual case in a log file), else only the first one (the bar shows the rest)."""

    def __init__(self, start: int, steps: int, images_per_step: int, bar_shown: bool, every: float = 60.0) -> None:
        self.start, self.steps, self.per_step = start, steps, images_per_step
        self.bar_shown, self.every = bar_shown, every
        self.t0 = self.last = time.perf_counter()
        self.first = True

    def update(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        if not (self.first and step - self.start >= 2) and (self.bar_shown or now - self.last < self.every):
            return
        self.first = False
        self.last = now
        rate = (step - self.start) / max(now - self.t0, 1e-9)  # steps per second since this call started
        eta = (self.steps - step) / max(rate, 1e-12)
        log.info("step %d/%d  loss %.4f  %.1f img/s  ETA %s", step, self.steps, loss, rate * self.per_step,
                 _duration(eta))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("log.tensorboard is on but the tensorboard package is not installed "
                    "(pip install tensorboard); logging to the CSV only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


# -- the engine ------------------------------------------------------------------------------------------------
class Engine:
    """Runs a :class:`Recipe` (see the module docstring). ``max_minutes``: the time budget (None: none)."""

    def __init__(self, recipe: Recipe, max_minutes: float | None = None) -> None:
        if max_minutes is not None and not max_minutes > 0:
            raise TrainingError(f"the time budget must be > 0 minutes, got {max_minutes}")
        self.recipe, self.max_minutes = recipe, max_minutes

    def in_use(self, plan: Plan) -> bool:
        """The run folder already holds a run (a checkpoint or one of the recipe's outputs)."""
        return plan.checkpoints.latest() is not None or any((plan.run_dir / o).is_file() for o in plan.outputs)

    def run(self, resume: bool = False, force: bool = False) -> Result:
        """Train (or continue with ``resume``). A folder that already holds a run is refused unless ``resume``
        continues it or ``force`` starts over (its checkpoints and outputs are removed first)."""
        recipe = self.recipe
        plan = recipe.plan()
        if resume and force:
            raise TrainingError("resume continues the run and force starts it over: choose one")
        if not resume and self.in_use(plan):
            if not force:
                raise TrainingError(f"{plan.run_dir} already holds a training run; continue it with --resume, or "
                                    "start it over with --force (its checkpoints and weights are deleted)")
            if plan.main:
                plan.checkpoints.clear()
                for name in plan.outputs:
                    (plan.run_dir / name).unlink(missing_ok=True)
        state = None
        if resume:
            path = plan.checkpoints.latest()
            if path is None:
                raise TrainingError(f"--resume: no checkpoint in {plan.checkpoints.where}")
            state = ckpt.load_checkpoint(path)
        clock = Clock(self.max_minutes, float(state.get("minutes", 0.0)) if state else 0.0)
        start = int(recipe.setup(state, clock))
        steps = plan.steps
        if start > steps:
            raise TrainingError(f"the checkpoint is at step {start}, beyond the run's {steps} steps; raise --steps")
        csvlog = writer = None
        if plan.main:
            plan.run_dir.mkdir(parents=True, exist_ok=True)
            csvlog = CsvLog(plan.run_dir / plan.csv_name, start if resume else None, plan.csv_fields,
                            plan.csv_float_format)
            writer = _tensorboard(plan.run_dir) if plan.tensorboard else None
        pending: list[dict[str, float]] = list(state.get("log_pending", [])) if state else []
        result = Result(step=start)
        bar = tqdm(total=steps, initial=start, disable=not (plan.main and plan.progress_bar), unit="step",
                   dynamic_ncols=True)
        progress = _Progress(start, steps, plan.images_per_step, bar_shown=plan.progress_bar)
        self._done = start
        clock.start()
        try:
            step, validation = self._loop(plan, start, clock, csvlog, writer, bar, progress, pending, result)
        except KeyboardInterrupt:
            bar.close()
            path = self._checkpoint(plan, self._done, clock, self._pending) if self._done > start else None
            raise TrainingInterrupted(self._done, path) from None
        bar.close()
        result.step = step
        if plan.final_validation == "after":
            validation = recipe.validate()
            if plan.main and validation:
                csvlog.write({"step": step, **validation})
                log.info("validation at step %d: %s", step, ", ".join(f"{k}={x:.4f}" for k, x in validation.items()))
        result.validation = validation
        if plan.main:
            result.model_path = recipe.export(step, validation)
            if writer is not None:
                writer.close()
        return result

    def _loop(self, plan: Plan, start: int, clock: Clock, csvlog: CsvLog | None, writer, bar, progress: _Progress,
              pending: list[dict[str, float]], result: Result) -> tuple[int, dict[str, float]]:
        recipe, steps = self.recipe, plan.steps
        tick, done_since = time.perf_counter(), 0
        step, validation = start, {}
        self._pending = pending
        for step_index in range(start, steps):
            stats = recipe.step(step_index)
            step = step_index + 1
            loss = float(stats[plan.loss_key])
            result.losses.append(loss)
            pending.append(stats)
            done_since += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            over_time = clock.over()
            last = step == steps or over_time
            in_step_final = last and plan.final_validation == "in_step"
            validated = (bool(plan.validate_every) and step % plan.validate_every == 0 and step < steps) \
                or in_step_final
            logged = step % plan.log_every == 0 or step == steps or validated or over_time
            val: dict[str, float] | None = None
            if logged:
                row: dict[str, Any] = {"step": step, **recipe.row(step, pending)}
                pending.clear()
                if validated:
                    paused = time.perf_counter()
                    val = recipe.validate()
                    row.update(val)
                    validation = val
                    tick += time.perf_counter() - paused  # throughput counts training time only
                if plan.main:
                    now = time.perf_counter()
                    row["imgs_per_s"] = done_since * plan.images_per_step / max(now - tick, 1e-9)
                    tick, done_since = now, 0
                    csvlog.write(row)
                    if writer is not None:
                        for k, value in row.items():
                            if k != "step" and isinstance(value, (int, float)):
                                writer.add_scalar(k, value, step)
            recipe.after_step(step, val)
            if (plan.checkpoint_every and step % plan.checkpoint_every == 0) or last:
                paused = time.perf_counter()
                self._checkpoint(plan, step, clock, pending)
                tick += time.perf_counter() - paused
            self._done = step
            if plan.main:
                progress.update(step, loss)
            if over_time:
                log.info("time budget of %g min reached at step %d", clock.budget, step)
                break
        return step, validation

    def _checkpoint(self, plan: Plan, step: int, clock: Clock, pending: list[dict[str, float]]) -> Path | None:
        state = {"step": step, "minutes": clock.minutes(), "rng": ckpt.rng_state(),
                 "log_pending": [dict(p) for p in pending], **self.recipe.state_dict()}
        return plan.checkpoints.save(step, state) if plan.main else None
