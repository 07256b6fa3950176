"""``gradscore report RUN_DIR``: the page agrees with the schedule's files."""

from html.parser import HTMLParser
import base64
import json
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("jinja2")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import gradscore  # noqa: E402
from gradscore import GradscoreError  # noqa: E402
from gradscore.report.run import write_run_report  # noqa: E402
from gradscore.schedule import DropSchedule  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(folder, *, n=600, ids=None, epochs=(2, 4, 6), **params):
    """A scheduled run on digits: a ridge "model" whose logits sharpen each epoch,
    with 30 labels flipped (the examples EPIC should isolate)."""
    x, y = load_digits(return_X_y=True)
    x, y = x[:n] / 16.0, y[:n].copy()
    rng = np.random.default_rng(0)
    flip = rng.choice(n, 30, replace=False)
    y[flip] = (y[flip] + 1 + rng.integers(0, 9, 30)) % 10
    ids = np.arange(n) if ids is None else np.asarray(ids)
    params = {"fraction": 0.2, **params}
    schedule = DropSchedule(warmup=epochs[0], freq=epochs[1] - epochs[0], stop=epochs[-1],
                            state_path=os.path.join(folder, "schedule.json"), **params)
    onehot = np.eye(10)[y]
    w = np.linalg.solve(x.T @ x + np.eye(64), x.T @ onehot)
    for e in epochs:
        logits = (x @ w) * (2 + e) + rng.normal(scale=0.05, size=(n, 10))
        path = os.path.join(folder, f"epoch_{e:03d}.h5")
        with gradscore.EpochWriter(path, epoch=e) as wr:
            wr.append(y, logits.astype(np.float32), x.astype(np.float32), ids)
        schedule.step_files(e, path)
    return schedule, ids, y


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.sections, self.imgs, self.links = [], [], [], []
        self.epoch_rows, self.dropped, self.text = [], [], []
        self._cells = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.imgs.append(a)
        if tag in ("link", "script", "a"):
            self.links.append(a.get("href") or a.get("src"))
        if tag == "tr" and "data-epoch" in a and "data-id" not in a:
            self._cells = []
            self.epoch_rows.append(self._cells)
        if tag == "tr" and "data-id" in a:
            self.dropped.append((a["data-id"], int(a["data-epoch"])))

    def handle_endtag(self, tag):
        if tag == "tr":
            self._cells = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cells is not None and data.strip():
            self._cells.append(data.strip())


def _parse(path):
    p = _Page()
    with open(path, encoding="utf-8") as fh:
        p.feed(fh.read())
    return p


def test_report_agrees_with_the_schedule_files(tmp_path):
    schedule, ids, y = make_run(str(tmp_path))
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "3 scored epochs (2, 4, 6)" in res.output
    page = _parse(str(tmp_path / "run-report.html"))
    assert page.sections == ["summary", "epochs", "classes", "scores", "dropped"]
    assert "script" not in page.tags and page.links == []
    assert len(page.imgs) == 2
    for img in page.imgs:
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == PNG_MAGIC
    # One table row per scored epoch, with the schedule's own counts.
    assert len(page.epoch_rows) == 3
    for cells, h in zip(page.epoch_rows, schedule.history):
        assert cells[0] == str(h["epoch"]) and cells[3] == str(h["flagged"])
        assert cells[4] == str(h["dropped"]) and cells[5] == str(h["kept"])
        assert cells[-1] == "agrees"
    # Each dropped id is listed once, at the epoch it left the keep-lists.
    keeps = {e: set(gradscore.read_keeplist(str(tmp_path / f"epoch_{e:03d}.keep.txt")))
             for e in (2, 4, 6)}
    expected, before = [], set(ids.tolist())
    for e in (2, 4, 6):
        expected += [(str(i), e) for i in sorted(before - keeps[e])]
        before = keeps[e]
    assert sorted(page.dropped) == sorted(expected) and len(expected) > 0


def test_report_context_per_class_sums(tmp_path):
    schedule, ids, y = make_run(str(tmp_path))
    _, ctx = write_run_report(str(tmp_path), str(tmp_path / "r.html"))
    total = [sum(c["cumulative"][i] for c in ctx["per_class"]) for i in range(3)]
    assert total == [h["n"] - h["kept"] for h in schedule.history]
    assert [c["n"] for c in ctx["per_class"]] == np.bincount(y, minlength=10).tolist()
    assert ctx["not_reproduced"] == [] and ctx["n_dropped"] == len(ids) - len(
        schedule.keep_ids)


def test_report_shows_where_the_total_cap_bit(tmp_path):
    schedule, ids, y = make_run(str(tmp_path), max_total_drop_fraction=0.04)
    capped = [h["total_cap_hit_classes"] for h in schedule.history]
    assert any(capped)  # the 4% cap over all scorings bit somewhere
    _, ctx = write_run_report(str(tmp_path))
    assert [r["total_cap"] for r in ctx["epochs"]] == capped
    # A class never loses more than the cap allows, over all scorings.
    for c in ctx["per_class"]:
        assert c["cumulative"][-1] <= int(0.04 * c["n"])
    html = open(tmp_path / "run-report.html", encoding="utf-8").read()
    first = next(i for i, c in enumerate(capped) if c)
    row = html.split(f'<tr data-epoch="{schedule.history[first]["epoch"]}">')[1].split("</tr>")[0]
    assert f'<td class="l hit">{", ".join(map(str, capped[first]))}</td>' in row


def test_report_without_exports_and_with_hostile_ids(tmp_path):
    ids = np.array([f"<marquee>x{i}</marquee>" for i in range(300)])
    make_run(str(tmp_path), n=300, ids=ids)
    os.remove(tmp_path / "epoch_002.h5")
    os.remove(tmp_path / "epoch_004.h5")
    path, ctx = write_run_report(str(tmp_path), max_listed=5)
    page = _parse(path)
    assert "marquee" not in page.tags  # the ids were escaped
    assert len(page.dropped) == 5 and page.dropped[0][0].startswith("<marquee>x")
    assert ctx["missing_exports"] == [2, 4]
    assert len(page.imgs) == 2  # epoch 6's export still gives labels and scores
    text = " ".join(page.text)
    assert "No export left for epochs 2, 4" in text
    # With no export at all: totals only.
    os.remove(tmp_path / "epoch_006.h5")
    path, ctx = write_run_report(str(tmp_path))
    assert ctx["per_class"] is None and ctx["score_plot"] is None
    assert len(_parse(path).epoch_rows) == 3


def test_report_errors(tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 1
    assert "found no DropSchedule state files" in res.output
    (tmp_path / "schedule.json").write_text(json.dumps({"format": "other"}))
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "not a DropSchedule state file" in res.output
    with pytest.raises(GradscoreError, match="not a folder"):
        write_run_report(str(tmp_path / "missing"))
