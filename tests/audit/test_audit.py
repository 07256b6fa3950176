"""``gradscore audit`` on datasets the auditor did not train on.

Image folders, Hugging Face datasets and Parquet in; an ONNX classifier or,
with ``--probe``, any encoder; hostile files refused or skipped. Data and
models are made here (tests/audit_data.py): no downloads.
"""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("PIL")
h5py = pytest.importorskip("h5py")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from gradscore import GradscoreError, read_keeplist  # noqa: E402
from gradscore.audit import cross_fit_probe, open_source  # noqa: E402
from gradscore.audit.decode import BadImage, decode, image_spec, open_image  # noqa: E402
from gradscore.audit.export import NEAR_CHANCE, head_agreement  # noqa: E402
from gradscore.audit.probe import stratified_folds  # noqa: E402
from gradscore.scoring.memory import SCORE_DEFAULTS  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402

import audit_data as AD  # noqa: E402
from conftest import blas_threads  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    ids = AD.image_folder(str(root / "images"))
    return {"root": root, "images": str(root / "images"), "ids": ids,
            "encoder": AD.encoder(str(root / "enc.onnx")),
            "wide": AD.encoder(str(root / "wide.onnx"), n_out=5)}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# ------------------------------------------------------------------ the probe

def test_probe_matches_scikit_learn_fold_by_fold():
    # The same objective fitted by scikit-learn on each fold's rows:
    # C * sum(CE) + |W|^2 / 2 is mean(CE) + alpha |W|^2 / 2 with C = 1 / (alpha n).
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 50)
    x = rng.normal(size=(150, 6)) + 1.2 * np.eye(3, 6)[labels]
    x = x * [1, 3, 0.5, 2, 1, 7] + 4       # unscaled columns: the probe standardises
    res = cross_fit_probe(labels, x, alpha=1e-2, tol=1e-9)
    xs = (x - x.mean(0)) / x.std(0)
    ref = np.zeros((150, 3))
    for f in range(5):
        tr = res.fold != f
        m = LogisticRegression(C=1 / (1e-2 * tr.sum()), tol=1e-10, max_iter=5000)
        ref[~tr] = m.fit(xs[tr], labels[tr]).decision_function(xs[~tr])
    # Logits are defined up to a per-row constant; compare centred.
    ours = res.logits - res.logits.mean(1, keepdims=True)
    ref -= ref.mean(1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    assert res.converged and res.accuracy == np.mean(ref.argmax(1) == labels)
    # float32 features: the same decisions.
    res32 = cross_fit_probe(labels, x.astype(np.float32), alpha=1e-2, tol=1e-9)
    np.testing.assert_array_equal(res32.logits.argmax(1), res.logits.argmax(1))


def test_each_example_is_scored_by_a_head_that_never_saw_it():
    # A lone mislabelled duplicate: a head that saw it would learn its label;
    # out of fold its logits side with its twin's class.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 4)) + 2.5 * np.eye(2, 4)[labels]
    x[0] = x[40] + 1e-3          # row 0 sits in class 1 but is labelled 0
    res = cross_fit_probe(labels, x, alpha=1e-4)
    assert res.logits[0].argmax() == 1


def _mixture(n, d, c, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    return labels, (rng.normal(size=(n, d)) + np.eye(c, d)[labels]).astype(np.float32)


def test_probe_bits_do_not_depend_onblas_threads():
    # Issue 24: on an EPYC runner, audit --probe and extract --probe wrote
    # logits one ulp apart because how BLAS split products over its threads
    # changed their last bits. Before the fix, 1 and 2 BLAS threads gave
    # different logits in every entry here (SciPy's L-BFGS-B and NumPy's
    # products both thread at this size).
    labels, x = _mixture(600, 64, 10)
    for features in (x, x.astype(np.float64)):
        with blas_threads(1):
            one = cross_fit_probe(labels, features, max_iter=60)
        with blas_threads(2):
            two = cross_fit_probe(labels, features, max_iter=60)
        np.testing.assert_array_equal(one.logits, two.logits)
        assert one.n_iter == two.n_iter


def test_stratified_folds_spread_each_class_and_depend_only_on_it():
    labels = np.array([0] * 23 + [1] * 7 + [2] * 3)
    fold = stratified_folds(labels, 5, random_state=3)
    for c in (0, 1, 2):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    more = np.concatenate([labels, [3] * 9])
    np.testing.assert_array_equal(stratified_folds(more, 5, random_state=3)[:33], fold)
    assert not np.array_equal(stratified_folds(labels, 5, random_state=4), fold)


def test_probe_refuses_bad_input():
    with pytest.raises(GradscoreError, match="'n_folds' must be an int >= 2"):
        cross_fit_probe([0, 1], np.zeros((2, 2)), n_folds=1)
    with pytest.raises(GradscoreError, match=r"features must have shape \(3, n_features\)"):
        cross_fit_probe([0, 1, 1], np.zeros((2, 2)))
    with pytest.raises(GradscoreError, match=r"features contains NaN in 2 rows \(first: 0, 1\)"):
        cross_fit_probe([0, 1, 0, 1, 0, 1], np.where(np.eye(6, 2) > 0, np.nan, 0.0))


def test_near_chance_threshold_is_a_quarter_of_the_way_to_perfect():
    labels = np.repeat([0, 1, 2, 3], 100)          # chance 0.25 -> threshold 0.4375
    assert 0.25 + NEAR_CHANCE * 0.75 == 0.4375
    for right, near in ((174, True), (176, False)):   # 43.5% and 44.0%
        pred = labels.copy()
        pred[right:] = (labels[right:] + 1) % 4
        agreement, chance, flagged = head_agreement(labels, pred)
        assert (agreement, chance, flagged) == (right / 400, 0.25, near)


# ----------------------------------------------------------------- decoding

def test_decode_hand_worked_pixels(tmp_path):
    px = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)
    path = str(tmp_path / "p.png")
    Image.fromarray(px).save(path)
    spec = image_spec(["n", 3, 2, 2], mean=(0.5,), std=(0.5,))
    x = decode(path, spec)
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], [[1, -1], [-1, 1]])       # red channel, (x-.5)/.5
    spec = image_spec(["n", 2, 2, 1])                               # NHWC grey
    g = decode(path, spec)[..., 0] * 255
    # Pillow's L: (299 R + 587 G + 114 B) / 1000, rounded.
    np.testing.assert_array_equal(np.round(g), [[76, 150], [29, 255]])


