"""``manipseg generate``: layout, manifest, preview, failures, and identical bytes on every backend."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from manipseg.cli import main
from manipseg.generate.runner import GenerateSpec, iter_local, iter_ray, write_dataset

KINDS = "splice,copymove,poisson,removal,enhance,sbi,authentic"


@pytest.fixture(scope="module")
def src_dir(tmp_path_factory) -> Path:
    from skimage import data

    d = tmp_path_factory.mktemp("cli_sources")
    for name in ("astronaut", "coffee", "chelsea"):
        cv2.imwrite(str(d / f"{name}.jpg"), getattr(data, name)()[:, :, ::-1])
    return d


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_dataset_and_preview(src_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = main(["generate", "--sources", str(src_dir), "--n", "9", "--kinds", KINDS, "--size", "96",
               "--out", str(out), "--seed", "3", "--preview", "--preview-count", "4", "--save-sources"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(9))
    spec = GenerateSpec(sources=[str(src_dir)], kinds=KINDS.split(","), n=9, size=96, seed=3, save_sources=True)
    ds = spec.dataset()
    for r in records:
        s = ds.sample(r["index"])
        assert r["kind"] == s.meta["kind"]
        img = cv2.imread(str(out / r["image"]))[:, :, ::-1]
        mask = cv2.imread(str(out / r["mask"]), cv2.IMREAD_GRAYSCALE)
        bnd = cv2.imread(str(out / r["boundary"]), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(img, s.image)
        assert np.array_equal(mask > 127, s.mask) and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(bnd > 127, s.boundary)
        assert r["authentic"] and np.array_equal(cv2.imread(str(out / r["authentic"]))[:, :, ::-1], s.target)
        assert (r["source"] is not None) == (s.source is not None)
        assert r["meta"]["seed"] == s.meta["seed"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["n"] == 9
    preview = cv2.imread(str(out / "preview.png"))
    assert preview is not None and preview.shape[0] > 4 * 96  # four rows of cells
    assert not list(out.rglob(".*"))  # no temporary files left behind
    assert "wrote 9 samples" in capsys.readouterr().out


def test_cli_workers_give_identical_bytes(src_dir, tmp_path):
    a, b = tmp_path / "one", tmp_path / "two"
    common = ["--sources", str(src_dir), "--n", "6", "--kinds", KINDS, "--size", "64", "--seed", "8"]
    assert main(["generate", *common, "--out", str(a)]) == 0
    assert main(["generate", *common, "--out", str(b), "--workers", "2"]) == 0
    assert _tree(a) == _tree(b)


def test_cli_rejects_bad_input(src_dir, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["generate", "--sources", str(src_dir), str(missing), "--n", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--sources", str(tmp_path / "empty"), "--n", "2", "--out", str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert main(["generate", "--sources", str(src_dir), "--n", "2", "--kinds", "splice,warp", "--out", str(tmp_path / "o")]) == 2
    assert "warp" in capsys.readouterr().err
    bad_cfg = tmp_path / "cfg.yaml"
    bad_cfg.write_text("region_aera: [0.1, 0.2]\n")
    assert main(["generate", "--sources", str(src_dir), "--n", "2", "--config", str(bad_cfg), "--out", str(tmp_path / "o")]) == 2
    assert "region_aera" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    assert main(["generate", "--sources", str(src_dir), "--n", "2", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_failed_samples_are_skipped_and_reported(src_dir, tmp_path):
    """A source that turns unreadable after the pool was built: skipped; with none left, samples fail cleanly."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.jpg").write_bytes(b"not a jpeg at all")
    spec = GenerateSpec(sources=[str(broken)], kinds=["splice"], n=2, size=64)
    records, failures = write_dataset(spec, tmp_path / "out", iter_local(spec))
    assert records == [] and [i for i, _ in failures] == [0, 1]
    assert "none of the 1 source photos can be read" in failures[0][1] and "bad.jpg" in failures[0][1]
    assert (tmp_path / "out" / "manifest.jsonl").read_text() == ""


def test_ray_backend_matches_local(src_dir, tmp_path):
    ray = pytest.importorskip("ray")
    spec = GenerateSpec(sources=[str(src_dir)], kinds=KINDS.split(","), n=6, size=64, seed=21)
    write_dataset(spec, tmp_path / "local", iter_local(spec))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        write_dataset(spec, tmp_path / "ray", iter_ray(spec, chunk=2))
    finally:
        ray.shutdown()
    assert _tree(tmp_path / "local") == _tree(tmp_path / "ray")
    assert len((tmp_path / "ray" / "manifest.jsonl").read_text().splitlines()) == 6
