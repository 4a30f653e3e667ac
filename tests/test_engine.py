"""The one training engine behind the three recipes: the same per-step losses as the loops it replaced
(tests/data/engine_losses.json, recorded with them: see tests/engine_support.py), exact resume after an
interruption, the recipe's CSV columns, the recipe chosen by the config's ``recipe:`` key."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

import engine_support as E
from manipseg.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FIXTURE = json.loads(E.FIXTURE.read_text(encoding="utf-8"))


def _close(got, want):
    """Per-step losses equal to the recorded ones: floats, or dicts of floats per step. Exact on the machine that
    recorded them (rel 1e-6 measured); rel 1e-4 leaves room for another CPU's convolution kernels (summation
    order), while any change of logic (a draw, a loss term, a schedule) moves the losses by far more."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, dict):
            assert g.keys() == w.keys()
            assert [g[k] for k in w] == pytest.approx([w[k] for k in w], rel=1e-4, abs=1e-7)
        else:
            assert g == pytest.approx(w, rel=1e-4, abs=1e-7)


def _header(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def _steps(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def _cut(full, cut, first_checkpoint, files=()):
    """An interrupted copy of run ``full``: only ``first_checkpoint`` and ``files`` (copied as they are)."""
    (cut / first_checkpoint.parent.name).mkdir(parents=True, exist_ok=True)
    shutil.copy(first_checkpoint, cut / first_checkpoint.parent.name / first_checkpoint.name)
    for name in files:
        shutil.copy(full / name, cut / name)


@pytest.fixture(scope="module")
def gan_photos(tmp_path_factory):
    return E.photos_folder(tmp_path_factory.mktemp("gan-photos"))


# -- the losses of the loops before the engine --------------------------------------------------------------
def test_segment_recipe_gives_the_recorded_losses_and_resumes_exactly(tmp_path):
    from manipseg.train.loop import CSV_FIELDS

    full = E.segment_losses(tmp_path / "full")
    _close(full, FIXTURE["segment"])
    assert _header(tmp_path / "full" / "train.csv") == CSV_FIELDS
    first = ckpt.list_checkpoints(tmp_path / "full")[0]          # step 3 of 6
    _cut(tmp_path / "full", tmp_path / "cut", first, ["train.csv"])
    _close(E.segment_losses(tmp_path / "cut", resume=True), FIXTURE["segment"][3:])
    assert _steps(tmp_path / "cut" / "train.csv") == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("role", ["blender", "inpainter"])
def test_gan_recipe_gives_the_recorded_losses_and_resumes_exactly(tmp_path, gan_photos, role):
    from manipseg.train.gan_pretrain import CSV_FIELDS

    want = FIXTURE[f"gan_{role}"]
    _close(E.gan_losses(gan_photos, tmp_path / "full", role), want)
    assert _header(tmp_path / "full" / "train.csv") == CSV_FIELDS
    first = ckpt.list_checkpoints(tmp_path / "full")[0]          # step 2 of 4
    _cut(tmp_path / "full", tmp_path / "cut", first, ["train.csv"])
    _close(E.gan_losses(gan_photos, tmp_path / "cut", role, resume=True), want[2:])
    assert _steps(tmp_path / "cut" / "train.csv") == [1, 2, 3, 4]


def test_faces_recipe_gives_the_recorded_losses_and_resumes_exactly(tmp_path):
    from manipseg.faces import train as T
    from manipseg.models.weights import load_weights

    _close(E.faces_losses(tmp_path / "full"), FIXTURE["faces"])
    assert _header(tmp_path / "full" / "log.csv") == T.LOG_FIELDS
    assert _steps(tmp_path / "full" / "log.csv") == [2, 4, 6]
    # a run interrupted (Ctrl-C) during step 5 checkpoints step 4 and resumes from there
    real = T.make_batch
    calls = []

    def interrupt_at_the_fifth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with E.FacesSpy() as spy:
        T.make_batch = interrupt_at_the_fifth_batch
        try:
            with pytest.raises(KeyboardInterrupt):
                T.train(E.faces_cfg(), tmp_path / "cut")
        finally:
            T.make_batch = real
        assert int(torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"]) == 4
        T.train(E.faces_cfg(), tmp_path / "cut")
    _close(spy.seen, FIXTURE["faces"])          # steps 1-4, then 5-6 after the resume
    assert _steps(tmp_path / "cut" / "log.csv") == [2, 4, 6]
    a, b = load_weights(tmp_path / "cut" / "last.safetensors")[0], load_weights(tmp_path / "full" / "last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- the engine's own behaviour ------------------------------------------------------------------------------
def test_ctrl_c_checkpoints_the_last_completed_step_and_the_run_resumes_exactly(tmp_path, gan_photos):
    """A GAN run interrupted during step 3 (no periodic checkpoint due) writes step 2's checkpoint, with
    the log stats of the steps since the last CSV row, and --resume continues the recorded run."""
    from manipseg.gan.model import BlenderGAN
    from manipseg.train.engine import TrainingInterrupted
    from manipseg.train.gan_pretrain import GanRun

    cfg = E.gan_cfg(gan_photos)
    cfg["train"].update(checkpoint_every=100, log_every=4, val_every=4)
    real, calls = BlenderGAN.step, []

    def interrupt_at_the_third_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    BlenderGAN.step = interrupt_at_the_third_step
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            GanRun(cfg, tmp_path / "run").run()
    finally:
        BlenderGAN.step = real
    assert stop.value.step == 2 and stop.value.checkpoint.name == "step_00000002.pt"
    state = torch.load(stop.value.checkpoint, weights_only=True)
    assert state["step"] == 2 and len(state["log_pending"]) == 2 and "rng" in state and "pair" in state
    with pytest.raises(Exception, match="already holds a training run; continue it with --resume"):
        GanRun(cfg, tmp_path / "run").run()
    seen = []

    def spy(self, *args, **kwargs):
        stats, out = real(self, *args, **kwargs)
        seen.append(dict(stats))
        return stats, out

    BlenderGAN.step = spy
    try:
        assert GanRun(cfg, tmp_path / "run").run(resume=True) == 4
    finally:
        BlenderGAN.step = real
    _close(seen, FIXTURE["gan_blender"][2:])
    with (tmp_path / "run" / "train.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["4"]               # one row (log_every 4), with the last validation
    want = sum(s["g_total"] for s in FIXTURE["gan_blender"]) / 4     # the mean over steps 1-4, over the interruption
    assert float(rows[0]["g_total"]) == pytest.approx(want, rel=1e-4) and rows[0]["val_bg"]


def test_a_time_budget_stops_validates_checkpoints_and_exports(tmp_path):
    from manipseg.train.engine import Clock

    cfg = E.segment_cfg(train={"steps": 6}, checkpoint={"every": 0})
    result = E.segment_trainer(cfg, tmp_path, max_minutes=1e-9).run()   # over budget after the first step
    assert result.step == 1 and result.losses == pytest.approx(FIXTURE["segment"][:1], rel=1e-4)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001.pt"]
    assert result.model_path.is_file() and _steps(tmp_path / "train.csv") == [1]
    assert torch.load(ckpt.list_checkpoints(tmp_path)[0], weights_only=True)["minutes"] > 0
    clock = Clock(10.0, minutes_before=4.0)
    assert 0.4 <= clock.fraction() < 0.5 and not clock.over() and Clock().fraction() == 0.0


# -- one command line ----------------------------------------------------------------------------------------
def test_an_unknown_recipe_is_an_error_naming_the_closest(tmp_path, capsys):
    from manipseg.cli import main

    for wrong, right in (("segmnt", "segment"), ("fces", "faces"), ("gna", "gan")):
        path = tmp_path / f"{wrong}.yaml"
        path.write_text(f"recipe: {wrong}\ntrain: {{steps: 1}}\n")
        assert main(["train", str(path), "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err
        assert f"unknown recipe {wrong!r}. Did you mean {right!r}?" in err and str(path) in err
    assert not (tmp_path / "never").exists()


def _gan_yaml(tmp_path, photos):
    path = tmp_path / "gan.yaml"
    path.write_text(f"""recipe: gan
role: blender
data: {{root: "{photos}", sources: ["{photos}"], size: 32, val_sources: ["{photos}"], val_count: 2}}
model: {{generator: {{width: 4, depth: 3, max_width: 16}}, discriminator: {{width: 4}}}}
train: {{steps: 2, batch_size: 2, bf16: false, num_workers: 0, threads: 1, log_every: 1, val_every: 2,
         snapshot_every: 2, checkpoint_every: 2}}
""")
    return path


def test_manipseg_train_runs_the_gan_recipe_and_the_old_entry_point_says_where_it_went(tmp_path, gan_photos, capsys):
    from manipseg.cli import main
    from manipseg.gan.__main__ import main as gan_main
    from manipseg.train.gan_pretrain import CSV_FIELDS

    cfg = _gan_yaml(tmp_path, gan_photos)
    assert main(["train", str(cfg), "--out", str(tmp_path / "new")]) == 0
    assert "generator.safetensors" in capsys.readouterr().out
    assert _header(tmp_path / "new" / "train.csv") == CSV_FIELDS and (tmp_path / "new" / "generator.safetensors").is_file()
    assert main(["train", str(cfg), "--out", str(tmp_path / "new"), "--resume", "--steps", "3"]) == 0
    assert _steps(tmp_path / "new" / "train.csv") == [1, 2, 3]
    assert main(["train", str(cfg), "--out", str(tmp_path / "new"), "--ddp"]) == 2
    assert "--ddp trains segmentation networks only" in capsys.readouterr().err

    plain = tmp_path / "plain.yaml"   # a GAN config of before (no recipe: line) still works the old way
    plain.write_text(cfg.read_text().replace("recipe: gan\n", ""))
    assert gan_main(["train", str(plain), "--out", str(tmp_path / "old")]) == 0
    err = capsys.readouterr().err
    assert f"python -m manipseg.gan train is deprecated: use manipseg train {plain}" in err
    assert _steps(tmp_path / "old" / "train.csv") == [1, 2]
    with (tmp_path / "old" / "train.csv").open() as a, (tmp_path / "new" / "train.csv").open() as b:
        drop = lambda rows: [{k: v for k, v in r.items() if k != "imgs_per_s"} for r in rows]  # noqa: E731
        assert drop(csv.DictReader(a)) == drop(csv.DictReader(b))[:2]    # the same run


def test_manipseg_train_runs_the_faces_recipe_with_a_time_budget_and_init(tmp_path, capsys):
    from manipseg.cli import main
    from manipseg.faces import train as T

    path = tmp_path / "faces.yaml"
    path.write_text("recipe: faces\npairs_per_batch: 2\nsteps: 6\neval_every: 2\nbf16: false\nthreads: 1\nwarmup: 1\n"
                    "p_paste: 0.5\nmodel: {size: 64, widths: [8, 8, 8, 8], blocks: [1, 1, 1, 1]}\n")
    run = tmp_path / "run"
    with E.FacesSpy() as spy:
        assert main(["train", str(path), "--out", str(run), "--max-minutes", "600"]) == 0
        _close(spy.seen, FIXTURE["faces"])   # a budget far away: lr_at's share of it stays ~0
        assert f"model: {run / 'best.safetensors'}" in capsys.readouterr().out
        assert _header(run / "log.csv") == T.LOG_FIELDS and _steps(run / "log.csv") == [2, 4, 6]
        assert main(["train", str(path), "--out", str(run)]) == 2     # a used run folder: resume or force
        assert "already holds a training run" in capsys.readouterr().err
        assert main(["train", str(path), "--out", str(run), "--resume"]) == 0   # at its last step already
        assert len(spy.seen) == 6 and _steps(run / "log.csv") == [2, 4, 6]
        spy.seen.clear()
        assert main(["train", str(path), "--out", str(tmp_path / "tuned"), "--init", str(run / "last.safetensors"),
                     "--steps", "2"]) == 0
        assert len(spy.seen) == 2 and spy.seen[0]["total"] != pytest.approx(FIXTURE["faces"][0]["total"], rel=1e-3)
        assert T.main(["--config", str(path), "--run-dir", str(tmp_path / "old"), "--set", "steps=2"]) == 0
        err = capsys.readouterr().err
        assert f"python -m manipseg.faces.train is deprecated: use manipseg train {path} --out {tmp_path / 'old'}" in err
        _close(spy.seen[2:], FIXTURE["faces"][:2])


def test_a_run_started_before_a_config_section_existed_still_resumes(tmp_path):
    """training/real-long was started before the distill: section: its config.yaml and checkpoints lack it. A
    missing setting counts as its default, so such a run resumes (and a changed one is still refused)."""
    import yaml

    from manipseg.commands.train import resumed_config
    from manipseg.train.config import ConfigError
    from manipseg.train.loop import TrainingError

    cfg = E.segment_cfg(train={"steps": 3})
    E.segment_trainer(cfg, tmp_path, export=False).run()
    path = ckpt.list_checkpoints(tmp_path)[-1]
    state = torch.load(path, weights_only=True)
    del state["config"]["distill"]
    torch.save(state, path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["distill"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    longer = E.segment_cfg(train={"steps": 4})
    assert resumed_config(tmp_path, longer, ["train.steps=4"])["distill"] == longer["distill"]
    assert len(E.segment_trainer(longer, tmp_path, export=False).run(resume=True).losses) == 1
    taught = E.segment_cfg(train={"steps": 5}, distill={"teacher": "t.safetensors"})
    with pytest.raises(ConfigError, match="other settings for distill"):
        resumed_config(tmp_path, taught, [])
    with pytest.raises(TrainingError, match="other settings for distill"):
        E.segment_trainer(taught, tmp_path, export=False).run(resume=True)
