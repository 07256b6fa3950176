"""``gradscore audit``: the HTML report is self-contained and says what it should."""

import base64
import csv
from html.parser import HTMLParser
import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("matplotlib")
pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

import gradscore  # noqa: E402
from gradscore import GradscoreError  # noqa: E402
from gradscore.audit import audit  # noqa: E402
from gradscore.report import image_shape_of  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402
from onnx_models import build_digits_model, linear_model, save  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects what the tests look at: tags, sections, images, links, cards."""

    def __init__(self):
        super().__init__()
        self.tags, self.sections, self.imgs, self.links = [], [], [], []
        self.cards, self.class_blocks, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.imgs.append(a)
        if tag == "a":
            self.links.append(a.get("href"))
        if tag == "link" or tag == "script":
            self.links.append(a.get("href") or a.get("src"))
        if tag == "div" and "data-id" in a:
            self.cards.append(a)
        if tag == "div" and "data-class" in a:
            self.class_blocks.append(int(a["data-class"]))

    def handle_data(self, data):
        self.text.append(data)


def _parse(path):
    p = _Page()
    with open(path, encoding="utf-8") as fh:
        p.feed(fh.read())
    return p


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    d = build_digits_model(str(folder))
    out = audit(d["model"], d["data"], str(folder / "report"), device="cpu", batch_size=512,
                per_class=5)
    return d, out


def test_report_parts(audited):
    d, out = audited
    folder = os.path.dirname(out["report"])
    page = _parse(out["report"])
    assert page.sections == ["summary", "distributions", "suspicious", "flagged", "skipped",
                             "files"]
    assert "script" not in page.tags
    text = " ".join(page.text)
    # The default method's scores are named: label support, not density.
    assert "1797" in text and "Scores: label support" in text
    assert "higher = more typical" in text and "denser" not in text
    assert "/Relu" in text or "feat" in text  # the features tensor is named
    # Every image is an embedded PNG; nothing is fetched from anywhere.
    assert len(page.imgs) == 1 + 10 * 5  # one plot + a thumbnail per listed example
    for img in page.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == PNG_MAGIC
    # Links point at the files beside the report, which exist.
    assert sorted(page.links) == ["export.h5", "keep.json", "keep.txt", "scores.csv"]
    for href in page.links:
        assert os.path.isfile(os.path.join(folder, href))
    assert sorted(page.class_blocks) == list(range(10))


def test_report_agrees_with_files(audited):
    d, out = audited
    with open(out["scores"], newline="", encoding="utf-8") as fh:
        table = {int(r["id"]): r for r in csv.DictReader(fh)}
    keep = gradscore.read_keeplist(out["keep"])
    kept = sorted(i for i, r in table.items() if r["decision"] == "kept")
    np.testing.assert_array_equal(keep, kept)
    assert out["summary"]["kept"] == len(kept)
    page = _parse(out["report"])
    by_class = {}
    for card in page.cards:
        row = table[int(card["data-id"])]
        assert card["data-decision"] == row["decision"]
        assert float(card["data-score"]) == pytest.approx(float(row["score"]))
        by_class.setdefault(int(row["label"]), []).append(row)
    # Per class: the listed examples are the dropped ones first, then lowest scores.
    for c, rows in by_class.items():
        everyone = [r for r in table.values() if int(r["label"]) == c]
        ranked = sorted(everyone, key=lambda r: (r["decision"] != "dropped",
                                                 float(r["score"]), int(r["id"])))
        assert [r["id"] for r in rows] == [r["id"] for r in ranked[:5]]


def test_cli_audit_flat_inputs_and_hostile_ids(tmp_path):
    # Flat (N, 64) inputs shown as 8x8 thumbnails; ids with HTML in them.
    model, _, _ = linear_model(tmp_path, c=3)
    path = save(model, str(tmp_path / "flat.onnx"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 64)).astype(np.float32)
    ids = np.array([f"<marquee>x{i}</marquee>" for i in range(90)])
    np.savez(tmp_path / "d.npz", inputs=x, labels=np.arange(90) % 3, ids=ids)
    res = CliRunner().invoke(cli, ["audit", path, str(tmp_path / "d.npz"), "-o",
                                   str(tmp_path / "rep"), "--image-shape", "8x8",
                                   "--method", "knn-density", "--drop-fraction", "0.1",
                                   "-k", "5", "--per-class", "4"])
    assert res.exit_code == 0, res.output
    assert "running on" in res.output and "report:" in res.output
    page = _parse(str(tmp_path / "rep" / "report.html"))
    assert "marquee" not in page.tags  # the ids were escaped, not interpreted
    assert "k-NN density in gradient space" in " ".join(page.text)
    assert len(page.cards) == 12
    assert all(c["data-id"].startswith("<marquee>x") for c in page.cards)
    assert sum(1 for i in page.imgs if i["alt"].startswith("input of id")) == 12
    res = CliRunner().invoke(cli, ["audit", path, str(tmp_path / "d.npz"), "-o",
                                   str(tmp_path / "rep2"), "--image-shape", "7x7"])
    assert res.exit_code == 1 and "'image_shape' (7, 7) holds 49 values" in res.output


def test_image_layouts():
    assert image_shape_of((1, 8, 8)) == ("chw", 1, 8, 8)
    assert image_shape_of((32, 32, 3)) == ("hwc", 32, 32, 3)
    assert image_shape_of((28, 28)) == ("hw", 28, 28)
    assert image_shape_of((64,)) is None
    assert image_shape_of((64,), (8, 8)) == ("hw", 8, 8)
    with pytest.raises(GradscoreError, match="must be \\(H, W\\) or \\(H, W, 1\\|3\\)"):
        image_shape_of((48,), (4, 4, 3, 1))
