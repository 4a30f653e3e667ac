"""The blender trained jointly with the segmenter inside manipseg train (alternating G, D, segmenter)."""
import csv
import shutil

import numpy as np
import pytest
import torch

from manipseg.gan import load_generator_file
from manipseg.train import checkpoint as ckpt
from manipseg.train.config import validate
from manipseg.train.data import TrainingSet
from manipseg.train.loop import Trainer

SIZE = 32


pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Pastes(torch.utils.data.Dataset):
    """Toy copy-pastes in the engine's item format, with the aligned source S."""

    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        from manipseg.postprocess import boundary_of

        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        t = np.clip(np.stack([xx * 6, yy * 6, np.full_like(xx, 90)], -1) + rng.integers(0, 30, 3), 0, 255).astype(np.uint8)
        s = np.clip(rng.integers(40, 220, 3) + rng.normal(0, 8, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        k = np.zeros((SIZE, SIZE), bool)
        y, x = rng.integers(4, SIZE // 2, 2)
        k[y:y + 10, x:x + 12] = True
        m = np.where(k[..., None], s, t)
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
        return {"image": chw(m), "mask": torch.from_numpy(k[None].astype(np.float32)),
                "boundary": torch.from_numpy(boundary_of(k)[None].astype(np.float32)), "target": chw(t),
                "has_target": torch.tensor(True), "source": chw(s), "has_source": torch.tensor(True),
                "kind": torch.tensor(0)}


def _cfg(**over):
    raw = {
        "model": {"arch": "compact", "dropout": 0.5,
                  "options": {"width": 4, "head_channels": 4, "boundary_channels": 4, "aspp_rates": [1, 2]}},
        "data": {"size": SIZE, "generated_fraction": 0.5},
        "gan": {"generator": {"width": 4, "depth": 3, "max_width": 16}, "discriminator": {"width": 4}},
        "train": {"steps": 4, "batch_size": 2, "bf16": False, "channels_last": False, "log_every": 1, "seed": 5},
        "refine": {"enabled": True},
        "validation": {"generated": 0, "every": 0},
        "checkpoint": {"every": 2, "keep": 5},
        "log": {"progress": False},
    }
    for k, v in over.items():
        raw[k] = {**raw[k], **v}
    return validate(raw)


def _trainer(cfg, run_dir):
    return Trainer(cfg, run_dir, train_set=TrainingSet(Pastes(), None, 0.0, cfg["train"]["seed"], splice_code=0))


def test_joint_training_updates_g_logs_and_resumes(tmp_path):
    cfg = _cfg()
    assert cfg["gan"]["enabled"] is True          # generated_fraction > 0 and no fixed generator
    _trainer(cfg, tmp_path / "full").run()
    rows = list(csv.DictReader((tmp_path / "full" / "train.csv").open()))
    assert all(float(r["gan_bg"]) >= 0 and float(r["gan_d"]) > 0 for r in rows if r["loss"])
    G, meta = load_generator_file(tmp_path / "full" / "generator.safetensors", "blender")
    assert meta["step"] == 4
    assert G.config["identity_init"] and G.head[-1].weight.abs().sum() > 0   # G left its zero-init head: trained
    snaps = sorted(p.name for p in (tmp_path / "full" / "snapshots").iterdir())
    assert snaps == ["G_00000002.safetensors", "G_00000004.safetensors"]
    # resume from step 2 reproduces G and D exactly
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    first = ckpt.list_checkpoints(tmp_path / "full")[0]
    shutil.copy(first, tmp_path / "cut" / "checkpoints" / first.name)
    _trainer(cfg, tmp_path / "cut").run(resume=True)
    a = torch.load(tmp_path / "full" / "checkpoints" / "step_00000004.pt", weights_only=True)["gan"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "step_00000004.pt", weights_only=True)["gan"]
    for net in ("G", "D"):
        assert all(torch.allclose(a[net][k], b[net][k], rtol=1e-5, atol=1e-7) for k in a[net])


def test_gan_init_loads_a_pretrained_blender(tmp_path):
    from manipseg.gan import UNetGenerator, save_generator
    from manipseg.train.gan_joint import JointGan

    torch.manual_seed(0)
    g = UNetGenerator(width=4, depth=3, max_width=16)
    path = save_generator(tmp_path / "g.safetensors", g, "blender")
    cfg = _cfg(gan={"init": str(path)})["gan"]
    joint = JointGan(cfg)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), joint.pair.G.state_dict().values()))
    bad = _cfg(gan={"init": str(path), "generator": {"width": 8, "depth": 3, "max_width": 16}})["gan"]
    with pytest.raises(ValueError, match="differs from gan.generator"):
        JointGan(bad)
