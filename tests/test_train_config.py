"""Training config: defaults, extends, overrides, clear errors, and the ablation configs of Tables 2-3."""
from pathlib import Path

import pytest

from manipseg.train.config import ConfigError, load_config, resolve_path, validate

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "segment"


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_the_paper_settings():
    cfg = validate({})
    assert cfg["train"]["batch_size"] == 4 and cfg["train"]["lr"] == 1e-4 and cfg["train"]["weight_decay"] == 5e-5
    assert cfg["loss"]["boundary_class_weights"] == [0.3, 0.7]
    assert cfg["model"]["dropout"] == 0.5 and cfg["train"]["flip"] is True


@pytest.mark.parametrize("text, pattern", [
    ("trian: {steps: 3}", r"unknown section 'trian'.*Did you mean 'train'"),
    ("train: {batchsize: 3}", r"unknown key train.batchsize.*Did you mean 'batch_size'"),
    ("refine: {pases: 2}", r"unknown key refine.passes|Did you mean 'passes'"),
    ("train: {steps: many}", r"train.steps: expected int"),
    ("train: {steps: 2.5}", r"train.steps: expected int"),
    ("train: {lr: -1}", r"train.lr must be > 0"),
    ("model: {arch: vgg16}", r"model.arch must be .*Did you mean 'gsr-vgg16'"),
    ("data: {kinds: {splise: 1}}", r"unknown kind 'splise'.*Did you mean 'splice'"),
    ("data: {kinds: {}}", r"no training data"),
    ("data: {size: 100}", r"multiple of 16"),
    ("data: {real: {weight: 0.5}}", r"data.real needs a path"),
    ("data: {real: {path: x, wieght: 0.5}}", r"unknown key data.real.wieght.*'weight'"),
    ("model: {boundary_branch: false}\nrefine: {enabled: true}", r"model.boundary_branch must be true"),
    ("data: {generated_fraction: 0.5}\ngan: {enabled: false}", r"needs a generator G\(M\)"),
    ("gan: {enabled: true}", r"data.generated_fraction is 0"),
    ("data: {generated_fraction: 0.5, generator: 'torch:flip'}\ngan: {enabled: true}", r"keep one"),
    ("- a\n- b", r"mapping"),
])
def test_errors_name_the_key_and_suggest(tmp_path, text, pattern):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_extends_merges_and_overrides_win(tmp_path):
    _write(tmp_path, "train: {steps: 10, batch_size: 2}\ndata: {kinds: {splice: 1, sbi: 2}}", "base.yaml")
    child = _write(tmp_path, "extends: base.yaml\ntrain: {steps: 20}\n")
    cfg = load_config(child, ["train.lr=0.001", "refine.enabled=true"])
    assert cfg["train"]["steps"] == 20 and cfg["train"]["batch_size"] == 2 and cfg["train"]["lr"] == 0.001
    assert cfg["data"]["kinds"] == {"splice": 1.0, "sbi": 2.0} and cfg["refine"]["enabled"] is True
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(child, ["train.steps"])


def test_extends_cycle_and_missing_file(tmp_path):
    _write(tmp_path, "extends: b.yaml", "a.yaml")
    _write(tmp_path, "extends: a.yaml", "b.yaml")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_toml_config(tmp_path):
    p = _write(tmp_path, "[train]\nsteps = 7\n[refine]\nenabled = true\n", "c.toml")
    cfg = load_config(p)
    assert cfg["train"]["steps"] == 7 and cfg["refine"]["enabled"]


def test_resolve_path_env_and_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MS_TEST_DIR", str(tmp_path))
    assert resolve_path("$MS_TEST_DIR/x", None) == tmp_path / "x"
    assert resolve_path("natural/coco", tmp_path) == tmp_path / "natural/coco"
    monkeypatch.delenv("MS_TEST_DIR")
    with pytest.raises(ConfigError, match="environment variable"):
        resolve_path("$MS_TEST_DIR/x", None)


GEN = ["data.generator=torch:flip"]  # any callable satisfies the validation of the hook


def _ablation(name, extra=()):
    return load_config(CONFIGS / f"{name}.yaml", list(extra))


def _diff(a, b):
    out = set()
    for s in a:
        for k in a[s]:
            if a[s][k] != b[s][k]:
                out.add(f"{s}.{k}")
    return out


def test_ablation_configs_differ_only_in_what_the_tables_vary():
    t2 = {n: _ablation(n, GEN) for n in ("dl", "dl_cp", "dl_g", "dl_cp_g", "gs", "gsr")}
    t3 = {n: _ablation(n, GEN) for n in ("cp_s", "cp_g_s", "cp_gsr")}
    assert _diff(t2["dl"], t2["dl_cp"]) == {"data.kinds", "data.real"}      # + CP (real share 1 -> 1/3)
    assert _diff(t2["dl_cp"], t2["dl_g"]) == {"data.generated_fraction"}   # CP -> G(M)
    assert t2["dl_g"]["data"]["generated_fraction"] == 1.0
    assert _diff(t2["dl_cp"], t2["dl_cp_g"]) == {"data.generated_fraction"}
    assert _diff(t2["dl_cp_g"], t2["gs"]) == {"model.boundary_branch"}
    assert _diff(t2["gs"], t2["gsr"]) == {"refine.enabled"}
    assert _diff(t3["cp_s"], t3["cp_g_s"]) == {"data.generated_fraction"}
    assert _diff(t3["cp_g_s"], t3["cp_gsr"]) == {"refine.enabled"}
    assert all(c["data"]["real"] is None for c in t3.values())
    assert all(c["data"]["real"]["path"] == "$MANIPSEG_CASIA2" for c in t2.values())
    assert not t2["dl"]["data"]["kinds"] and t2["dl"]["data"]["real"]["weight"] == 1.0


@pytest.mark.parametrize("name", ["dl_g", "dl_cp_g", "gs", "gsr", "cp_g_s", "cp_gsr"])
def test_configs_with_g_train_the_gan_blender_jointly(name):
    assert _ablation(name)["gan"]["enabled"] is True          # G(K, M) trained with the segmenter
    assert _ablation(name, GEN)["gan"]["enabled"] is False    # a fixed G(M) hook instead
    with pytest.raises(ConfigError, match="needs a generator"):
        _ablation(name, ["gan.enabled=false"])


@pytest.mark.parametrize("name", ["base", "dl", "dl_cp", "cp_s", "compact_synthetic"])
def test_configs_without_g_load(name):
    assert _ablation(name)["train"]["batch_size"] in (4, 8)
