"""The network runtime (manipseg.models.runtime): ONNX Runtime computes what torch computes, the shipped graph
belongs to the shipped weights, the choice is measured and cached, and impossible requests say why."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from manipseg.contract import ContractError  # noqa: E402
from manipseg.models import runtime  # noqa: E402
from manipseg.models.gsr import GSRDetector  # noqa: E402
from manipseg.models.nets import build_network  # noqa: E402
from manipseg.models.tiling import normalisation  # noqa: E402
from manipseg.models.weights import read_header, save_weights  # noqa: E402
from manipseg.registry import bundled_weights  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MANIPSEG_RUNTIME", raising=False)
    runtime.cached_choice.cache_clear()
    yield tmp_path / "cache" / "manipseg"
    runtime.cached_choice.cache_clear()


@pytest.fixture
def weights(tmp_path):
    """The shipped network's weights, alone in a folder (no graph beside them)."""
    import shutil

    return Path(shutil.copyfile(bundled_weights("gsr-compact"), tmp_path / "w.safetensors"))


def test_onnx_runtime_computes_what_torch_computes(weights, cache, astronaut):
    img = astronaut[:203, :317]  # not a multiple of the stride: padding and crop
    torch_det = GSRDetector.from_weights(weights, bf16=False, runtime="torch")
    onnx_det = GSRDetector.from_weights(weights, bf16=False, runtime="onnx")
    assert torch_det.runtime == "torch" and onnx_det.runtime == "onnx"
    a, b = torch_det.predict(img), onnx_det.predict(img)
    assert b.extras["runtime"] == "onnx" and a.extras["runtime"] == "torch"
    assert a.prob.std() > 0.01  # not a flat map
    np.testing.assert_allclose(b.prob, a.prob, atol=2e-4)
    np.testing.assert_allclose(b.extras["boundary"], a.extras["boundary"], atol=2e-4)
    # tiled, too (each tile's shape is new to the graph: dynamic height and width)
    tiled_t = GSRDetector.from_weights(weights, bf16=False, runtime="torch", tile=128, overlap=32).predict(img)
    tiled_o = GSRDetector.from_weights(weights, bf16=False, runtime="onnx", tile=128, overlap=32).predict(img)
    assert tiled_o.extras["tiles"] > 1
    np.testing.assert_allclose(tiled_o.prob, tiled_t.prob, atol=2e-4)
    # the graph was exported once into the cache, named by the weights' checksum
    from manipseg.header import read_info

    sha, arch = read_header(weights)["sha256"], runtime.arch_of(read_info(weights))
    graph = runtime.cache_graph_path(sha, arch)
    assert graph.is_file() and graph.parent == cache / "onnx"
    assert runtime.graph_sha256(graph) == sha


def test_shipped_graph_belongs_to_the_shipped_weights():
    w = bundled_weights("gsr-compact")
    graph = w.with_suffix(".onnx")
    assert graph.is_file(), "scripts/ship_model.py writes the ONNX graph beside the weights"
    assert runtime.graph_sha256(graph) == read_header(w)["sha256"]


def test_a_stale_graph_beside_the_weights_is_not_used(weights, cache, tmp_path):
    other = build_network("compact", width=8, head_channels=8, boundary_channels=8).eval()
    runtime.export_onnx(other, weights.with_suffix(".onnx"), "0" * 64)  # another network's graph
    det = GSRDetector.from_weights(weights, bf16=False, runtime="onnx")
    assert det._onnx.path != weights.with_suffix(".onnx")  # re-exported into the cache instead
    assert det._onnx.weights_sha256 == read_header(weights)["sha256"]
    from manipseg.header import read_info

    arch = runtime.arch_of(read_info(weights))
    assert runtime.open_graph(weights, read_header(weights)["sha256"], arch).path == det._onnx.path
    # the same tensors under other architecture options (no tensors behind them) are another graph
    other_arch = {**arch, "aspp_rates": [1, 2, 3]}
    assert runtime.open_graph(weights, read_header(weights)["sha256"], other_arch) is None


def test_an_unreadable_graph_is_skipped_with_a_warning(weights, cache, caplog):
    weights.with_suffix(".onnx").write_bytes(b"not an onnx graph")
    det = GSRDetector.from_weights(weights, bf16=False, runtime="onnx")  # exported into the cache instead
    assert det.runtime == "onnx" and det._onnx.path != weights.with_suffix(".onnx")
    assert "cannot read the ONNX graph" in caplog.text


