"""Training loop: losses, the G(M) hook, checkpoints, exact resume, CSV log and the exported model."""
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manipseg.train import checkpoint as ckpt
from manipseg.train.config import validate
from manipseg.train.data import StepSampler, TrainingSet, apply_generator, generated_selection, load_generator
from manipseg.train.losses import gsr_loss, two_class_ce
from manipseg.train.loop import Trainer, TrainingError

SIZE = 32
TINY = {"width": 4, "head_channels": 4, "boundary_channels": 4, "aspp_rates": [1, 2]}


class Squares(torch.utils.data.Dataset):
    """Deterministic toy forgeries: a smooth square of S pasted onto a noisy target T (engine item format)."""

    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        from manipseg.postprocess import boundary_of

        rng = np.random.default_rng(i)
        t = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
        k = np.zeros((SIZE, SIZE), bool)
        y, x, s = *rng.integers(2, SIZE // 2, 2), int(rng.integers(6, SIZE // 2))
        k[y:y + s, x:x + s] = True
        m = t.copy()
        m[k] = rng.integers(60, 200, 3).astype(np.uint8)
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
        return {"image": chw(m), "mask": torch.from_numpy(k[None].astype(np.float32)),
                "boundary": torch.from_numpy(boundary_of(k)[None].astype(np.float32)),
                "target": chw(t), "has_target": torch.tensor(i % 3 != 0), "kind": torch.tensor(0)}


def _cfg(**sections):
    raw = {
        "model": {"arch": "compact", "options": TINY, "dropout": 0.5},
        "data": {"size": SIZE},
        "train": {"steps": 6, "batch_size": 2, "bf16": False, "channels_last": False, "log_every": 1, "seed": 3},
        "refine": {"enabled": True, "passes": 1, "threshold": 0.3},
        "validation": {"generated": 0, "every": 0},
        "checkpoint": {"every": 3, "keep": 5},
        "log": {"progress": False},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return validate(raw)


def _trainer(cfg, run_dir, **kw):
    return Trainer(cfg, run_dir, train_set=TrainingSet(Squares(), None, 0.0, cfg["train"]["seed"], splice_code=0), **kw)


# -- losses ----------------------------------------------------------------------------------------------------
def test_two_class_ce_matches_torch_weighted_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 5, 7, generator=g)
    labels = (torch.rand(3, 1, 5, 7, generator=g) > 0.7).float()
    want = F.cross_entropy(logits, labels[:, 0].long(), weight=torch.tensor([0.3, 0.7]))
    assert torch.allclose(two_class_ce(logits, labels, [0.3, 0.7]), want, atol=1e-6)
    assert torch.allclose(two_class_ce(logits, labels), F.cross_entropy(logits, labels[:, 0].long()), atol=1e-6)
    # a per-sample weight of 0 removes that sample
    sw = torch.tensor([1.0, 0.0, 1.0])
    sub = F.cross_entropy(logits[[0, 2]], labels[[0, 2], 0].long(), weight=torch.tensor([0.3, 0.7]))
    assert torch.allclose(two_class_ce(logits, labels, [0.3, 0.7], sw), sub, atol=1e-6)


def test_all_zero_weights_give_zero_loss_with_a_graph():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = two_class_ce(logits, torch.zeros(2, 1, 4, 4), sample_weight=torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("boundary_branch", [True, False])
def test_gsr_loss_shapes_and_gradients_reach_every_head(boundary_branch):
    from manipseg.models.nets import build_network, normalise

    torch.manual_seed(0)
    net = build_network("compact", boundary_branch=boundary_branch, **TINY)
    batch = torch.utils.data.default_collate([Squares()[i] for i in range(2)])
    out = net(normalise(batch["image"].float()))
    assert out["seg"].shape == (2, 2, SIZE, SIZE)
    assert (out["boundary"] is None) == (not boundary_branch)
    losses = gsr_loss(out, batch["mask"], batch["boundary"])
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    heads = {n: p.grad for n, p in net.named_parameters() if "seg_cls" in n or "boundary_cls" in n}
    assert any("boundary_cls" in n for n in heads) == boundary_branch
    assert all(g is not None and g.abs().sum() > 0 for g in heads.values())
    if not boundary_branch:
        assert losses["boundary"].item() == 0.0


# -- data ------------------------------------------------------------------------------------------------------
def test_step_sampler_shards_are_disjoint_and_resume_at_the_same_position():
    a = StepSampler(3, 0, 4, rank=0, world=2)
    b = StepSampler(3, 0, 4, rank=1, world=2)
    seen = [i for batch in list(a) + list(b) for i in batch]
    assert sorted(seen) == list(range(24))
    assert list(StepSampler(3, 2, 4, rank=1, world=2)) == list(b)[2:]


def test_training_set_flips_image_mask_and_target_together():
    ds = TrainingSet(Squares(), None, 0.0, seed=1, flip=True)
    base = Squares()
    flipped = 0
    for i in range(12):
        item, raw = ds[i], base[i]
        assert item["mask"].sum() == raw["mask"].sum()
        # the pasted colour sits under the mask in the flipped item too, and T under the mask differs from M
        k = item["mask"][0].bool()
        assert torch.equal(item["image"][:, k].float().std(dim=1), torch.zeros(3))
        flipped += not torch.equal(item["image"], raw["image"])
    assert 0 < flipped < 12
    assert torch.equal(ds[5]["image"], ds[5]["image"])  # deterministic per index


GEN_CALLS = []


class Brighten:
    """A deterministic stand-in for the GAN blender G(K, M): adds ``delta`` inside the mask."""

    def __init__(self, delta):
        self.delta = delta

    def __call__(self, images, masks):
        GEN_CALLS.append((tuple(images.shape), float(images.min()), float(images.max())))
        return images + self.delta * masks


def test_generator_hook_replaces_only_selected_images():
    g = load_generator("test_train_loop:Brighten", {"delta": 0.4})
    images = torch.full((3, 3, 4, 4), 100, dtype=torch.uint8)
    masks = torch.zeros(3, 1, 4, 4)
    masks[:, :, :2] = 1
    out = apply_generator(g, images, masks, torch.tensor([True, False, True]))
    assert torch.equal(out[1], images[1])
    assert int(out[0, 0, 0, 0]) == 100 + 102 and int(out[0, 0, 3, 3]) == 100  # + 0.4 * 255 inside K
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        apply_generator(lambda x, m: x[:, :1], images, masks, torch.tensor([True, True, True]))
    with pytest.raises(ValueError, match="no attribute"):
        load_generator("test_train_loop:Nope")
    sel = generated_selection(range(200), torch.ones(200, dtype=torch.bool), 0.5, seed=0)
    assert 70 < int(sel.sum()) < 130
    assert not generated_selection(range(5), torch.zeros(5, dtype=torch.bool), 1.0, seed=0).any()


def test_trainer_calls_the_generator_hook(tmp_path):
    GEN_CALLS.clear()
    cfg = _cfg(train={"steps": 2}, data={"generator": "test_train_loop:Brighten", "generator_args": {"delta": 0.2},
                                          "generated_fraction": 1.0}, checkpoint={"every": 0})
    _trainer(cfg, tmp_path, export=False).run()
    assert len(GEN_CALLS) == 2 and all(c[0][1:] == (3, SIZE, SIZE) and 0 <= c[1] <= c[2] <= 1 for c in GEN_CALLS)


# -- checkpoints and resume --------------------------------------------------------------------------------
def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = _cfg()
    full = _trainer(cfg, tmp_path / "full").run()
    assert len(full.losses) == 6 and len(set(full.losses)) == 6
    saved = ckpt.list_checkpoints(tmp_path / "full")
    assert [p.name for p in saved] == ["step_00000003.pt", "step_00000006.pt"]
    state = torch.load(saved[0], weights_only=True)        # loads without pickle code execution
    assert state["step"] == 3 and state["sampler"]["next_step"] == 3 and "optimizer" in state

    # an interrupted copy of the run: only the step-3 checkpoint and the log up to then
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    shutil.copy(saved[0], tmp_path / "cut" / "checkpoints" / saved[0].name)
    shutil.copy(tmp_path / "full" / "train.csv", tmp_path / "cut" / "train.csv")
    resumed = _trainer(cfg, tmp_path / "cut").run(resume=True)
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-6, abs=1e-7)   # fp32: same curve
    a = torch.load(tmp_path / "full" / "checkpoints" / "step_00000006.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "step_00000006.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].double(), b[k].double(), rtol=1e-5, atol=1e-7) for k in a)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "cut" / "train.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]                      # rows after the checkpoint were replaced

    # the exported model is a working detector
    from manipseg.models.gsr import GSRDetector

    det = GSRDetector.from_weights(tmp_path / "cut" / "model.safetensors")
    pred = det.predict(np.zeros((40, 50, 3), np.uint8) + 128)
    assert pred.prob.shape == (40, 50)


