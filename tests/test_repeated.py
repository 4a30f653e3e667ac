"""The repeated-structure authentic sets (manipseg.eval.repeated) on a small COCO-like layout."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from manipseg.eval import repeated


def _layout(tmp_path, n_photos=7):
    """COCO-style folder: train2017 photos with an instance JSON (photo 0 holds 3 cups, the others one cup and
    one person each) and one val2017 photo with YOLO-seg labels (3 bowls)."""
    root = tmp_path / "natural" / "coco"
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "yolo-seg-labels" / "val2017").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for k in range(n_photos):
        img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / "train2017" / f"{k:012d}.jpg"), img)
        images.append({"id": k, "file_name": f"{k:012d}.jpg", "width": 320, "height": 240})
        boxes = [(10, 10, 80, 80), (110, 10, 80, 80), (210, 10, 80, 80)] if k == 0 else [(20 + 5 * k, 100, 90, 90)]
        for b in boxes:
            anns.append({"id": len(anns), "image_id": k, "category_id": 47, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0})
        anns.append({"id": len(anns), "image_id": k, "category_id": 1, "bbox": [200, 120, 100, 100], "area": 1e4, "iscrowd": 0})
    cats = [{"id": 1, "name": "person"}, {"id": 47, "name": "cup"}, {"id": 51, "name": "bowl"}]
    (root / "instances_train2017.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    cv2.imwrite(str(root / "images" / "val2017" / "000000000999.jpg"), rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
    lines = [f"51 {x:.3f} 0.1 {x + 0.2:.3f} 0.1 {x + 0.2:.3f} 0.5 {x:.3f} 0.5" for x in (0.05, 0.35, 0.65)]
    (root / "yolo-seg-labels" / "val2017" / "000000000999.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, root


def test_photos_with_repeated_objects_are_collected(tmp_path):
    _, root = _layout(tmp_path)
    instances = repeated.coco_instances(root)
    assert sum(i.label == "bowl" for i in instances) == 3  # YOLO class numbers are COCO category ids
    bowl = next(i for i in instances if i.label == "bowl")
    assert bowl.area == pytest.approx(0.2 * 0.4)
    found = repeated.repeated_photos(instances)
    assert [(p.name, label, n) for p, label, n in found] == [("000000000000.jpg", "cup", 3), ("000000000999.jpg", "bowl", 3)]
    assert repeated.repeated_photos(instances, exclude=()) == found  # one person per photo is not a repetition


def test_lookalike_sheets_take_each_tile_from_another_photo(tmp_path):
    data_root, root = _layout(tmp_path)
    instances = repeated.coco_instances(root)
    sheets = repeated.lookalike_sheets(instances, n=3, cols=3, rows=2, tile=64, gutter=8, seed=1)
    assert len(sheets) == 3
    for page, label, sources in sheets:
        assert label == "cup" and page.shape == (2 * 64 + 3 * 8, 3 * 64 + 4 * 8, 3)
        photos = [s.split("#")[0] for s in sources]
        assert len(set(photos)) == 6  # never two crops of one photo: they could share pixels
        assert (page[:8] == 255).all() and (page[:, :8] == 255).all()  # white gutters, no splice seams
    tile = sheets[0][0][8:72, 8:72]
    assert any(np.array_equal(tile, cv2.imread(str(root / "images" / "train2017" / p))[..., ::-1][y:y + 64, x:x + 64])
               for p in {s.split("#")[0] for s in sheets[0][2]} for y in range(0, 240 - 63, 8) for x in range(0, 320 - 63, 8))
    with pytest.raises(ValueError, match="multiples of 8"):
        repeated.lookalike_sheets(instances, tile=60)
    with pytest.raises(ValueError, match="no class has 12 objects"):
        repeated.lookalike_sheets(instances, cols=4, rows=3)
    counts = repeated.write_sets(data_root, tmp_path / "out", sheets=2)
    assert counts == {"collected": 2, "lookalike": 2}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (tmp_path / "out" / "collected" / manifest["collected"][0]["file"]).read_bytes() == \
        (root / "images" / "train2017" / "000000000000.jpg").read_bytes()  # copied unchanged
    assert len(list((tmp_path / "out" / "lookalike").glob("*.jpg"))) == 2


def test_missing_annotations_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        repeated.coco_instances(tmp_path)
