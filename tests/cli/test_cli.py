import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import gradscore
from gradscore_cli.main import main
from conftest import make_data


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def epoch_file(tmp_path, digits_path):
    p = tmp_path / "epoch_05.h5"
    shutil.copy(digits_path, p)
    return p


def test_score_writes_default_keeplist_beside_input_and_a_summary(runner, epoch_file):
    res = runner.invoke(main, ["score", str(epoch_file)])
    assert res.exit_code == 0, res.output
    out = epoch_file.with_name("epoch_05.keep.txt")
    ids = [int(x) for x in out.read_text().split()]
    assert ids == sorted(ids)
    assert "kept" in res.output and "class" in res.output
    ep = gradscore.read_epoch(epoch_file)
    assert set(ids) <= set(ep.ids.tolist())
    assert 0 < len(ids) < ep.ids.size


def test_json_summary_and_json_keeplist_with_provenance(runner, epoch_file, tmp_path):
    out = tmp_path / "keep.json"
    res = runner.invoke(main, ["score", str(epoch_file), "-o", str(out), "--json",
                               "--fraction", "0.3", "--seed", "3"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["params"]["fraction"] == 0.3 and summary["output"] == str(out)
    doc = json.loads(out.read_text())
    meta = doc["metadata"]
    assert meta["gradscore_version"] == gradscore.__version__
    assert meta["params"]["method"] == "epic" and meta["seed"] == 3
    assert meta["epoch"] == 8
    assert len(meta["inputs"][0]["sha256"]) == 64
    assert sum(c["kept"] for c in meta["classes"].values()) == len(doc["ids"]) == summary["kept"]


def test_same_inputs_and_seed_give_byte_identical_keeplists(runner, epoch_file, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"k{i}.json"
        args = ["score", str(epoch_file), "-o", str(out), "-q", "--seed", "1"]
        assert runner.invoke(main, args).exit_code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_scores_table_csv_and_h5(runner, epoch_file, tmp_path):
    csv_path = tmp_path / "s.csv"
    res = runner.invoke(main, ["score", str(epoch_file), "--scores", str(csv_path), "-q",
                               "-o", str(tmp_path / "k.txt")])
    assert res.exit_code == 0, res.output
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ("id,label,score,cluster_size,flagged,decision,suggested_label,"
                        "suggestion_confidence,signal")
    assert len(lines) == 1 + 1497
    h5_path = tmp_path / "s.h5"
    assert runner.invoke(main, ["score", str(epoch_file), "--scores", str(h5_path), "-q",
                                "-o", str(tmp_path / "k.txt")]).exit_code == 0
    import h5py
    with h5py.File(h5_path) as f:
        assert set(f) == {"id", "label", "score", "cluster_size", "flagged", "decision",
                          "suggested_label", "suggestion_confidence", "signal"}


def test_previous_keeplist_makes_drops_cumulative(runner, epoch_file, tmp_path):
    k1, k2, k3 = tmp_path / "k1.txt", tmp_path / "k2.txt", tmp_path / "k3.txt"
    assert runner.invoke(main, ["score", str(epoch_file), "-o", str(k1), "-q"]).exit_code == 0
    res = runner.invoke(main, ["score", str(epoch_file), "-o", str(k2), "--previous", str(k1),
                               "--json"])
    assert res.exit_code == 0, res.output
    first = set(k1.read_text().split())
    second = set(k2.read_text().split())
    summary = json.loads(res.output)
    # The paper's rule scores everything again: the same export gives the same
    # clusters, so the second round drops nothing new.
    assert second == first
    assert summary["dropped_before"] == 1497 - len(first) and summary["dropped"] == 0
    assert summary["flagged"] == 1497 - len(first)
    # Scoring only the survivors re-clusters a thinner set and drops more.
    res = runner.invoke(main, ["score", str(epoch_file), "-o", str(k3), "--previous", str(k1),
                               "--cumulative", "survivors", "--json"])
    assert res.exit_code == 0, res.output
    third = set(k3.read_text().split())
    assert third < first
    assert json.loads(res.output)["dropped_before"] == 1497 - len(first)


def test_max_total_drop_fraction_bounds_a_class_over_rounds(runner, epoch_file, tmp_path):
    k1, k2 = tmp_path / "k1.txt", tmp_path / "k2.txt"
    assert runner.invoke(main, ["score", str(epoch_file), "-o", str(k1), "-q",
                                "--fraction", "0.5"]).exit_code == 0
    res = runner.invoke(main, ["score", str(epoch_file), "-o", str(k2), "--previous", str(k1),
                               "--cumulative", "survivors", "--fraction", "0.5",
                               "--max-total-drop-fraction", "0.1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    for c in summary["classes"]:
        assert c["dropped_total"] == c["dropped_before"] + c["dropped"]
        assert c["dropped"] <= max(0, int(0.1 * c["n"]) - c["dropped_before"])
    assert summary["total_cap_hit_classes"]
    res = runner.invoke(main, ["score", str(epoch_file), "-o", str(k2), "--previous", str(k1),
                               "--cumulative", "survivors", "--fraction", "0.5",
                               "--max-total-drop-fraction", "0.1"])
    assert "max-total-drop-fraction cap bit in" in res.output


def test_previous_with_unknown_ids_is_an_error(runner, epoch_file, tmp_path):
    prev = tmp_path / "prev.txt"
    prev.write_text("999999\n")
    res = runner.invoke(main, ["score", str(epoch_file), "--previous", str(prev)])
    assert res.exit_code == 1
    assert "Error: previous keep-list" in res.output and "999999" in res.output
    assert "Traceback" not in res.output


def test_failed_run_leaves_earlier_output_untouched(runner, epoch_file, tmp_path):
    out = tmp_path / "k.txt"
    out.write_text("earlier good result\n")
    bad = tmp_path / "bad.h5"
    labels, logits, _ = make_data(n=20)
    logits[4, 0] = np.nan
    import h5py
    with h5py.File(bad, "w") as f:
        f["labels"] = labels
        f["logits"] = logits
    res = runner.invoke(main, ["score", str(bad), "-o", str(out)])
    assert res.exit_code == 1
    assert "Error: " in res.output and "bad.h5: dataset 'logits' contains NaN in 1 row (first: 4)" in res.output
    assert out.read_text() == "earlier good result\n"
    assert sorted(os.listdir(tmp_path)) == ["bad.h5", "epoch_05.h5", "k.txt"]


@pytest.mark.parametrize("args,message", [
    (["--fraction", "0"], "'fraction' must be in (0.0, 1.0]; got 0.0"),
    (["-o", "keep.csv"], "a keep-list must end in .txt, .npy, .json"),
    (["--scores", "s.txt"], "a scores table must end in .csv, .h5"),
    (["--method", "spectral"], "method='spectral' needs features"),
])
def test_bad_options_give_one_line_errors(runner, tmp_path, monkeypatch, args, message):
    p = tmp_path / "e.h5"
    labels, logits, _ = make_data(n=40)
    gradscore.write_epoch(p, labels=labels, logits=logits)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(main, ["score", str(p)] + args)
    assert res.exit_code == 1
    assert res.output.startswith("Error: ") and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_missing_and_non_hdf5_inputs(runner, tmp_path):
    res = runner.invoke(main, ["score", str(tmp_path / "nope.h5")])
    assert res.exit_code == 1 and "nope.h5: no such file" in res.output
    p = tmp_path / "x.h5"
    p.write_bytes(b"\x00" * 100)
    res = runner.invoke(main, ["inspect", str(p)])
    assert res.exit_code == 1 and "not a readable HDF5 file" in res.output


def test_inspect_describes_files(runner, digits_path):
    res = runner.invoke(main, ["inspect", digits_path])
    assert res.exit_code == 0, res.output
    assert "examples: 1497  classes: 10  features: 32  epoch: 8" in res.output
    res = runner.invoke(main, ["inspect", digits_path, "--json"])
    info = json.loads(res.output)
    assert info["n"] == 1497 and sum(info["class_sizes"]) == 1497
    assert info["dtypes"]["logits"] == "float32" and info["id_kind"] == "int"


def test_small_class_warning_shown_unless_quiet(runner, tmp_path):
    p = tmp_path / "e.h5"
    labels, logits, _ = make_data(n=200)
    labels[:3] = 3
    labels[3:] = np.where(labels[3:] == 3, 0, labels[3:])
    gradscore.write_epoch(p, labels=labels, logits=logits)
    res = runner.invoke(main, ["score", str(p), "-o", str(tmp_path / "k.txt")])
    assert "Warning: class 3 has 3 examples, too few for k=20; using k=2" in res.output
    res = runner.invoke(main, ["score", str(p), "-o", str(tmp_path / "k.txt"), "-q"])
    assert res.output == ""


@pytest.mark.parametrize("cmd", [[], ["score"], ["inspect"]])
def test_help_has_examples(runner, cmd):
    res = runner.invoke(main, cmd + ["--help"])
    assert res.exit_code == 0
    assert "Example" in res.output