def test_resume_refuses_a_different_config_or_no_checkpoint(tmp_path):
    _trainer(_cfg(train={"steps": 1}, checkpoint={"every": 1}), tmp_path, export=False).run()
    with pytest.raises(TrainingError, match="other settings for refine.passes"):
        _trainer(_cfg(train={"steps": 6}, refine={"passes": 2}), tmp_path).run(resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        _trainer(_cfg(), tmp_path / "empty").run(resume=True)


def test_rng_state_roundtrip():
    import random

    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_snapshots_and_model_init(tmp_path):
    """checkpoint.export_every writes weights-only snapshots; model.init starts a run from a weights file
    (tensors of matching name and shape, the rest freshly initialised)."""
    from manipseg.models.weights import load_weights
    from manipseg.train.loop import init_from_weights

    res = _trainer(_cfg(checkpoint={"every": 3, "keep": 5, "export_every": 2}), tmp_path / "a").run()
    snaps = sorted(p.name for p in (tmp_path / "a" / "snapshots").glob("model_*.safetensors"))
    assert snaps == ["model_00000002.safetensors", "model_00000004.safetensors"]
    final, _ = load_weights(res.model_path)
    b = _cfg(model={"init": str(res.model_path)}, train={"steps": 1})
    tr = _trainer(b, tmp_path / "b")
    tr._setup(resume=False)
    state = tr.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in final.items())
    from manipseg.models.nets import build_network

    wider = build_network("compact", **{**TINY, "dct_stream": True})
    report = init_from_weights(wider, res.model_path)
    assert report["new"] and all(k.startswith("dct_") for k in report["new"]) and not report["skipped"]
    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

    with pytest.raises(TrainingError, match="no tensor that fits"):
        init_from_weights(Other(), res.model_path)


