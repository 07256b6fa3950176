"""Are the poisons isolated in gradient space? A diagnostic over the saved poison sets.

For every target of every attack, train the undefended victim as the
benchmark does and, at the first drop epoch (end of warm-up) and at the end
of training, score the poisoned training set with :func:`gradscore.score`
(``method="epic", fraction=0.2``, logit gradients, and the same with
last-layer gradients). For the poisons, report:

``density_pct``
    their k-NN density rank within their labelled class, as a percentile
    (0 = the most isolated example of the class, 50 = typical);
``low10``
    the share of poisons among the 10% least dense of their class;
``singleton``
    the share of poisons EPIC puts in singleton clusters, against the share
    of clean examples (``clean_singleton``) -- EPIC drops exactly these.

Usage::

    python -m benchmarks.defense.isolation [--out benchmarks/out/defense]
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "benchmarks.defense"

import gradscore                     # noqa: E402
from . import config as C            # noqa: E402
from . import data as D              # noqa: E402
from . import models as M            # noqa: E402
from . import shared as S            # noqa: E402
from . import victim as V            # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def class_percentile(scores, labels):
    """Rank of each row's score within its class, as a percentile (0 = lowest)."""
    pct = np.full(scores.size, np.nan)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        order = np.argsort(scores[rows], kind="stable")
        ranks = np.empty(rows.size)
        ranks[order] = np.arange(rows.size)
        pct[rows] = 100.0 * ranks / max(rows.size - 1, 1)
    return pct


def measure(model, x, y, is_poison, device, gradient):
    feats, logits = M.outputs(model, x, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = gradscore.score(y, logits, feats, method="epic", fraction=0.2, gradient=gradient)
    pct = class_percentile(res.scores, y)
    single = res.cluster_size <= 1
    return dict(density_pct=float(np.median(pct[is_poison])),
                low10=float(np.mean(pct[is_poison] < 10)),
                singleton=float(np.mean(single[is_poison])),
                clean_singleton=float(np.mean(single[~is_poison])))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(S.REPO, "benchmarks", "out", "defense"))
    ap.add_argument("--targets-dir", default=os.path.join(HERE, "targets"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-targets", type=int, default=None)
    ap.add_argument("--attacks", nargs="+", default=C.ATTACK_ORDER, choices=C.ATTACK_ORDER)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    path = os.path.join(args.out, "isolation.json")
    # Rows of attacks not measured this time are kept.
    rows = [r for r in (json.load(open(path)) if os.path.exists(path) else [])
            if r["attack"] not in args.attacks]
    for name in args.attacks:
        tpath = os.path.join(args.targets_dir, f"{name}.json")
        if not os.path.exists(tpath):
            continue
        cfg = C.attack_config(name)
        vc = cfg["victim"]
        splits = D.load(cfg["dataset"], seed=0)
        pre = S.pretrained_model(splits, 0, args.device, args.out)
        targets = json.load(open(tpath))["targets"][:args.max_targets]
        for t in targets:
            xp, yp, idx, _ = S.load_or_craft(name, cfg, splits, pre, t, args.device, args.out)
            is_p = np.zeros(len(xp), bool)
            is_p[idx] = True
            run = V._Run(V.make_victim(pre, splits.num_classes, vc, t["seed"]), vc)
            run.train(xp, yp, np.arange(len(xp)), 0, vc.drop_after, t["seed"], args.device)
            for grad in ("logits", "last-layer"):
                rows.append(dict(attack=name, target=t["target"], when="warm-up end",
                                 gradient=grad, **measure(run.model, xp, yp, is_p, args.device, grad)))
            run.train(xp, yp, np.arange(len(xp)), vc.drop_after, vc.epochs - vc.drop_after,
                      t["seed"], args.device)
            for grad in ("logits", "last-layer"):
                rows.append(dict(attack=name, target=t["target"], when="end of training",
                                 gradient=grad, **measure(run.model, xp, yp, is_p, args.device, grad)))
        S.log(f"isolation: {name} done ({len(targets)} targets)")
    rows.sort(key=lambda r: C.ATTACK_ORDER.index(r["attack"]))
    with open(path, "w") as fh:
        json.dump(rows, fh, indent=1)
    print(markdown(rows))
    return 0


def markdown(rows):
    keys = []
    for r in rows:
        k = (r["attack"], r["when"], r["gradient"])
        if k not in keys:
            keys.append(k)
    lines = ["| attack | when | gradient | poisons' median density percentile | poisons in "
             "least-dense 10% | poisons in EPIC-0.2 singletons | clean in singletons |",
             "|---|---|---|---|---|---|---|"]
    for k in keys:
        sel = [r for r in rows if (r["attack"], r["when"], r["gradient"]) == k]
        f = lambda m: np.mean([r[m] for r in sel])  # noqa: E731
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {f('density_pct'):.0f} | "
                     f"{100 * f('low10'):.0f}% | {100 * f('singleton'):.0f}% | "
                     f"{100 * f('clean_singleton'):.0f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
