"""benchmarks/defense/report.py --partial: a section for runs still going, put
into the existing page without touching its complete tables."""

import json

import pytest


from benchmarks.defense import report  # noqa: E402

PAGE = "# Page\n\nintro\n\n## Results\n\n| complete table |\n\n## Later\n\ntext\n"
FINDINGS = ("## Earlier\n\nnot this\n\n## Realistic settings: attempts\n\neps 64: 1/4\n\n"
            "## Other\n\nnot this either\n<!-- after-results -->\nnor this\n")


def _results(out, targets):
    rows = []
    for t in targets:
        for d, s, rec in (("none", 1.0, 0.0), ("groups", 0.0, 0.8), ("trajectory", 0.0, 0.95)):
            rows.append(dict(attack="feature-collision-10pct", defence=d, target=t, success=s,
                             clean_acc=0.99, poison_recall=rec, clean_dropped=0.01 * (d != "none"),
                             defence_seconds=1.0, total_seconds=2.0))
    (out / "results_feature-collision-10pct.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n")


def test_partial_section_goes_before_results_once_and_leaves_the_page_alone(tmp_path):
    out, page, findings = tmp_path / "out", tmp_path / "page.md", tmp_path / "FINDINGS.md"
    out.mkdir()
    page.write_text(PAGE)
    findings.write_text(FINDINGS)
    _results(out, [0, 1])
    lines = report.partial_lines(str(out), ["feature-collision-10pct"], planned=25,
                                 findings=str(findings))
    report.write_partial(str(page), lines)
    text = page.read_text()
    assert text.replace("\n".join(lines) + "\n\n", "") == PAGE
    assert text.index(report.PARTIAL_BEGIN) < text.index("## Results")
    assert "feature-collision-10pct: 2 of 25" in text
    assert "eps 64: 1/4" in text
    assert "not this" not in text

    # Rerun with more targets finished: the section is replaced, not repeated.
    _results(out, [0, 1, 2])
    lines = report.partial_lines(str(out), ["feature-collision-10pct"], planned=25,
                                 findings=str(findings))
    report.write_partial(str(page), lines)
    text = page.read_text()
    assert text.count(report.PARTIAL_BEGIN) == 1 and text.count("## Results") == 1
    assert "3 of 25" in text and "2 of 25" not in text
    assert text.replace("\n".join(lines) + "\n\n", "") == PAGE


def test_partial_refuses_an_attack_without_results_and_a_page_without_a_place(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _results(out, [0])
    with pytest.raises(SystemExit, match="Error: no results for gradient-matching-10pct"):
        report.partial_lines(str(out), ["gradient-matching-10pct"], planned=25)
    page = tmp_path / "page.md"
    page.write_text("# no results heading\n")
    with pytest.raises(SystemExit, match="Error: .*page.md"):
        report.write_partial(str(page), ["x"])
    assert page.read_text() == "# no results heading\n"
