"""The method registry: one record per method, read by the stages, the reports and the CLI."""

import numpy as np
import pytest
from click.testing import CliRunner

import gradscore
from gradscore import GradscoreError
from gradscore.scoring import methods as M
from gradscore.scoring.memory import SCORE_DEFAULTS
from gradscore_cli.main import main as cli

from conftest import make_data


def test_every_parameter_has_one_check_and_methods_read_only_known_parameters():
    assert set(M.PARAMETER_CHECKS) == set(SCORE_DEFAULTS)
    for m in M.METHODS.values():
        assert set(m.parameters) <= set(SCORE_DEFAULTS), m.name
        assert set(M.COMMON_PARAMETERS) <= set(SCORE_DEFAULTS)
        assert m.threshold_line in ("fixed", "robust", "dropped"), m.name
        assert (m.fixed_threshold is not None) == (m.threshold_line == "fixed"), m.name


def test_cli_choices_and_defaults_come_from_the_registry_and_score():
    opts = {p.name: p for p in cli.commands["score"].params}
    assert list(opts["method"].type.choices) == list(M.METHODS)
    for name, default in SCORE_DEFAULTS.items():
        key = "seed" if name == "random_state" else name
        if key in opts:
            assert opts[key].default == default, name
    res = CliRunner().invoke(cli, ["score", "--help"])
    assert res.exit_code == 0
    for name in M.METHODS:
        assert f"{name}:" in "".join(res.output.split())  # click may wrap at a hyphen


def test_report_names_each_methods_score():
    # The trajectory report once fell back to "Density score".
    assert M.METHODS["trajectory"].score_name == M.METHODS["groups"].score_name
    density = M.Method.__dataclass_fields__["score_name"].default
    for m in M.METHODS.values():
        assert (m.score_name == density) == (m.name in ("epic", "knn-density")), m.name


@pytest.mark.parametrize("name", [n for n, m in M.METHODS.items() if not m.spills])
def test_in_memory_methods_refuse_a_spill_with_the_records_reason(tmp_path, name):
    labels, logits, features = make_data(n=200, c=3, d=4)
    path = str(tmp_path / "e.h5")
    gradscore.write_epoch(path, labels=labels, logits=logits, features=features)
    why = M.METHODS[name].in_memory_why
    with pytest.raises(GradscoreError, match=f"method='{name}' {why[:30]}"):
        gradscore.score_files(path, method=name, spill="always")


def test_a_new_method_is_one_record(monkeypatch):
    """A toy class rule, registered as one record, runs through score()."""
    def lowest_logit_rule(data, rows, params, report, messages):
        s = data.logits[rows, report.label].astype(np.float64)
        return s, s <= np.quantile(s, 0.1), None

    toy = M.Method("toy", "drop the tenth with the lowest own logit.", lowest_logit_rule,
                   parameters=())
    monkeypatch.setitem(M.METHODS, "toy", toy)
    labels, logits, _ = make_data(n=300, c=3)
    res = gradscore.score(labels, logits, method="toy")
    for c in range(3):
        rows = np.flatnonzero(labels == c)
        own = logits[rows, c]
        assert set(rows[~res.keep[rows]]) == set(rows[own <= np.quantile(own, 0.1)])
    with pytest.raises(GradscoreError, match="method"):
        gradscore.score(labels, logits, method="no-such-method")