# -- distillation ----------------------------------------------------------------------------------------------
def test_distillation_loss_is_the_kl_divergence_and_zero_at_the_teacher():
    from manipseg.train.losses import distillation_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 2, 5, 6, generator=g), torch.randn(2, 2, 5, 6, generator=g)
    assert distillation_loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-7)
    ref = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="none", log_target=True).sum(1).mean()
    assert distillation_loss(s, t).item() == pytest.approx(ref.item(), rel=1e-6)
    ref2 = F.kl_div(F.log_softmax(s / 2, 1), F.log_softmax(t / 2, 1), reduction="none", log_target=True).sum(1).mean()
    assert distillation_loss(s, t, temperature=2.0).item() == pytest.approx(4 * ref2.item(), rel=1e-6)
    # a teacher map of another size is resized to the student's; gradients reach the student only
    s.requires_grad_(True)
    big = F.interpolate(t, size=(10, 12), mode="bilinear", align_corners=False)
    distillation_loss(s, big).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="logits must be"):
        distillation_loss(s[:, :1], t)
    with pytest.raises(ValueError, match="batch sizes differ"):
        distillation_loss(s, t[:1])


def test_a_teacher_adds_its_weighted_kl_term_and_pulls_the_student_towards_it(tmp_path):
    teacher = _trainer(_cfg(train={"steps": 3}, checkpoint={"every": 0}), tmp_path / "teacher").run().model_path
    plain = _trainer(_cfg(train={"steps": 1}, checkpoint={"every": 0}), tmp_path / "plain", export=False).run()
    kd_cfg = _cfg(train={"steps": 1}, checkpoint={"every": 0}, distill={"teacher": str(teacher), "weight": 3.0})
    taught = _trainer(kd_cfg, tmp_path / "taught", export=False).run()
    import csv

    row = next(csv.DictReader((tmp_path / "taught" / "train.csv").open()))
    kd = float(row["loss_distill"])
    assert kd > 0
    # step 1 starts from the same weights and data: the only difference is 3 x the distillation term
    assert taught.losses[0] - plain.losses[0] == pytest.approx(3.0 * kd, rel=1e-4)

    # trained on the distillation term (a large weight, a fast learning rate), the student's maps approach the teacher's
    from manipseg.models.weights import network_from_weights
    from manipseg.models.nets import normalise
    from manipseg.train.losses import distillation_loss

    t_net, _ = network_from_weights(teacher)
    batch = torch.stack([Squares()[i]["image"] for i in range(50_00, 50_08)]).float()

    def gap(run_dir):
        s_net, _ = network_from_weights(run_dir / "model.safetensors")
        with torch.no_grad():
            x = normalise(batch)
            return distillation_loss(s_net(x)["seg"], t_net(x)["seg"]).item()

    for name, distill in (("free", {}), ("pulled", {"teacher": str(teacher), "weight": 100.0})):
        cfg = _cfg(model={"dropout": 0.0}, train={"steps": 30, "lr": 3e-3, "seed": 11}, checkpoint={"every": 0},
                   distill=distill)
        _trainer(cfg, tmp_path / name).run()
    assert gap(tmp_path / "pulled") < 0.7 * gap(tmp_path / "free")   # measured: 0.35 against 0.62


def test_distillation_settings_are_checked(tmp_path):
    from manipseg.train.config import ConfigError

    with pytest.raises(ConfigError, match="distill.weight must be > 0"):
        _cfg(distill={"teacher": "t.safetensors", "weight": 0.0})
    cfg = _cfg(train={"steps": 1}, distill={"teacher": str(tmp_path / "missing.safetensors")})
    with pytest.raises(TrainingError, match="distill.teacher: .*missing.safetensors"):
        _trainer(cfg, tmp_path / "run").run()
