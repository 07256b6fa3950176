"""``gradscore audit MODEL DATA --text-column text``: text datasets with an ONNX text model.

Everything is built here, offline: a generated text set with a
trigger-word backdoor and label flips (benchmarks/audit/textset.py), a
word-level tokenizer trained on it with ``tokenizers``, and small random
PyTorch text encoders exported to ONNX.
"""

import html
import json
import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pcsv = pytest.importorskip("pyarrow.csv")

from click.testing import CliRunner  # noqa: E402

from gradscore import read_keeplist  # noqa: E402
from gradscore.audit.text import check_text_size, open_text  # noqa: E402
from gradscore.limits import MAX_CELL_BYTES  # noqa: E402
from gradscore.report.html import shorten_text  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402

from benchmarks.audit import textset as T  # noqa: E402

N = 240
LONG = 60          # words in the rows made too long for the tokenizer (max_length 48)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    # Longer rows than the benchmark's: a small set still has a clear class signal.
    d = T.generate(N, num_classes=3, seed=0, poison_rate=0.03, flip_rate=0.03,
                   length=(20, 40))
    topics, _ = T.vocabulary(3)
    for r in np.flatnonzero(d["kind"] == "clean")[:2].tolist():
        # two clean rows made longer than the model's max length
        d["text"][r] = " ".join([topics[d["true_label"][r]][0]] * LONG)
    models = root / "models"
    models.mkdir()
    T.train_tokenizer(d["text"], models / "tokenizer.json")
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_file(str(models / "tokenizer.json")).get_vocab_size()
    T.export_encoder(models / "enc.onnx", vocab, width=128)
    T.export_encoder(models / "clf.onnx", vocab, width=32, head=True, num_classes=3,
                     token_type_ids=True)
    table = pa.table({"text": d["text"], "label": d["label"],
                      "key": [f"r{i:04d}" for i in range(N)]})
    pcsv.write_csv(table, root / "set.csv")
    pq.write_table(table, root / "set.parquet")
    with open(root / "set.jsonl", "w", encoding="utf-8") as fh:
        for t, y in zip(d["text"], d["label"].tolist()):
            fh.write(json.dumps({"text": t, "label": y}) + "\n")
    return {"root": root, "data": d, "enc": models / "enc.onnx", "clf": models / "clf.onnx",
            "tok": models / "tokenizer.json", "table": table, "vocab": vocab}


@pytest.fixture(scope="module")
def csv_audit(kit):
    out = kit["root"] / "csv-out"
    r = run("audit", kit["enc"], kit["root"] / "set.csv", "--text-column", "text", "--probe",
            "-o", out, "-q", "--json")
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_text_audit_flags_the_backdoor_and_flips(kit, csv_audit):
    out, s = csv_audit
    assert s["source"] == "csv" and s["n"] == N
    t = s["text"]
    assert t["pooling"] == "mean" and t["max_length"] == 48 and t["truncated"] == 2
    assert s["features"]["from"].startswith("mean of output 'last_hidden_state'")
    kept = set(read_keeplist(str(out / "keep.txt")).tolist())
    kind = kit["data"]["kind"]
    dropped = np.array([i not in kept for i in range(N)])
    attacked = kind != "clean"
    rates = (dropped[attacked].mean(), dropped[~attacked].mean(), s["probe"]["accuracy"])
    assert dropped[attacked].mean() >= 0.7, rates
    assert dropped[~attacked].mean() <= 0.1, rates
    page = open(out / "report.html", encoding="utf-8").read()
    assert 'id="text-info"' in page and "<b>2</b> example(s) truncated" in page
    shown = [i for i in np.flatnonzero(dropped)
             if html.escape(shorten_text(kit["data"]["text"][i]), quote=False) in page]
    assert shown                        # flagged rows show their text