def test_image_spec_reads_layout_and_refuses_what_it_cannot_tell():
    assert image_spec(["n", 3, 32, 32]).layout == "nchw"
    assert image_spec([None, 224, 224, 3]).shape == (224, 224, 3)
    assert image_spec(["n", 3, None, None], size=(8, 12)).size == (8, 12)
    with pytest.raises(GradscoreError, match="leaves its input's height and width open; "
                                             "give the size"):
        image_spec(["n", 3, None, None])
    with pytest.raises(GradscoreError, match=r"input has shape \(\?, 64\)"):
        image_spec([None, 64])
    with pytest.raises(GradscoreError, match="fixes its input to 32x32 but --size is 8x8"):
        image_spec(["n", 3, 32, 32], size=(8, 8))
    with pytest.raises(GradscoreError, match="both --mean and --std"):
        image_spec(["n", 3, 4, 4], mean=(0.5,))
    with pytest.raises(GradscoreError, match="--std values must be > 0"):
        image_spec(["n", 3, 4, 4], mean=(0.5,), std=(0,))


def test_hostile_files_are_named_by_rule(tmp_path):
    good = str(tmp_path / "g.png")
    Image.fromarray(AD.draw(0, np.random.default_rng(0))).save(good)
    data = open(good, "rb").read()
    cases = {"truncated": (data[:len(data) // 2], "truncated or damaged"),
             "text": (b"hello, not an image", "not an image"),
             "empty": (b"", r"empty file \(0 bytes\)"),
             "bomb": (open(AD.bomb_png(str(tmp_path / "b.png")), "rb").read(),
                      "decompression bomb")}
    for payload, rule in cases.values():
        with pytest.raises(BadImage, match=rule):
            open_image(payload)
    # Below Pillow's own limit, gradscore's limit still holds (from the header).
    small = open(AD.bomb_png(str(tmp_path / "s.png"), 5000, 5000), "rb").read()
    with pytest.raises(BadImage, match="declares 5000 x 5000 = 25,000,000 pixels, more than "
                                       "max_pixels=1,000,000"):
        open_image(small, max_pixels=10**6)


# ------------------------------------------------------------ image folders

def test_audit_image_folder_with_probe(folder):
    out = folder["root"] / "out"
    r = run("audit", folder["encoder"], folder["images"], "--probe", "-o", out, "-q",
            "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    for name in ("report.html", "keep.txt", "keep.json", "scores.csv", "export.h5"):
        assert (out / name).is_file(), name
    assert not [n for n in os.listdir(out) if n.startswith(".")]     # no staging left
    kept = [line for line in open(out / "keep.txt").read().splitlines()]
    assert set(kept) <= set(folder["ids"]) and len(kept) == summary["kept"]
    assert summary["class_names"] == ["blue", "green", "red"]
    assert summary["probe"]["n_folds"] == 5 and summary["probe"]["accuracy"] > 0.9
    assert summary["features"]["tensor"] == "feat"
    meta = json.load(open(out / "keep.json"))["metadata"]
    assert meta["audit"]["class_names"] == ["blue", "green", "red"]
    # The audit's default method is label-support; score's stays EPIC.
    assert meta["params"]["method"] == "label-support"
    assert SCORE_DEFAULTS["method"] == "epic"
    with h5py.File(out / "export.h5", "r") as f:
        assert [v.decode() if isinstance(v, bytes) else v
                for v in f.attrs["class_names"]] == ["blue", "green", "red"]
        ids = [v.decode() for v in f["ids"][()]]
        assert ids == folder["ids"]                      # torchvision's order
        assert f["features"].shape == (36, 24)
    page = open(out / "report.html", encoding="utf-8").read()
    assert "out-of-fold accuracy" in page and "(green)" in page
    # extract --probe writes the same export.
    r = run("extract", folder["encoder"], folder["images"], "--probe", "-o",
            folder["root"] / "e.h5", "-q")
    assert r.exit_code == 0, r.output
    with h5py.File(out / "export.h5", "r") as a, h5py.File(folder["root"] / "e.h5", "r") as b:
        for name in ("labels", "ids", "features", "logits"):
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)


def test_audit_and_extract_probe_write_the_same_export_whateverblas_threads(tmp_path):
    # Issue 24: the two commands promise the same export. Run them with 1 and
    # 2 BLAS threads on an array file large enough for BLAS to thread (the
    # image folder above is too small to): before the fix every logit differed.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    inputs = rng.normal(size=(600, 3, 8, 8)).astype(np.float32)
    inputs[np.arange(600), labels % 3, labels // 3] += 3.0
    data = str(tmp_path / "d.npz")
    np.savez(data, inputs=inputs, labels=labels)
    enc = AD.encoder(str(tmp_path / "enc.onnx"), n_out=10, size=(8, 8), hidden=64)
    with blas_threads(1):
        r = run("audit", enc, data, "--probe", "-o", tmp_path / "audit", "-q")
    assert r.exit_code == 0, r.output
    with blas_threads(2):
        r = run("extract", enc, data, "--probe", "-o", tmp_path / "e.h5", "-q")
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "audit" / "export.h5", "r") as a, \
            h5py.File(tmp_path / "e.h5", "r") as b:
        for name in ("labels", "features", "logits"):
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)


def test_a_head_over_other_classes_is_refused_without_probe(folder):
    out = folder["root"] / "refused"
    r = run("audit", folder["wide"], folder["images"], "-o", out)
    assert r.exit_code == 1
    assert "Error: " in r.output and "has 5 columns but" in r.output
    assert "has 3 classes (from its class folders)" in r.output and "--probe" in r.output
    assert "Traceback" not in r.output and not out.exists()


def test_a_head_near_chance_is_warned_about(folder):
    # The encoder's random head has as many outputs as classes, but is not theirs.
    out = folder["root"] / "chance"
    r = run("audit", folder["encoder"], folder["images"], "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert "Warning: " in r.output and "its head may not be this dataset's" in r.output
    assert "use --probe" in r.output
    page = open(out / "report.html", encoding="utf-8").read()
    assert "near chance" in page


def test_encoder_without_head_gives_its_output_as_features(folder, tmp_path):
    enc = AD.encoder(str(tmp_path / "emb.onnx"), head=False, layout="nhwc")
    r = run("extract", enc, folder["images"], "--probe", "-o", tmp_path / "e.h5", "--json",
            "-q")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["features_output"] == "feat" and "no final linear layer" in info["features_from"]
    assert info["image"].startswith("RGB, resized to 16x16, NHWC")


HOSTILE = {
    "truncated": ("red/img_000.png", lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2),
                  "truncated or damaged"),
    "not-an-image": ("red/img_001.png", lambda p: open(p, "wb").write(b"<html>"),
                     "not an image"),
    "empty": ("green/img_002.png", lambda p: open(p, "wb").close(), r"empty file \(0 bytes\)"),
    "bomb": ("blue/huge.png", AD.bomb_png, "decompression bomb"),
    "empty-class": ("zebra/", os.makedirs, "class folder 'zebra' \\(label 3\\) holds no image"),
}


@pytest.fixture(scope="module")
def good_result(folder):
    out = folder["root"] / "good"
    assert run("audit", folder["encoder"], folder["images"], "--probe", "-o", out,
               "-q").exit_code == 0
    return out


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_stops_the_audit_and_keeps_the_earlier_result(case, folder, good_result,
                                                                   tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder["images"], data)
    name, spoil, rule = HOSTILE[case]
    spoil(str(data / name))
    before = {n: open(good_result / n, "rb").read() for n in os.listdir(good_result)}
    r = run("audit", folder["encoder"], data, "--probe", "-o", good_result)
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert [line.startswith("Error: ") for line in lines] == [True] and "Traceback" not in r.output
    assert name in r.output and __import__("re").search(rule, r.output), r.output
    assert {n: open(good_result / n, "rb").read() for n in os.listdir(good_result)} == before


def test_skip_bad_lists_every_skipped_file_and_why(folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder["images"], data)
    for name, spoil, _ in HOSTILE.values():
        spoil(str(data / name))
    open(data / "red" / "notes.txt", "w").write("not an example")
    out = tmp_path / "out"
    r = run("audit", folder["encoder"], data, "--probe", "--skip-bad", "-o", out, "--json",
            "-q")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    reasons = {x["id"]: x["reason"] for x in s["skipped"]}
    assert set(reasons) == {name for name, _, _ in HOSTILE.values()}
    for name, _, rule in HOSTILE.values():
        assert __import__("re").search(rule, reasons[name])
    assert s["n"] == 36 - 3 and s["class_names"][3] == "zebra"
    assert [x["id"] for x in s["ignored"]] == ["red/notes.txt"]
    kept = set(read_keeplist(str(out / "keep.txt")).tolist())
    assert not kept & set(reasons)
    page = open(out / "report.html", encoding="utf-8").read()
    for name in reasons:
        assert name in page
    assert json.load(open(out / "keep.json"))["metadata"]["audit"]["skipped"] == s["skipped"]


# ------------------------------------------------- Hugging Face and Parquet

@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    root = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    images = [Image.fromarray(AD.draw(int(c), rng)) for c in labels]
    names = [f"ex{i}" for i in range(30)]
    features = datasets.Features({"img": datasets.Image(),
                                  "y": datasets.ClassLabel(names=["cat", "dog", "fox"]),
                                  "name": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"img": images, "y": labels.tolist(), "name": names},
                                    features=features)
    ds.save_to_disk(str(root / "ds"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(root / "dd"))
    ds.to_parquet(str(root / "ds.parquet"))
    return root


def test_hugging_face_dataset_and_parquet(folder, hf):
    cols = ("--image-column", "img", "--label-column", "y")
    for data, extra in ((hf / "ds", ["--id-column", "name"]), (hf / "dd", ["--split", "train"])):
        r = run("extract", folder["encoder"], data, "--probe", *cols, "-o", hf / "e.h5", "-q",
                "--json", *extra)
        assert r.exit_code == 0, (data, r.output)
        info = json.loads(r.stdout)
        assert info["class_names"] == ["cat", "dog", "fox"] and info["n"] == 30
        assert info["source"] == "hf-dataset" and info["probe"]["accuracy"] > 0.9
        with h5py.File(hf / "e.h5", "r") as f:
            ids = f["ids"][()]
            assert ids[5] == (b"ex5" if extra[0] == "--id-column" else 5)
    # The whole audit on Parquet, thumbnails read back from its row groups.
    r = run("audit", folder["encoder"], hf / "ds.parquet", "--probe", *cols, "-o",
            hf / "out", "-q", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["source"] == "parquet" and s["class_names"] == ["cat", "dog", "fox"]
    assert read_keeplist(str(hf / "out" / "keep.txt")).dtype.kind == "i"
    assert open(hf / "out" / "report.html").read().count('class="thumb"') >= 3 * 8
    r = run("audit", folder["encoder"], hf / "dd", "--probe", "-o", hf / "x")
    assert r.exit_code == 1 and "DatasetDict with splits train; choose one with --split" \
        in r.output


def test_parquet_columns_of_the_wrong_type_and_repeated_ids(folder, hf, tmp_path):
    import pyarrow.parquet as pq

    r = run("audit", folder["encoder"], hf / "ds.parquet", "--probe", "--image-column", "img",
            "--label-column", "name", "-o", tmp_path / "o")
    assert r.exit_code == 1 and "column 'name' must hold integer class labels" in r.output
    r = run("audit", folder["encoder"], hf / "ds.parquet", "--probe", "--image-column", "y",
            "--label-column", "y", "-o", tmp_path / "o")
    assert r.exit_code == 1 and "column 'y' must hold encoded images" in r.output
    t = pq.read_table(hf / "ds.parquet")
    names = t.column("name").to_pylist()
    names[7] = names[3]
    pq.write_table(t.set_column(2, "name", __import__("pyarrow").array(names)),
                   tmp_path / "dup.parquet")
    args = ("extract", folder["encoder"], tmp_path / "dup.parquet", "--probe",
            "--image-column", "img", "--label-column", "y", "--id-column", "name", "-o",
            tmp_path / "o.h5")
    r = run(*args)
    assert r.exit_code == 1 and "id 'ex3' in row 7 repeats row 3's" in r.output
    r = run(*args, "--skip-bad", "--json", "-q")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["n"] == 29 and info["skipped"][0]["id"] == "ex3"


def test_open_source_lists_without_decoding(folder):
    src = open_source(folder["images"])
    assert src.kind == "image-folder" and src.n == 36 and src.class_names[2] == "red"
    assert src.ids.tolist() == folder["ids"] and src.labels.tolist() == [0] * 12 + [1] * 12 + \
        [2] * 12
    with pytest.raises(GradscoreError, match="no class folders"):
        open_source(os.path.join(folder["images"], "red"))
