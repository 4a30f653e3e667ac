import json

import numpy as np
import pytest

from manipseg import registry
from manipseg.cli import main
from manipseg.contract import ContractError, Detector, Prediction, check_image, robust_normalise
from manipseg.postprocess import boundary_of, prob_to_mask


class Constant(Detector):
    name = "constant-test"
    summary = "returns a constant map"

    def __init__(self, device="cpu", value=0.25, **kw):
        super().__init__(device=device, **kw)
        self.value = value

    def _predict(self, image):
        return Prediction(np.full(image.shape[:2], self.value, np.float32), self.value)


class Broken(Detector):
    name = "broken-test"

    def _predict(self, image):
        return Prediction(np.full((3, 3), 2.0, np.float32), 0.5)


def test_predict_validates_input_and_output():
    img = np.zeros((20, 30, 3), np.uint8)
    pred = Constant().predict(img)
    assert pred.prob.shape == (20, 30) and pred.prob.dtype == np.float32 and pred.score == 0.25
    with pytest.raises(ContractError, match="shape"):
        Broken().predict(img)
    with pytest.raises(ContractError, match="uint8"):
        Constant().predict(img.astype(np.float32))
    with pytest.raises(ContractError, match=r"\(H, W, 3\)"):
        check_image(np.zeros((20, 30), np.uint8))
    with pytest.raises(ContractError, match="too small"):
        check_image(np.zeros((4, 30, 3), np.uint8))


def test_from_config_mapping_and_file(tmp_path):
    assert Constant.from_config({"value": 0.75}).value == 0.75
    (tmp_path / "c.yaml").write_text("name: constant-test\nvalue: 0.5\n")
    assert Constant.from_config(tmp_path / "c.yaml").value == 0.5


def test_unknown_name_suggests_closest():
    with pytest.raises(registry.UnknownDetectorError) as err:
        registry.create("nio")
    msg = str(err.value)
    assert "Did you mean 'noi'?" in msg and "cfa" in msg and "ela" in msg


def test_register_and_load_by_name_and_config(tmp_path):
    registry.register("constant-test", "a test detector")(Constant)
    try:
        det = registry.load_detector("constant-test")
        assert isinstance(det, Constant) and det.value == 0.25
        (tmp_path / "d.json").write_text('{"name": "constant-test", "value": 0.9}')
        assert registry.load_detector(str(tmp_path / "d.json")).value == 0.9
        with pytest.raises(FileNotFoundError):
            registry.load_detector(str(tmp_path / "missing.safetensors"))
    finally:
        registry.DETECTORS.remove("constant-test")


def test_models_command_lists_every_detector(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line and not line.startswith((" ", "*"))]
    assert {line.split()[0] for line in rows} == set(registry.names())
    assert all(len(line.split(None, 1)) == 2 for line in rows)
    marked = [line.split()[0] for line in rows if line.split()[1] == "*"]
    assert marked == [registry.default_model()]
    for name in registry.names():  # every bundled weights file gets its own line under its detector
        if registry.bundled_weights(name) is not None:
            i = out.index(next(line for line in rows if line.split()[0] == name))
            assert out[i + 1].split()[:3] == ["bundled", "weights", f"{name}.safetensors:"]
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed if r["default"]] == [registry.default_model()]


def test_robust_normalise():
    x = np.arange(1000, dtype=np.float64)
    y = robust_normalise(x)
    assert y.min() == 0.0 and y.max() == 1.0 and y.dtype == np.float32
    assert not robust_normalise(np.full((5, 5), 3.0)).any()


def test_prob_to_mask_threshold_dilate_and_small_components():
    prob = np.zeros((100, 100), np.float32)
    prob[10:30, 10:30] = 0.9     # 400 px region
    prob[80, 80] = 0.95          # isolated speck
    prob[50:60, 50:60] = 0.4     # below threshold
    m = prob_to_mask(prob, threshold=0.5, dilate=1, min_region=0.01)  # min area 100 px
    assert m.sum() == 400 and not m[80, 80] and not m[55, 55]
    m5 = prob_to_mask(prob, threshold=0.5, dilate=5, min_region=0.01)
    assert m5.sum() == 24 * 24  # dilated by 2 px on each side
    assert prob_to_mask(prob, threshold=0.3, dilate=1, min_region=0.0)[55, 55]


def test_boundary_is_dilation_minus_erosion():
    k = np.zeros((20, 20), bool)
    k[5:15, 5:15] = True
    b = boundary_of(k, 5)
    assert b.sum() == 14 * 14 - 6 * 6
    assert not b[10, 10] and b[5, 5] and b[3, 3] and not b[2, 2]


