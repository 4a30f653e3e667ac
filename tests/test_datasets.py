"""Dataset adapters on tiny fake releases built in tmp_path, one per benchmark naming scheme."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from manipseg.eval.datasets import DatasetError, UnknownFormatError, detect_format, open_dataset, read_mask

H, W = 24, 32


def put(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    assert cv2.imwrite(str(path), np.ascontiguousarray(arr)), path
    return path


def photo(seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def box_mask(value=255, background=0, h=H, w=W):
    m = np.full((h, w), background, np.uint8)
    m[4:12, 6:20] = value
    return m


EXPECTED = np.zeros((H, W), bool)
EXPECTED[4:12, 6:20] = True


def names(ds):
    return sorted(s.name for s in ds)


def test_generic_layout_pairing_and_missing_mask(tmp_path):
    for n in "abc":
        put(tmp_path / "images" / f"{n}.png", photo())
    put(tmp_path / "masks" / "a.png", box_mask())
    put(tmp_path / "masks" / "b_mask.png", box_mask())
    put(tmp_path / "authentic" / "x.jpg", photo(1))
    ds = open_dataset(tmp_path)
    assert ds.format == "generic" and names(ds) == ["a", "b", "x"]
    assert ds.n_authentic == 1 and ds.n_tampered == 2 and ds.quirks == {"missing_mask": 1}
    img, mask = ds.load(0)
    assert img.shape == (H, W, 3) and mask.dtype == bool and np.array_equal(mask, EXPECTED)
    auth = [i for i, s in enumerate(ds) if s.authentic][0]
    assert ds.load(auth)[1] is None


def test_mask_normalisation_variants(tmp_path):
    # 0/1 masks, RGB masks, palette masks, 16-bit masks, JPEG-noisy masks all read as the same bool mask
    put(tmp_path / "m01.png", box_mask(1))
    put(tmp_path / "rgb.png", np.repeat(box_mask()[:, :, None], 3, axis=2))
    Image.fromarray(box_mask(1)).convert("P").save(tmp_path / "pal.png")
    put(tmp_path / "m16.png", box_mask().astype(np.uint16) * 257)
    put(tmp_path / "noisy.jpg", box_mask(250, 5))
    for f in ["m01.png", "rgb.png", "m16.png", "noisy.jpg"]:
        assert np.array_equal(read_mask(tmp_path / f), EXPECTED), f
    pal = Image.open(tmp_path / "pal.png")
    assert pal.mode == "P" and np.array_equal(read_mask(tmp_path / "pal.png"), EXPECTED)
    put(tmp_path / "inv.png", box_mask(0, 255))
    assert np.array_equal(read_mask(tmp_path / "inv.png", "black"), EXPECTED)


def test_size_quirks_are_resized_and_counted(tmp_path):
    put(tmp_path / "images" / "big.png", photo())
    put(tmp_path / "masks" / "big.png", box_mask(h=2 * H, w=2 * W)[::1, ::1])  # twice the size
    stored = Image.fromarray(photo(h=W, w=H))  # stored portrait, EXIF says "rotate 90 clockwise" (6)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    stored.save(tmp_path / "images" / "rot.jpg", exif=exif.tobytes())
    raw_mask = np.zeros((W, H), np.uint8)
    raw_mask[0:3, 0:2] = 255  # top-left corner of the stored pixels
    put(tmp_path / "masks" / "rot.png", raw_mask)
    put(tmp_path / "images" / "empty.png", photo())
    put(tmp_path / "masks" / "empty.png", np.zeros((H, W), np.uint8))
    put(tmp_path / "images" / "inv.png", photo())
    put(tmp_path / "masks" / "inv.png", box_mask(0, 255))
    ds = open_dataset(tmp_path, "generic")
    for i in range(len(ds)):
        img, mask = ds.load(i)
        assert mask.shape == img.shape[:2]
    for i in range(len(ds)):  # loading twice does not double-count
        ds.load(i)
    assert ds.quirks == {"empty_mask": 1, "mask_exif_oriented": 1, "mask_resized": 1, "mostly_tampered_mask": 1}
    big = [i for i, s in enumerate(ds) if s.name == "big"][0]
    assert ds.load(big)[1].sum() == 4 * 7  # nearest-neighbour halving of an 8x14 box at 2x
    rot = [i for i, s in enumerate(ds) if s.name == "rot"][0]
    img, mask = ds.load(rot)
    # rotating 90 degrees clockwise moves the stored top-left corner to the top-right
    assert img.shape == (H, W, 3) and mask.sum() == 6 and mask[:2, W - 3:].all()


def test_tpgt_by_stem_and_by_order(tmp_path):
    a = tmp_path / "a"
    put(a / "Tp" / "1.jpg", photo())
    put(a / "Gt" / "1_gt.png", box_mask())
    put(a / "Tp" / "2.jpg", photo())
    ds = open_dataset(a)
    assert ds.format == "tpgt" and names(ds) == ["1"] and ds.quirks == {"missing_mask": 1}
    b = tmp_path / "b"
    put(b / "Tp" / "x1.jpg", photo())
    put(b / "Tp" / "x2.jpg", photo())
    put(b / "Gt" / "y1.png", box_mask())
    put(b / "Gt" / "y2.png", box_mask())
    ds = open_dataset(b, "tpgt")
    assert [(s.name, s.mask_path.name) for s in ds] == [("x1", "y1.png"), ("x2", "y2.png")]
    assert ds.quirks == {"paired_by_order": 2}


def test_imdl_benco_json(tmp_path):
    put(tmp_path / "Tp" / "6.jpg", photo())
    put(tmp_path / "Gt" / "6.png", box_mask())
    put(tmp_path / "Au" / "8.jpg", photo())
    rows = [["./Tp/6.jpg", "./Gt/6.png"], ["./Au/8.jpg", "Negative"], ["./Tp/404.jpg", "./Gt/404.png"]]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    ds = open_dataset(tmp_path / "list.json")
    assert ds.format == "json" and names(ds) == ["6", "8"] and ds.n_authentic == 1
    assert ds.quirks == {"missing_image": 1}
    (tmp_path / "bad.json").write_text(json.dumps([["only-one"]]))
    with pytest.raises(DatasetError, match="entry 0"):
        open_dataset(tmp_path / "bad.json")


@pytest.mark.parametrize("version,tp_name", [("casia1", "Sp_S_CND_A_pla0016_pla0016_0196"),
                                             ("casia2", "Tp_D_CND_M_N_ani00018_sec00096_00138")])
def test_casia(tmp_path, version, tp_name):
    sub = "Modified Tp/Tp/CM" if version == "casia1" else "Tp"
    gt = "CASIA 1.0 groundtruth/CM" if version == "casia1" else "CASIA 2 Groundtruth"
    put(tmp_path / sub / f"{tp_name}.jpg", photo())
    put(tmp_path / sub / "Sp_D_nomask_0001.jpg" if version == "casia1" else tmp_path / sub / "Tp_S_nomask.tif", photo())
    put(tmp_path / gt / f"{tp_name}_gt.png", box_mask())
    put(tmp_path / "Au" / "Au_ani_0001.jpg", photo())
    assert detect_format(tmp_path) == version
    ds = open_dataset(tmp_path)
    assert ds.format == version and ds.n_tampered == 1 and ds.n_authentic == 1
    assert ds.quirks == {"missing_mask": 1}
    t = [i for i, s in enumerate(ds) if not s.authentic][0]
    assert ds[t].name == tp_name and np.array_equal(ds.load(t)[1], EXPECTED)


def test_coverage_with_mask_size_quirk(tmp_path):
    put(tmp_path / "image" / "1.tif", photo())
    put(tmp_path / "image" / "1t.tif", photo(1))
    put(tmp_path / "image" / "2t.tif", photo(2))
    put(tmp_path / "mask" / "1forged.tif", box_mask())
    put(tmp_path / "mask" / "1copy.tif", box_mask())
    put(tmp_path / "mask" / "2forged.tif", box_mask(h=H + 2, w=W - 3))
    ds = open_dataset(tmp_path)
    assert ds.format == "coverage" and names(ds) == ["1", "1t", "2t"] and ds.n_authentic == 1
    for i in range(len(ds)):
        ds.load(i)
    assert ds.quirks == {"mask_resized": 1}
    assert [s.mask_path.name for s in ds if not s.authentic] == ["1forged.tif", "2forged.tif"]


def test_columbia_colour_coded_edgemask(tmp_path):
    put(tmp_path / "4cam_splc" / "canong3_nikond70_sub_01.tif", photo())
    put(tmp_path / "4cam_auth" / "canong3_02_sub_01.tif", photo(1))
    edge = np.zeros((H, W, 3), np.uint8)
    edge[:, :] = (230, 10, 10)  # red host region
    edge[EXPECTED] = (15, 240, 20)  # green spliced region
    put(tmp_path / "4cam_splc" / "edgemask" / "canong3_nikond70_sub_01_edgemask.jpg", edge)
    ds = open_dataset(tmp_path)
    assert ds.format == "columbia" and ds.n_authentic == 1 and ds.convention == "green"
    t = [i for i, s in enumerate(ds) if not s.authentic][0]
    assert np.mean(ds.load(t)[1] == EXPECTED) > 0.97  # JPEG edges may blur by a pixel


def test_dso1_inverted_masks(tmp_path):
    put(tmp_path / "DSO-1" / "splicing-01.png", photo())
    put(tmp_path / "DSO-1" / "normal-01.png", photo(1))
    put(tmp_path / "DSO-1-Fake-Images-Masks" / "splicing-01.png", box_mask(0, 255))
    ds = open_dataset(tmp_path)
    assert ds.format == "dso1" and names(ds) == ["normal-01", "splicing-01"]
    t = [i for i, s in enumerate(ds) if not s.authentic][0]
    assert np.array_equal(ds.load(t)[1], EXPECTED)


def test_nist16_reference_csv(tmp_path):
    put(tmp_path / "probe" / "NC2016_0001.jpg", photo())
    put(tmp_path / "probe" / "NC2016_0002.jpg", photo(1))
    put(tmp_path / "probe" / "NC2016_0003.jpg", photo(2))
    put(tmp_path / "reference" / "manipulation" / "mask" / "NC2016_0001.png", box_mask(0, 255))
    header = "TaskID|ProbeFileID|ProbeFileName|ProbeMaskFileName|DonorFileName|IsTarget"
    rows = ["manipulation|a|probe/NC2016_0001.jpg|reference/manipulation/mask/NC2016_0001.png||Y",
            "manipulation|a|probe/NC2016_0001.jpg|reference/manipulation/mask/NC2016_0001.png||Y",  # duplicate
            "manipulation|b|probe/NC2016_0002.jpg|||N",
            "manipulation|c|probe/NC2016_0003.jpg|||Y",  # target without a mask
            "manipulation|d|probe/NC2016_0404.jpg|||N"]
    csv_path = tmp_path / "reference" / "manipulation" / "NC2016-manipulation-ref.csv"
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    ds = open_dataset(tmp_path)
    assert ds.format == "nist16" and names(ds) == ["NC2016_0001", "NC2016_0002"] and ds.n_authentic == 1
    assert ds.quirks == {"missing_image": 1, "missing_mask": 1}
    t = [i for i, s in enumerate(ds) if not s.authentic][0]
    assert np.array_equal(ds.load(t)[1], EXPECTED)


def test_imd2020(tmp_path):
    d = tmp_path / "1a1ogs"
    put(d / "1a1ogs_orig.jpg", photo())
    put(d / "1a1ogs_0.jpg", photo(1))
    put(d / "1a1ogs_0_mask.png", box_mask())
    put(d / "1a1ogs_1.png", photo(2))
    ds = open_dataset(tmp_path)
    assert ds.format == "imd2020" and names(ds) == ["1a1ogs_0", "1a1ogs_orig"]
    assert ds.quirks == {"missing_mask": 1}


def test_comofod_with_postprocessed_variants(tmp_path):
    put(tmp_path / "001_F.png", photo())
    put(tmp_path / "001_O.png", photo(1))
    put(tmp_path / "001_B.png", box_mask())
    put(tmp_path / "001_M.png", np.zeros((H, W, 3), np.uint8))
    put(tmp_path / "001_F_JC1.jpg", photo())
    put(tmp_path / "001_O_JC1.jpg", photo(1))
    put(tmp_path / "002_F.png", photo(2))
    colour = np.zeros((H, W, 3), np.uint8)
    colour[EXPECTED] = (0, 200, 0)
    put(tmp_path / "003_F.png", photo(3))
    put(tmp_path / "003_M.png", colour)
    ds = open_dataset(tmp_path)
    assert ds.format == "comofod"
    assert names(ds) == ["001_F", "001_F_JC1", "001_O", "001_O_JC1", "003_F"]
    assert ds.quirks == {"missing_mask": 1}
    by = {s.name: i for i, s in enumerate(ds)}
    assert ds[by["001_F_JC1"]].mask_path.name == "001_B.png"
    assert np.array_equal(ds.load(by["003_F"])[1], EXPECTED)


def test_cvip_masks_beside_images(tmp_path):
    put(tmp_path / "D0" / "img1.png", photo())
    put(tmp_path / "D0" / "img1_mask.png", box_mask())
    put(tmp_path / "D1" / "img1.png", photo(1))
    put(tmp_path / "D1" / "masks" / "img1.png", box_mask())
    put(tmp_path / "D1" / "lonely.png", photo(2))
    ds = open_dataset(tmp_path, "cvip")
    assert names(ds) == ["D0__img1", "D1__img1"] and ds.quirks == {"missing_mask": 1}


def test_noso_layout_and_auto_detection(tmp_path):
    put(tmp_path / "images" / "01_mod.png", photo())
    put(tmp_path / "masks" / "01_mod.png", box_mask())
    put(tmp_path / "images" / "07_mod_02.png", photo())
    put(tmp_path / "masks" / "07_mod_02_mask.png", box_mask())
    ds = open_dataset(tmp_path)
    assert ds.format == "noso" and names(ds) == ["01_mod", "07_mod_02"]


def test_real_noso(shared_data):
    ds = open_dataset(shared_data / "dev" / "noso")
    assert ds.format == "noso" and len(ds) == 18 and ds.n_authentic == 0
    img, mask = ds.load(0)
    assert mask.shape == img.shape[:2] and 0 < mask.mean() < 0.5


def test_errors(tmp_path):
    with pytest.raises(UnknownFormatError, match="Did you mean 'coverage'"):
        open_dataset(tmp_path, "covrage")
    with pytest.raises(DatasetError, match="cannot recognise"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no usable samples"):
        open_dataset(tmp_path, "generic")


def test_convention_override(tmp_path):
    put(tmp_path / "DSO-1" / "splicing-01.png", photo())
    put(tmp_path / "DSO-1-Fake-Images-Masks" / "splicing-01.png", box_mask())  # white = tampered copy
    ds = open_dataset(tmp_path, convention="white")
    assert ds.format == "dso1" and np.array_equal(ds.load(0)[1], EXPECTED)
    wrong = open_dataset(tmp_path)
    wrong.load(0)
    assert wrong.quirks == {"mostly_tampered_mask": 1}
    with pytest.raises(DatasetError, match="unknown mask convention"):
        open_dataset(tmp_path, convention="red")


def test_subset_keeps_both_kinds(tmp_path):
    for i in range(6):
        put(tmp_path / "images" / f"t{i}.png", photo(i))
        put(tmp_path / "masks" / f"t{i}.png", box_mask())
    for i in range(3):
        put(tmp_path / "authentic" / f"a{i}.png", photo(i))
    ds = open_dataset(tmp_path)
    sub = ds.subset(3)
    assert [s.name for s in sub] == ["t0", "t1", "a0"]
    assert len(ds.subset(1)) == 1 and ds.subset(None) is ds and ds.subset(100) is ds
    sub.note("x", "t0")
    assert ds.quirks == {"x": 1}
