"""GAN generators on real photos: standalone training + resume, the gan / inpaint-gan kinds, Fig. 4."""
import numpy as np
import pytest
import torch

from manipseg.gan import UNetGenerator, save_generator

TINY_G = {"width": 4, "depth": 3, "max_width": 16}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _cfg(shared_data, tmp_path, role="blender", steps=4):
    from manipseg.train.gan_pretrain import _validate

    return _validate({"role": role,
                      "data": {"root": str(shared_data), "sources": ["natural/sun-hays"], "size": 32,
                               "val_sources": ["natural/sun-hays"], "val_count": 2},
                      "model": {"generator": TINY_G, "discriminator": {"width": 4}},
                      "train": {"steps": steps, "batch_size": 2, "bf16": False, "num_workers": 0, "threads": 1,
                                "log_every": 1, "val_every": 2, "snapshot_every": 2, "checkpoint_every": 2}},
                     "test")


@pytest.mark.parametrize("role", ["blender", "inpainter"])
def test_standalone_training_resumes_exactly(shared_data, tmp_path, role):
    import shutil

    from manipseg.gan.model import load_generator_file
    from manipseg.train.gan_pretrain import GanRun
    from manipseg.train import checkpoint as ckpt

    cfg = _cfg(shared_data, tmp_path, role)
    GanRun(cfg, tmp_path / "full").run()
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    first = ckpt.list_checkpoints(tmp_path / "full")[0]
    shutil.copy(first, tmp_path / "cut" / "checkpoints" / first.name)
    assert GanRun(cfg, tmp_path / "cut").run(resume=True) == 4
    a, meta = load_generator_file(tmp_path / "full" / "generator.safetensors", role)
    b, _ = load_generator_file(tmp_path / "cut" / "generator.safetensors", role)
    assert meta["step"] == 4
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    lines = (tmp_path / "full" / "train.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in lines[1:]] == [1, 2, 3, 4]
    snaps = sorted(p.name for p in (tmp_path / "full" / "snapshots").iterdir())
    assert snaps == ["G_00000000.safetensors", "G_00000002.safetensors", "G_00000004.safetensors"]
    if role == "blender":
        from manipseg.train.gan_fig4 import fig4
        from manipseg.io import load_image

        png = load_image(fig4(tmp_path / "full", tmp_path / "fig4.png", rows=2, columns=3, cell=40))
        assert png.shape[0] >= 2 * 40 and png.shape[1] >= 7 * 40     # T, K, M, 3 snapshots, |G-M|


def test_learned_kinds_match_their_classical_base(shared_data, tmp_path):
    from manipseg.generate.learned import LearnedDataset
    from manipseg.generate import ImagePool, make_sample
    from manipseg.generate.dataset import derive_seed

    torch.manual_seed(0)
    ident = save_generator(tmp_path / "id.safetensors", UNetGenerator(**TINY_G, identity_init=True), "blender")
    inp = save_generator(tmp_path / "inp.safetensors", UNetGenerator(**TINY_G), "inpainter")
    pool = ImagePool([shared_data / "natural/sun-hays"], size=64)
    config = {"post": {"enabled": False}}
    ds = LearnedDataset(pool, ["gan", "inpaint-gan"], size=64, length=6, seed=3, config=config,
                        generator=ident, inpainter=inp)
    seen = set()
    for i in range(6):
        s = ds.sample(i)
        seen.add(s.meta["kind"])
        base = make_sample(s.meta["base_kind"], derive_seed(3, i), pool, 64, config)
        np.testing.assert_array_equal(s.mask, base.mask)
        if s.meta["kind"] == "gan":          # an identity G leaves the copy-paste as it is
            assert np.abs(s.image.astype(int) - base.image.astype(int)).max() <= 1
        else:                                # outside the hole: the authentic photo, bit for bit
            np.testing.assert_array_equal(s.image[~s.mask], base.target[~s.mask])
            assert not np.array_equal(s.image[s.mask], base.image[s.mask])    # not the classical fill
    assert seen == {"gan", "inpaint-gan"}
    assert ds[0]["kind"].item() == ["gan", "inpaint-gan"].index(ds.sample(0).meta["kind"])
    with pytest.raises(ValueError, match="needs a trained blender"):
        LearnedDataset(pool, ["gan"], size=64, length=2)


def test_generate_cli_with_gan_kinds(shared_data, tmp_path, monkeypatch):
    import json

    import manipseg.gan.model

    from manipseg.cli import main

    torch.manual_seed(0)
    g = save_generator(tmp_path / "g.safetensors", UNetGenerator(**TINY_G), "blender")
    out = tmp_path / "out"
    code = main(["generate", "--sources", str(shared_data / "natural/sun-hays"), "--n", "3", "--size", "64",
                 "--kinds", "gan,splice", "--generator", str(g), "--out", str(out)])
    assert code == 0
    kinds = [json.loads(line)["kind"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(kinds) == 3 and set(kinds) <= {"gan", "splice"}
    monkeypatch.setattr(manipseg.gan.model, "bundled_weights", lambda role: None)
    assert main(["generate", "--sources", str(shared_data / "natural/sun-hays"), "--n", "1", "--kinds", "inpaint-gan",
                 "--out", str(tmp_path / "o2")]) == 2


def test_compare_identity_generator_changes_nothing(shared_data, tmp_path):
    from manipseg.train.gan_evaluate import compare
    from manipseg.models.nets import build_network
    from manipseg.models.weights import save_weights

    torch.manual_seed(0)
    net = build_network("compact", width=4, head_channels=4, boundary_channels=4, aspp_rates=[1, 2])
    seg = save_weights(tmp_path / "seg.safetensors", net, "compact",
                       {"width": 4, "head_channels": 4, "boundary_channels": 4, "aspp_rates": [1, 2]}, {})
    g = save_generator(tmp_path / "id.safetensors", UNetGenerator(**TINY_G, identity_init=True), "blender")
    res = compare(str(g), str(seg), [str(shared_data / "natural/sun-hays")], n=4, size=64, seed=1)
    assert res["l_bg"] == pytest.approx(res["l_bg_copy_paste"], abs=1e-4) and res["mean_abs_change_in_k_255"] < 0.5
    assert res["cp_f1_dataset"] == pytest.approx(res["gan_f1_dataset"], abs=1e-6)
    assert res["paired_share_harder"] == 0.0 and res["paired_share_easier"] == 0.0
