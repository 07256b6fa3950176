"""Smoke test of the defence benchmark harness (benchmarks/defense, --quick mode).

Runs the quick profile into a temporary folder and checks that every defence
produced every metric for every target. It does not assert any attack
success rate: that is what the benchmark measures, not a property of the code.
"""

import json
import math
import os

import pytest

# benchmarks/ is a folder of the repository, not an installed package.

pytest.importorskip("torch")
pytest.importorskip("art")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from benchmarks.defense import report, run  # noqa: E402
from benchmarks.defense.victim import default_defences  # noqa: E402

METRICS = ("success", "clean_acc", "poison_recall", "clean_dropped", "defence_seconds")


def test_quick_mode_produces_every_metric_for_every_defence(tmp_path):
    out = tmp_path / "out"
    docs = tmp_path / "docs"
    rc = run.main(["--quick", "--out", str(out), "--no-docs"])
    assert rc == 0

    rows = [json.loads(line) for line in (out / "results_backdoor.jsonl").read_text().splitlines()]
    names = {d.name for d in default_defences()}
    targets = {r["target"] for r in rows}
    assert len(targets) >= 2
    for t in targets:
        got = {r["defence"]: r for r in rows if r["target"] == t}
        assert set(got) == names, f"target {t}: missing {names - set(got)}"
        for name, r in got.items():
            for m in METRICS:
                v = r[m]
                assert isinstance(v, float) and math.isfinite(v), (t, name, m, v)
            assert 0.0 <= r["success"] <= 1.0
            assert 0.0 <= r["clean_acc"] <= 1.0
            assert 0.0 <= r["poison_recall"] <= 1.0
            assert 0.0 <= r["clean_dropped"] <= 1.0
            assert r["n_poisons"] > 0
        # The undefended victim drops nothing.
        assert got["none"]["n_dropped"] == 0

    # Targets and poison indices are saved, so reruns are comparable.
    saved = json.loads((out / "targets" / "backdoor.json").read_text())
    assert {t["target"] for t in saved["targets"]} == targets
    assert all(t["poison_idx"] and t["poison_sha"] for t in saved["targets"])

    # The summary and docs builders accept the results.
    summary = report.summarise(str(out))
    assert set(summary["attacks"]["backdoor"]["defences"]) == names
    report.write_docs(str(out), summary, json.loads((out / "run_meta.json").read_text()),
                      targets_dir=str(out / "targets"), docs_dir=str(docs))
    assert (docs / "defense-benchmark.md").stat().st_size > 0
    assert (docs / "defense-asr-vs-accuracy.png").stat().st_size > 0

    # A second run finds every target done and re-crafts nothing.
    before = (out / "results_backdoor.jsonl").read_text()
    assert run.main(["--quick", "--out", str(out), "--no-docs"]) == 0
    assert (out / "results_backdoor.jsonl").read_text() == before
    assert os.path.exists(out / "summary.json")

    # Skipping is per (target, defence): remove one defence's rows and ask for
    # it alone; only its rows come back, and they are the same as before.
    lines = before.splitlines()
    kept = [ln for ln in lines if json.loads(ln)["defence"] != "groups"]
    removed = [json.loads(ln) for ln in lines if json.loads(ln)["defence"] == "groups"]
    assert removed
    (out / "results_backdoor.jsonl").write_text("\n".join(kept) + "\n")
    assert run.main(["--quick", "--out", str(out), "--no-docs", "--defences", "groups"]) == 0
    after = [json.loads(ln) for ln in (out / "results_backdoor.jsonl").read_text().splitlines()]
    assert len(after) == len(lines)
    again = sorted((r for r in after if r["defence"] == "groups"), key=lambda r: r["target"])
    for a, b in zip(again, sorted(removed, key=lambda r: r["target"])):
        for m in ("success", "clean_acc", "poison_recall", "clean_dropped", "n_dropped"):
            assert a[m] == b[m], (m, a[m], b[m])


def test_target_draw_is_a_prefix_and_longer_runs_extend_it():
    import numpy as np
    ok = np.arange(3, 900, 2)

    def rows(n, draw):
        return run.draw_rows(ok, n, draw, np.random.default_rng(7))

    full = rows(25, 25)
    assert len(set(full)) == 25 and set(full) <= set(ok)
    # A shorter run scores a prefix of the full run's targets.
    assert list(rows(6, 25)) == list(full[:6])
    # A setting drawn with 12 targets keeps them when run with 25, and the
    # 13 new ones are other rows.
    twelve = rows(12, 12)
    extended = rows(25, 12)
    assert list(extended[:12]) == list(twelve)
    assert len(set(extended)) == 25 and set(extended) <= set(ok)
