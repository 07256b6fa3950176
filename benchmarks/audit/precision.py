"""Precision of the audit's flags: candidate thresholds that do not use the truth.

Usage::

    nice -n 10 python -m benchmarks.audit.precision            # every cached case
    python -m benchmarks.audit.measure --cases-only ...        # makes the cases first

Each cached case (benchmarks/out/audit/cases/*.npz: labels, out-of-fold
logits, encoder features, the planted rows) is scored once by label-support;
then each rule turns the support (higher = more typical) and the labels and
logits into a drop mask without looking at the planted rows:

``ls-0.15``
    label-support's fixed threshold (the audit's default);
``ls-rank-cl``
    the ``round(b n)`` rows of lowest support, ``b`` confident learning's
    estimate of the bad share from the out-of-fold head
    (:func:`gradscore.review.estimate_bad_share`);
``ls-min-rank-cl-head``
    the ``round(b n)`` rows whose weaker signal (the smaller of the
    neighbours' share and the head's probability of their label) is
    lowest, ``b`` estimated from label-support's own head (fitted without
    the suspects) instead of the out-of-fold one.

Peers on the same features and probabilities: deep-knn, groups, cleanlab's
``find_label_issues`` (``prune_by_noise_rate``) and Datalab's label issues.
Prints per case and the mean per attack: poison recall, clean rows
flagged, precision, at the case's prevalence; and, as the ceiling of any
threshold (one that reads the truth, so not a rule), the recall of the
support and of the weaker signal at 0.5% of clean rows flagged.
"""

import glob
import json
import os
import sys
import warnings

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "benchmarks.audit"

from . import methods as MM            # noqa: E402
from .measure import CASES             # noqa: E402


def support_parts(case):
    """label-support's support; its two parts; the bad share from its head and the probe's."""
    import gradscore
    from gradscore import neighbors as nb
    from gradscore.gradients import DenseGradients
    from gradscore.review import _estimate_bad_share
    from gradscore.selection.label_support import _support_parts

    y, x = case.labels, np.asarray(case.features, np.float32)
    c = case.num_classes
    idx, _, _ = nb.kneighbors(DenseGradients(x), 20, backend="brute")
    # The parts from a brute-force search (ties may order differently from the
    # audit's search); the support itself is the audit's.
    share, prob = _support_parts(y, x, idx, num_classes=c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        support = gradscore.score(y, case.logits, x, method="label-support").scores
    b_probe = _estimate_bad_share(y, case.logits, c)
    b_head = _estimate_bad_share(y, np.log(np.clip(prob, 1e-300, None)), c)
    return support, np.minimum(share, prob[np.arange(y.size), y]), b_probe, b_head


def lowest(score, m):
    drop = np.zeros(score.size, bool)
    drop[np.argsort(score, kind="stable")[:m]] = True
    return drop


#: Rules in the order of the table.
RULES = ("ls-0.15", "ls-rank-cl", "ls-min-rank-cl-head", "deep-knn", "groups", "cleanlab",
         "datalab-label")


def rules(case):
    support, weakest, b_probe, b_head = support_parts(case)
    n = support.size
    out = {
        "ls-0.15": support < 0.15,
        "ls-rank-cl": lowest(support, int(round(b_probe * n))),
        "ls-min-rank-cl-head": lowest(weakest, int(round(b_head * n))),
    }
    for name in RULES[3:]:
        out[name] = case.mask(name)
    return out, {"b_probe": b_probe, "b_head": b_head}, {"support": support,
                                                           "weaker signal": weakest}


def ceiling(score, bad, clean_rate=0.005):
    """The mask at the threshold that flags ``clean_rate`` of the clean rows: uses the
    truth, so not a rule; the most any threshold on ``score`` recalls at that rate."""
    return score < np.quantile(score[~bad], clean_rate)


def main():
    rows = []
    for path in sorted(glob.glob(os.path.join(CASES, "*.npz"))):
        z = np.load(path, allow_pickle=False)
        case = MM.Case(z["labels"], z["logits"], z["features"], seed=0)
        bad = np.zeros(case.labels.size, bool)
        for k in z.files:
            if k.startswith("kind_"):
                bad[z[k]] = True
        masks, est, scores = rules(case)
        for k, v in scores.items():
            masks[f"ceiling: {k} (truth-set threshold)"] = ceiling(v, bad)
        name = os.path.basename(path)[:-4]
        attack = name.rsplit("_", 1)[0]
        for rule, m in masks.items():
            tp = int((m & bad).sum())
            rows.append(dict(case=name, attack=attack, rule=rule, prevalence=bad.mean(),
                             recall=tp / bad.sum(), clean=(m & ~bad).sum() / (~bad).sum(),
                             precision=tp / max(m.sum(), 1), **est))
        print(name, f"prevalence {bad.mean():.3f} b_probe {est['b_probe']:.3f} "
              f"b_head {est['b_head']:.3f}", file=sys.stderr, flush=True)
    out = os.path.join(os.path.dirname(CASES), "precision.jsonl")
    with open(out, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    print(table(rows))


def table(rows):
    attacks = sorted({r["attack"] for r in rows})
    rules_ = list(dict.fromkeys(r["rule"] for r in rows))
    prev = {a: np.mean([r["prevalence"] for r in rows if r["attack"] == a]) for a in attacks}
    lines = ["| rule | " + " | ".join(f"{a} ({100 * prev[a]:.1f}% bad)" for a in attacks)
             + " |", "|---|" + "---|" * len(attacks)]
    for rule in rules_:
        cells = []
        for a in attacks:
            rs = [r for r in rows if r["rule"] == rule and r["attack"] == a]
            cells.append(f"{np.mean([r['recall'] for r in rs]):.2f} / "
                         f"{100 * np.mean([r['clean'] for r in rs]):.1f}% / "
                         f"{np.mean([r['precision'] for r in rs]):.2f}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