def test_auto_measures_once_and_caches_the_choice(weights, cache, monkeypatch):
    calls = []

    def fake_measure(net, onnx_net, bf16, **kw):
        calls.append(bf16)
        return {"torch": 2.0, "onnx": 1.0}

    monkeypatch.setattr(runtime, "measure", fake_measure)
    assert GSRDetector.from_weights(weights, bf16=False).runtime == "onnx"
    assert GSRDetector.from_weights(weights, bf16=False).runtime == "onnx"
    assert len(calls) == 1  # the second detector read the cached choice
    saved = json.loads((cache / "runtime.json").read_text())
    assert [v["runtime"] for v in saved.values()] == ["onnx"]
    # a choice stored under an older rule is decided again from its timings
    key = next(iter(saved))
    saved[key] = {"runtime": "torch", "torch_s": 0.95, "onnx_s": 1.0}  # torch only 5 % faster: onnx now
    (cache / "runtime.json").write_text(json.dumps(saved))
    runtime.cached_choice.cache_clear()
    assert runtime.cached_choice(key) == "onnx"
    monkeypatch.setenv("MANIPSEG_RUNTIME", "torch")
    assert GSRDetector.from_weights(weights, bf16=False).runtime == "torch"
    # torch must be clearly faster to be chosen (its import costs start-up time)
    monkeypatch.delenv("MANIPSEG_RUNTIME")
    (cache / "runtime.json").unlink()
    runtime.cached_choice.cache_clear()
    monkeypatch.setattr(runtime, "measure", lambda *a, **k: {"torch": 0.9, "onnx": 1.0})
    assert GSRDetector.from_weights(weights, bf16=False).runtime == "onnx"
    (cache / "runtime.json").unlink()
    runtime.cached_choice.cache_clear()
    monkeypatch.setattr(runtime, "measure", lambda *a, **k: {"torch": 0.5, "onnx": 1.0})
    assert GSRDetector.from_weights(weights, bf16=False).runtime == "torch"


def test_real_measurement_returns_both_timings(weights):
    from manipseg.models.nets import fold_batchnorm
    from manipseg.models.weights import network_from_weights

    net = fold_batchnorm(network_from_weights(weights)[0]).eval()
    graph = runtime.export_onnx(net, weights.with_suffix(".onnx"), read_header(weights)["sha256"])
    times = runtime.measure(net, runtime.OnnxNetwork(graph), bf16=False, side=64, repeats=1)
    assert set(times) == {"torch", "onnx"} and all(t > 0 for t in times.values())


def test_impossible_requests_say_why(weights, cache, tmp_path):
    with pytest.raises(ContractError, match="unknown runtime 'tensorrt'; choose one of auto, torch, onnx"):
        GSRDetector.from_weights(weights, runtime="tensorrt")
    net = build_network("compact", width=8, head_channels=8, boundary_channels=8, dct_stream=True).eval()
    dct = save_weights(tmp_path / "dct.safetensors", net, net.arch, net.arch_kwargs)
    with pytest.raises(ContractError, match="runtime 'onnx' cannot be used: no ONNX graph"):
        GSRDetector.from_weights(dct, runtime="onnx")
    assert GSRDetector.from_weights(dct).runtime == "torch"  # auto falls back
    # a network given without weights (no checksum to tie a graph to) runs in torch
    assert GSRDetector(model=build_network("compact", width=8, head_channels=8, boundary_channels=8)).runtime == "torch"