def test_parquet_jsonl_and_hugging_face_give_the_csv_keep_list(kit, csv_audit):
    datasets = pytest.importorskip("datasets")
    root = kit["root"]
    ds = datasets.Dataset.from_dict(
        {"text": kit["data"]["text"], "label": kit["data"]["label"].tolist()},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["a", "b", "c"])}))
    ds.save_to_disk(str(root / "hf"))
    want = open(csv_audit[0] / "keep.txt", "rb").read()
    for data in ("set.parquet", "set.jsonl", "hf"):
        out = root / f"out-{data}"
        r = run("audit", kit["enc"], root / data, "--text-column", "text", "--probe", "-o",
                out, "-q")
        assert r.exit_code == 0, (data, r.output)
        assert open(out / "keep.txt", "rb").read() == want, data
    s = json.load(open(root / "out-hf" / "keep.json"))["metadata"]["audit"]
    assert s["class_names"] == ["a", "b", "c"] and s["source"] == "hf-dataset"


def test_id_column_pooling_and_a_classifier(kit, tmp_path):
    root = kit["root"]
    r = run("audit", kit["enc"], root / "set.parquet", "--text-column", "text", "--probe",
            "--id-column", "key", "--pooling", "cls", "-o", tmp_path / "a", "-q", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["text"]["pooling"] == "cls" and "first token" in s["features"]["from"]
    assert read_keeplist(str(tmp_path / "a" / "keep.txt")).tolist()[0].startswith("r0")
    r = run("audit", kit["enc"], root / "set.parquet", "--text-column", "text", "--probe",
            "--pooling", "output", "-o", tmp_path / "b")
    assert r.exit_code == 1 and "--pooling output needs one 2-D output" in r.output
    # A classifier (logits output, token_type_ids input): its own head, no probe.
    r = run("audit", kit["clf"], root / "set.csv", "--text-column", "text", "-o",
            tmp_path / "c", "-q", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["mode"] == "classifier" and s["probe"] is None
    assert s["features"]["tensor"] != "last_hidden_state"      # the head's input


def test_pooling_matches_a_hand_computation(kit):
    from gradscore.onnx.text import TextEncoder

    x = {"input_ids": np.array([[2, 7, 9, 3], [2, 8, 3, 0]]),
         "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]])}
    raw = TextEncoder(str(kit["enc"]), probe=True, features_output="last_hidden_state",
                      pooling="cls")
    h = raw.session.run(["last_hidden_state"], {k: v.astype(np.int64) for k, v in x.items()})[0]
    _, cls = raw.run(x)
    np.testing.assert_allclose(cls, h[:, 0], rtol=1e-6)
    _, mean = TextEncoder(str(kit["enc"]), probe=True).run(x)
    np.testing.assert_allclose(mean[1], h[1, :3].mean(0), rtol=1e-5)   # padding ignored
    np.testing.assert_allclose(mean[0], h[0].mean(0), rtol=1e-5)


# ------------------------------------------------------- bad and hostile input

def _csv(path, texts, labels):
    pcsv.write_csv(pa.table({"text": texts, "label": labels}), path)
    return path


def _audit_fails(kit, data, out, *extra, tokenizer=None):
    args = ["audit", kit["enc"], data, "--text-column", "text", "--probe", "-o", out, *extra]
    if tokenizer:
        args += ["--tokenizer", tokenizer]
    r = run(*args)
    assert r.exit_code == 1, r.output
    lines = r.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert not os.path.exists(out)
    return lines[0]


def _rows(kit, n=30):
    d = kit["data"]
    return list(d["text"][:n]), d["label"][:n].tolist()


def test_bad_rows_are_named_or_skipped_and_listed(kit, tmp_path):
    texts, labels = _rows(kit)
    texts[3] = "   "
    labels[8] = -2
    big = "lorem " * (10 * 2**20 // 6 + 1)        # a 10 MiB string, over the 8 MiB cell cap
    texts[11] = big
    data = _csv(tmp_path / "bad.csv", texts, labels)
    msg = _audit_fails(kit, data, tmp_path / "o1")
    assert "row 3" in msg and "is empty (only whitespace)" in msg
    r = run("audit", kit["enc"], data, "--text-column", "text", "--probe", "--skip-bad",
            "-o", tmp_path / "o2", "-q", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    why = {x["id"]: x["reason"] for x in s["skipped"]}
    assert set(why) == {"3", "8", "11"} and s["n"] == 27
    assert "label -2 is out of range" in why["8"] and "over the" in why["11"]
    assert not {3, 8, 11} & set(read_keeplist(str(tmp_path / "o2" / "keep.txt")).tolist())
    assert check_text_size(MAX_CELL_BYTES) is None and check_text_size(MAX_CELL_BYTES + 1)


def test_invalid_utf8_and_non_string_text(kit, tmp_path):
    texts, labels = _rows(kit)
    data = _csv(tmp_path / "u.csv", texts, labels)
    raw = open(data, "rb").read().replace(texts[4].encode(), b"caf\xe9 \xff\xfe", 1)
    open(data, "wb").write(raw)
    msg = _audit_fails(kit, data, tmp_path / "o1")
    assert "row 4" in msg and "not valid UTF-8" in msg
    r = run("audit", kit["enc"], data, "--text-column", "text", "--probe", "--skip-bad",
            "-o", tmp_path / "o2", "-q", "--json")
    assert r.exit_code == 0 and [x["id"] for x in json.loads(r.stdout)["skipped"]] == ["4"]
    with open(tmp_path / "n.jsonl", "w") as fh:
        for i, (t, y) in enumerate(zip(texts, labels)):
            fh.write(json.dumps({"text": None if i == 5 else t, "label": y}) + "\n")
    assert [(p.row, p.reason) for p in open_text(tmp_path / "n.jsonl").problems] == \
        [(5, "row 5: column 'text' is empty (null)")]
    with open(tmp_path / "num.jsonl", "w") as fh:
        for i, (t, y) in enumerate(zip(texts, labels)):
            fh.write(json.dumps({"text": 12 if i == 2 else t, "label": y}) + "\n")
    # pyarrow refuses a column that changes from string to number as a whole.
    assert "not readable JSON Lines" in _audit_fails(kit, tmp_path / "num.jsonl",
                                                     tmp_path / "o3")
    with open(tmp_path / "allnum.jsonl", "w") as fh:
        for y in labels:
            fh.write(json.dumps({"text": 7, "label": y}) + "\n")
    msg = _audit_fails(kit, tmp_path / "allnum.jsonl", tmp_path / "o4")
    assert "row 0" in msg and "is not a string (type int64)" in msg


def test_hostile_files_end_in_one_error_line(kit, tmp_path):
    texts, labels = _rows(kit)
    pq.write_table(pa.table({"body": texts, "label": labels}), tmp_path / "m.parquet")
    msg = _audit_fails(kit, tmp_path / "m.parquet", tmp_path / "o1")
    assert "has no column 'text'" in msg and "body" in msg
    data = _csv(tmp_path / "ok.csv", texts, labels)
    (tmp_path / "tok.json").write_text("{ this is not json")
    msg = _audit_fails(kit, data, tmp_path / "o2", tokenizer=tmp_path / "tok.json")
    assert "not a tokenizer.json (not JSON" in msg
    # A tokenizer with more tokens than the model's embedding table.
    bigger = T.train_tokenizer(kit["data"]["text"] + [f"extra{i}" for i in range(50)],
                               tmp_path / "big.json")
    msg = _audit_fails(kit, data, tmp_path / "o3", tokenizer=bigger)
    assert f"has {kit['vocab'] + 50} tokens" in msg and f"{kit['vocab']} rows" in msg
    r = run("audit", kit["enc"], data, "--probe", "-o", tmp_path / "o5")
    assert r.exit_code == 1 and "name the text with --text-column" in r.output
    (tmp_path / "x.txt").write_text("hello")
    msg = _audit_fails(kit, tmp_path / "x.txt", tmp_path / "o4")
    assert "not a text dataset" in msg


def test_a_tokenizer_that_knows_few_of_the_words_is_warned_about(kit, tmp_path):
    texts, labels = _rows(kit)
    data = _csv(tmp_path / "ok.csv", texts, labels)
    other = T.train_tokenizer(["alpha beta gamma delta"] * 5, tmp_path / "other.json")
    r = run("audit", kit["enc"], data, "--text-column", "text", "--probe", "--tokenizer",
            other, "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.output
    assert "Warning: " in r.output and "unknown token; it may not be the model's" in r.output
    s = json.loads(r.stdout)
    assert s["text"]["unknown_share"] > 0.9
