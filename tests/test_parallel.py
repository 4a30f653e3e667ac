"""Parallel batch analysis (manipseg.parallel): the same bytes from 1 worker, 2 workers and Ray; inputs
streamed; a run killed half-way and resumed analyses only the rest."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from manipseg.cli import main
from manipseg.io import save_jpeg, save_png
from manipseg.parallel import PoolSpec, WorkerPool


def _square_state(offset: int) -> int:
    return offset


def _square(offset: int, x: int) -> tuple[int, int]:
    return x, x * x + offset


def _drawn_counter(n: int, drawn: list[int]):
    for i in range(n):
        drawn.append(i)
        yield i


@pytest.mark.parametrize("spec", [PoolSpec(), PoolSpec(workers=2)], ids=["in-process", "2-processes"])
def test_pool_results_in_order_and_inputs_streamed(spec):
    drawn: list[int] = []
    with WorkerPool(_square_state, (7,), spec) as pool:
        out = []
        for result in pool.imap(_square, _drawn_counter(40, drawn), window=3):
            out.append(result)
            # never more than the window read ahead of what has been handed back
            assert len(drawn) - len(out) <= 3
    assert out == [(i, i * i + 7) for i in range(40)]


def test_pool_unordered_gives_every_result():
    with WorkerPool(_square_state, (0,), PoolSpec(workers=2)) as pool:
        out = sorted(pool.imap(_square, range(25), ordered=False))
    assert out == [(i, i * i) for i in range(25)]


def test_threads_shared_among_workers():
    assert PoolSpec(workers=2).threads_per_worker(cpus=2) == 1
    assert PoolSpec(workers=1).threads_per_worker(cpus=8) == 8
    assert PoolSpec(workers=3).threads_per_worker(cpus=8) == 2
    assert PoolSpec(workers=4).threads_per_worker(cpus=2) == 1  # never zero
    with pytest.raises(ValueError, match="workers must be at least 1"):
        PoolSpec(workers=0)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, astronaut, coffee):
    """Five small photos (JPEG and PNG, different sizes) and one corrupt file."""
    d = tmp_path_factory.mktemp("batch")
    save_jpeg(d / "a.jpg", astronaut[:256, :320], quality=90)
    save_png(d / "b.png", coffee[:200, :300])
    save_jpeg(d / "c.jpg", astronaut[200:392, 100:356], quality=80)
    save_png(d / "d.png", coffee[100:356, 200:456])
    save_jpeg(d / "e.jpg", np.ascontiguousarray(coffee[::2, ::2]), quality=95)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def _results(out):
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("seconds", None)
    probs = {p.name: p.read_bytes() for p in sorted(out.glob("*.prob.png"))}
    masks = {p.name: p.read_bytes() for p in sorted(out.glob("*.mask.png"))}
    return records, probs, masks


@pytest.mark.parametrize("network_runtime", ["auto", "onnx"])
def test_predict_bit_identical_with_1_and_2_workers_and_ray(photo_dir, tmp_path, monkeypatch, network_runtime):
    if network_runtime != "auto":
        pytest.importorskip("onnxruntime")
        monkeypatch.setenv("MANIPSEG_RUNTIME", network_runtime)
    runs = {"one": [], "two": ["--workers", "2"]}
    if __import__("importlib").util.find_spec("ray") is not None:
        runs["ray"] = ["--ray"]
    got = {}
    for name, extra in runs.items():
        out = tmp_path / name
        assert main(["predict", str(photo_dir), "--model", "gsr-fused", "--out", str(out), "--no-progress",
                     *extra]) == 1  # the corrupt file fails, the rest go on
        got[name] = _results(out)
    records, probs, masks = got["one"]
    assert len(records) == 6 and len(probs) == 5
    assert sum("error" in r for r in records) == 1 and "broken.jpg" in next(r["error"] for r in records if "error" in r)
    for name in runs:
        assert got[name][0] == records, name  # same records, same (input) order
        assert got[name][1] == probs, name    # bit-identical probability maps
        assert got[name][2] == masks, name


def test_evaluate_with_workers_gives_the_same_report(tmp_path, astronaut):
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        img = astronaut[i * 40:i * 40 + 160, i * 50:i * 50 + 200].copy()
        mask = np.zeros(img.shape[:2], np.uint8)
        mask[30:90, 40:120] = 255
        img[mask > 0] = np.clip(img[mask > 0] + rng.normal(0, 12, (int((mask > 0).sum()), 3)), 0, 255)
        save_png(ds / "images" / f"s{i}.png", img)
        save_png(ds / "masks" / f"s{i}.png", mask)
    reports = []
    for name, extra in (("one", []), ("two", ["--workers", "2"])):
        assert main(["evaluate", str(ds), "--model", "noi", "--out", str(tmp_path / name), "--no-progress",
                     "--attack", "jpeg:80", *extra]) == 0
        rep = json.loads((tmp_path / name / "report.json").read_text())
        for key in ("created", "timing", "files"):
            rep.pop(key, None)
        reports.append(rep)
    assert reports[0] == reports[1]
    assert reports[0]["runs"]["clean"]["detector"]["protocols"]["best_dataset"]["f1"] > 0.2


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_killed_run_resumes_with_only_the_rest(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    n = 40
    for i in range(n):  # 40 photos of 384 x 384 with gsr-fused: several seconds, interrupted after 5
        y, x = (i * 37) % 120, (i * 53) % 120
        save_png(src / f"img{i:02d}.png", astronaut[y:y + 384, x:x + 384])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "manipseg", "predict", str(src), "--model", "gsr-fused", "--out", str(out),
           "--workers", "2", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while len(_lines(out / "predictions.jsonl")) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    first = [json.loads(line) for line in _lines(out / "predictions.jsonl")]
    assert 5 <= len(first) < n
    assert all("error" not in r for r in first)
    assert all((out / f"{r['stem']}.prob.png").is_file() for r in first)
    assert not list(out.glob(".*"))  # no temporary files left by the interruption

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"({len(first)} kept from the earlier run)" in done.stdout
    final = [json.loads(line) for line in _lines(out / "predictions.jsonl")]
    assert sorted(r["input"] for r in final) == sorted(str(p) for p in src.glob("*.png"))  # each once
    assert final[:len(first)] == first  # the earlier results kept as they were
    rows = sqlite3.connect(out / "index.sqlite").execute("select count(*), count(distinct input) from results").fetchone()
    assert rows == (n, n)
    assert len(list(out.glob("*.prob.png"))) == n


def test_ray_flag_takes_no_value_from_the_inputs():
    from manipseg.cli import build_parser

    parser, _ = build_parser()
    args = parser.parse_args(["predict", "--ray", "photos/", "more.jpg"])
    assert args.ray is True and args.ray_address is None and args.inputs == ["photos/", "more.jpg"]
    args = parser.parse_args(["evaluate", "bench/", "--ray-address", "auto"])
    assert args.ray_address == "auto" and args.dataset == "bench/"


def _failing_state() -> None:
    raise FileNotFoundError("weights.safetensors is not on this node")


def test_a_worker_that_cannot_start_says_why():
    from manipseg.parallel import PoolError

    with pytest.raises(PoolError, match="a worker could not start: FileNotFoundError: weights.safetensors"):
        with WorkerPool(_failing_state, (), PoolSpec(workers=2)) as pool:
            list(pool.imap(_square, range(3)))


def test_ray_refuses_more_workers_than_cpus_instead_of_waiting_forever():
    ray = pytest.importorskip("ray")
    from manipseg.parallel import PoolError, cpu_count

    too_many = 4 * cpu_count()
    with pytest.raises(PoolError, match=f"{too_many} Ray workers .* need {too_many} CPUs"):
        with WorkerPool(_square_state, (0,), PoolSpec(workers=too_many, ray=True, threads=1)):
            pass
    assert not ray.is_initialized()  # the instance started for the pool is shut down again