def test_once_onnx_is_chosen_the_detector_is_built_without_torch(weights, cache, tmp_path):
    """With the choice cached as ONNX Runtime, loading and running the detector never imports torch."""
    import subprocess
    import sys

    # cache the graph (export) and a choice of ONNX Runtime for this machine
    det = GSRDetector.from_weights(weights, runtime="onnx")
    from manipseg.header import read_info

    runtime._remember(runtime.speed_key(runtime.arch_of(read_info(weights)), True), {"torch": 2.0, "onnx": 1.0}, "onnx")
    code = (
        "import sys, numpy as np\n"
        "from manipseg.models.gsr import GSRDetector\n"
        f"det = GSRDetector.from_weights({str(weights)!r})\n"
        "pred = det.predict(np.full((80, 96, 3), 120, np.uint8))\n"
        "print(det.runtime, pred.extras['runtime'], 'torch' in sys.modules)\n"
    )
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(cache.parent)}
    env.pop("MANIPSEG_RUNTIME", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["onnx", "onnx", "False"]
    assert det.runtime == "onnx"


# ----- int8: the quantised graph ------------------------------------------------------------------------
def _spliced(astronaut):
    """The astronaut with the coffee cup pasted in: a map with something to find."""
    import cv2
    from skimage import data

    img = astronaut[100:356, 50:370].copy()
    img[60:160, 80:200] = cv2.resize(data.coffee(), (120, 100))  # bilinear: its aliasing is a trace
    return img


def _quantized(weights, image):
    """An int8 graph of ``weights`` beside them, its ranges measured on ``image``."""
    det = GSRDetector.from_weights(weights, bf16=False, runtime="onnx", min_side=0)
    feeds = [det._onnx.feed(image, *normalisation(image))]
    return runtime.quantize_graph(det._onnx.path, runtime.int8_graph_path(weights), feeds, note="one photo")


def test_int8_graph_follows_fp32_and_says_what_it_is(weights, cache, astronaut):
    img = _spliced(astronaut)
    graph = _quantized(weights, img)
    assert graph == weights.with_suffix(".int8.onnx") and graph.is_file()
    meta = runtime.graph_metadata(graph)
    assert meta["precision"] == "int8" and meta["calibration"] == "one photo"
    assert meta["weights_sha256"] == read_header(weights)["sha256"]  # the fp32 graph's identity is kept
    import onnx

    ops = {n.op_type for n in onnx.load(str(graph)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantised, not a copy
    fp32 = GSRDetector.from_weights(weights, bf16=False, runtime="onnx", min_side=0).predict(img)
    int8 = GSRDetector.from_weights(weights, runtime="int8", min_side=0)
    assert int8.runtime == "int8"
    q = int8.predict(img)
    assert q.extras["runtime"] == "int8"
    assert not np.array_equal(q.prob, fp32.prob)
    # the compact network is the hard case for 8 bits (its SRM residuals; measured: correlation 0.65 with
    # fp32, while the shipped int8 VGG-16 keeps MISD / NoSo within 0.01 F1): the map follows, the verdict holds
    assert fp32.prob.std() > 0.1
    assert np.corrcoef(q.prob.ravel(), fp32.prob.ravel())[0, 1] > 0.5
    assert np.abs(q.prob - fp32.prob).mean() < 0.1
    assert fp32.score > 0.5 and q.score > 0.5
    # its own pixel threshold, when the graph records one (scripts/quantize_int8.py fits it); else the weights'
    assert int8.threshold == fp32_threshold(weights)
    runtime.set_graph_metadata(graph, {"threshold": "0.123"})
    assert runtime.graph_metadata(graph)["precision"] == "int8"  # the other entries are kept
    assert GSRDetector.from_weights(weights, runtime="int8").threshold == pytest.approx(0.123)
    assert GSRDetector.from_weights(weights, runtime="int8", threshold=0.4).threshold == 0.4
    assert GSRDetector.from_weights(weights, runtime="onnx").threshold == fp32_threshold(weights)


def fp32_threshold(weights) -> float:
    from manipseg.header import read_info

    return float(read_info(weights)["threshold"])


def test_int8_without_its_graph_says_how_to_make_one(weights, cache, astronaut, tmp_path):
    with pytest.raises(ContractError, match=r"runtime 'int8' needs the int8 graph .* there is no such file; make it "
                                            r"with `python scripts/quantize_int8.py"):
        GSRDetector.from_weights(weights, runtime="int8")
    # another network's int8 graph beside these weights is refused
    graph = _quantized(weights, _spliced(astronaut))
    other = build_network("compact", width=8, head_channels=8, boundary_channels=8).eval()
    other_w = save_weights(tmp_path / "other.safetensors", other, other.arch, other.arch_kwargs)
    import shutil

    shutil.copyfile(graph, runtime.int8_graph_path(other_w))
    with pytest.raises(ContractError, match="belongs to other weights or is not an int8 graph"):
        GSRDetector.from_weights(other_w, runtime="int8")
    # and an fp32 graph is not taken for an int8 one
    shutil.copyfile(GSRDetector.from_weights(weights, runtime="onnx")._onnx.path, runtime.int8_graph_path(weights))
    with pytest.raises(ContractError, match="is not an int8 graph"):
        GSRDetector.from_weights(weights, runtime="int8")
    with pytest.raises(ContractError, match="runtime 'int8' runs the int8 graph of a weights file"):
        GSRDetector(model=other, runtime="int8")
    with pytest.raises(ValueError, match="already an int8 graph"):
        runtime.quantize_graph(runtime.int8_graph_path(other_w), tmp_path / "twice.onnx", [{}])


def test_the_default_runs_the_shipped_int8_graph_of_the_shipped_vgg16():
    w = bundled_weights("gsr-vgg16")
    graph = runtime.int8_graph_path(w)
    assert graph.is_file(), "python scripts/quantize_int8.py src/manipseg/weights/gsr-vgg16.safetensors"
    meta = runtime.graph_metadata(graph)
    assert meta["precision"] == "int8" and meta["weights_sha256"] == read_header(w)["sha256"]
    from manipseg.registry import load_detector

    fused = load_detector("gsr-fused")
    assert fused.artifact.runtime == "int8" and fused.artifact.min_side == fused.artifact.max_side == 384
    assert fused.artifact.threshold == pytest.approx(float(meta["threshold"]))  # its own, quantile-matched
    assert "quantile-matched to the fp32 threshold" in meta["threshold_note"]
