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
    """Per-step losses equal to the recorded ones (rel 1e-6): floats, or dicts of floats per step."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, dict):
            assert g.keys() == w.keys()
            assert [g[k] for k in w] == pytest.approx([w[k] for k in w], rel=1e-6, abs=1e-9)
        else:
            assert g == pytest.approx(w, rel=1e-6, abs=1e-9)


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