def test_default_model_follows_the_bundled_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "bundled_weights", lambda name: None)
    assert registry.default_model() == registry.FALLBACK_MODEL == "noi"
    fake = tmp_path / "gsr-compact.safetensors"
    monkeypatch.setattr(registry, "bundled_weights", lambda name: fake if name == "gsr-compact" else None)
    assert registry.default_model() == "gsr-compact"  # without the VGG-16 weights: the compact network alone
    vgg = tmp_path / "gsr-vgg16.safetensors"
    monkeypatch.setattr(registry, "bundled_weights", lambda name: vgg if name in ("gsr-vgg16", "gsr-compact") else None)
    assert registry.default_model() == "gsr-fused"  # the fusion needs only its network's weights


def test_registry_class_lazy_entries_order_and_suggestions():
    from manipseg.names import Registry, UnknownNameError

    reg = Registry("widget", plural="widgets")
    reg.add("zeta", 1, summary="last letter")
    reg.add("alpha", target="json:dumps", summary="lazy")  # imported on first use
    assert reg.names() == ["alpha", "zeta"] and "alpha" in reg and len(reg) == 2
    assert reg._entries["alpha"][0] is None and reg.get("alpha") is json.dumps and reg._entries["alpha"][0] is json.dumps
    assert reg.values() == [1, json.dumps]  # registration order
    assert reg.summary("zeta") == "last letter"
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\? Known widgets: alpha, zeta"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("zeta", 2)
    reg.add("zeta", 2, replace=True)
    assert reg.get("zeta") == 2
    with pytest.raises(ValueError, match="not both"):
        reg.add("x")


def test_names_are_written_once():
    """The CLI's lists of dataset formats and attacks are the registries' (not copies that drift)."""
    import argparse

    from manipseg.commands import evaluate as evaluate_cmd
    from manipseg.eval.attacks import ATTACKS
    from manipseg.eval.datasets import FORMATS
    from manipseg.generate.core import KINDS
    from manipseg.train.config import GENERATED_KINDS

    p = argparse.ArgumentParser()
    evaluate_cmd.configure(p)
    fmt_help = next(a.help for a in p._actions if a.dest == "fmt")
    listed = fmt_help.split("one of ", 1)[1].replace(" ", "").split(",")
    assert sorted(listed) == sorted(["auto", *FORMATS.names()])
    attack_help = next(a.help for a in p._actions if a.dest == "attack")
    assert all(name in attack_help for name in ATTACKS.names())
    assert GENERATED_KINDS is KINDS


_BUILTIN = ("noi", "cfa", "ela", "copymove", "fused", "gsr-compact", "gsr-vgg16", "gsr-fused", "gsr-fused-vgg16")


@pytest.fixture(scope="module")
def odd_photo():
    from skimage import data

    return np.ascontiguousarray(data.chelsea()[:201, :299])  # odd height and width


@pytest.mark.parametrize("name", _BUILTIN)
def test_every_builtin_detector_keeps_the_contract(name, odd_photo):
    """One conformance check for every registered detector: a map of the image's (odd) size in [0, 1], a score
    in [0, 1], a decision threshold inside (0, 1) at which the mask is exactly where the map reaches it, bad input
    refused."""
    assert set(_BUILTIN) <= set(registry.names())
    cls = registry.get_class(name)
    ok, why = cls.availability() if hasattr(cls, "availability") else (True, "")
    if not ok:
        pytest.skip(f"{name}: {why}")
    det = registry.load_detector(name)
    pred = det.predict(odd_photo)
    assert pred.prob.shape == odd_photo.shape[:2] and pred.prob.dtype == np.float32
    assert 0.0 <= float(pred.prob.min()) and float(pred.prob.max()) <= 1.0 and 0.0 <= pred.score <= 1.0
    assert 0.0 < det.threshold < 1.0
    mask = prob_to_mask(pred.prob, threshold=det.threshold, dilate=0, min_region=0.0)
    np.testing.assert_array_equal(mask > 0, pred.prob >= det.threshold)  # the mask is drawn at the reported threshold
    with pytest.raises(ContractError):
        det.predict(odd_photo.astype(np.float32))
    with pytest.raises(ContractError):
        det.predict(np.zeros((3, 3, 3), np.uint8))


def test_a_detector_whose_module_cannot_be_imported_is_listed_as_unavailable():
    registry.DETECTORS.add("broken-import-test", target="manipseg.no_such_module:Nothing")
    try:
        entry = next(e for e in registry.entries() if e.name == "broken-import-test")
        assert entry.summary.startswith("unavailable: cannot import manipseg.no_such_module:Nothing")
        assert registry.get_class("noi").summary in {e.summary for e in registry.entries()}
    finally:
        registry.DETECTORS.remove("broken-import-test")
