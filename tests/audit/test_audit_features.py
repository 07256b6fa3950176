"""``gradscore audit --features FILE``: precomputed embeddings, no model.

The embeddings path must be the image audit's own way through the probe,
the method and the writers: the keep-list of ``--features emb.parquet
--probe`` is the image audit's, byte for byte, when the Parquet file holds
that audit's exported features.
"""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py")

from click.testing import CliRunner  # noqa: E402

from gradscore import GradscoreError  # noqa: E402
from gradscore.audit.embeddings import open_features  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402

import audit_data as AD  # noqa: E402


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def image_audit(tmp_path_factory):
    """An image audit with --probe on a folder where 3 images sit in the wrong class."""
    root = tmp_path_factory.mktemp("feat")
    images = root / "images"
    AD.image_folder(str(images), per_class=20)
    for src, dst in (("blue/img_003.png", "red/flip_a.png"),
                     ("green/img_004.png", "blue/flip_b.png"),
                     ("red/img_005.png", "green/flip_c.png")):
        shutil.move(images / src, images / dst)
    enc = AD.encoder(str(root / "enc.onnx"))
    out = root / "audit"
    r = run("audit", enc, images, "--probe", "--seed", "3", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    with h5py.File(out / "export.h5", "r") as f:
        exp = {k: f[k][()] for k in ("features", "labels", "logits", "ids")}
    exp["ids"] = [v.decode() for v in exp["ids"]]
    return {"root": root, "out": out, "export": exp}


def test_features_parquet_reproduces_the_image_audits_keep_list(image_audit):
    root, exp = image_audit["root"], image_audit["export"]
    emb = root / "emb.parquet"
    pq.write_table(pa.table({"embedding": list(exp["features"]), "label": exp["labels"],
                             "path": exp["ids"]}), emb)
    out = root / "from-features"
    r = run("audit", "--features", emb, "--id-column", "path", "--probe", "--seed", "3",
            "-o", out, "-q", "--json")
    assert r.exit_code == 0, r.output
    image_keep = open(image_audit["out"] / "keep.txt", "rb").read()
    assert open(out / "keep.txt", "rb").read() == image_keep
    kept = image_keep.decode().split()
    assert len(kept) < len(exp["ids"])           # the comparison covers real drops
    assert {"red/flip_a.png", "blue/flip_b.png", "green/flip_c.png"}.isdisjoint(kept)
    with h5py.File(out / "export.h5", "r") as f:
        np.testing.assert_array_equal(f["logits"][()], exp["logits"])
    s = json.loads(r.stdout)
    assert s["model"] is None and s["source"] == "embeddings" and s["mode"] == "probe"
    assert "precomputed embeddings: 'embedding' of emb.parquet (60 x 24)" in \
        s["features"]["from"]
    page = open(out / "report.html", encoding="utf-8").read()
    assert "precomputed embeddings" in page


def test_npz_npy_and_an_export_are_read_alike(image_audit, tmp_path):
    exp = image_audit["export"]
    np.savez(tmp_path / "emb.npz", embeddings=exp["features"].astype(np.float64),
             labels=exp["labels"], ids=np.array(exp["ids"]))
    np.save(tmp_path / "emb.npy", exp["features"])
    np.save(tmp_path / "y.npy", exp["labels"])
    a = open_features(tmp_path / "emb.npz")
    b = open_features(tmp_path / "emb.npy", labels_path=tmp_path / "y.npy")
    c = open_features(image_audit["out"] / "export.h5")
    for s in (a, b, c):
        np.testing.assert_array_equal(s.payloads(np.arange(60)), exp["features"])
        np.testing.assert_array_equal(s.labels, exp["labels"])
    assert a.ids.tolist() == exp["ids"] == c.ids.tolist()
    assert b.ids.tolist() == list(range(60))
    assert c.class_names == ["blue", "green", "red"] and c.logits is not None
    # An export holds the probe's logits: without --probe they are used as they are.
    out = tmp_path / "out"
    r = run("audit", "--features", image_audit["out"] / "export.h5", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    assert open(out / "keep.txt", "rb").read() == \
        open(image_audit["out"] / "keep.txt", "rb").read()


def test_bad_embeddings_are_refused_or_skipped(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], 10)
    x[7, 2] = np.nan
    pq.write_table(pa.table({"features": list(x), "label": y}), tmp_path / "nan.parquet")
    r = run("audit", "--features", tmp_path / "nan.parquet", "-o", tmp_path / "o1")
    assert r.exit_code == 1 and r.output.startswith("Error: ")
    assert "row 7" in r.output and "NaN or Inf" in r.output
    assert not (tmp_path / "o1").exists()
    r = run("audit", "--features", tmp_path / "nan.parquet", "--skip-bad", "-o",
            tmp_path / "o2", "-q", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["n"] == 29 and [k["id"] for k in s["skipped"]] == ["7"]
    pq.write_table(pa.table({"features": [[1.0, 2.0], [1.0]], "label": [0, 1]}),
                   tmp_path / "ragged.parquet")
    with pytest.raises(GradscoreError, match="same length in every row.*row 1 has 1"):
        open_features(tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"vec": list(x), "label": y}), tmp_path / "named.parquet")
    with pytest.raises(GradscoreError, match="none of 'features', 'embedding'.*"
                                             "--features-column"):
        open_features(tmp_path / "named.parquet")
    assert open_features(tmp_path / "named.parquet", features_column="vec").n_features == 4
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(GradscoreError, match="--labels"):
        open_features(tmp_path / "x.npy")
    r = run("audit", "enc.onnx", "--features", tmp_path / "x.npy", "-o", tmp_path / "o3")
    assert r.exit_code == 2 and "without a model" in r.output
    assert not os.path.exists(tmp_path / "o3")
