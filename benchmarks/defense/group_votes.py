"""Why ``groups`` misses some clean-label poison sets: what surrounds the poison group.

For each saved export of ``separation.py`` (``<dir>/<attack>_<target>.npz``:
labels, logits, penultimate features and the poison mask at the first drop
epoch), builds the poisons' class's single-linkage tree over its k-NN graph
in feature space (as ``groups`` does), takes the smallest tree node holding
at least 80% of the poisons, and counts the labels at the far end of the
k-NN edges (k = 20, all classes) that leave it: the votes ``groups`` judges
that node by. Also runs ``gradscore.score(..., method="groups")`` once and
reports the poisons' recall. A second table looks at the logits instead: the
class the poisons' softmax ranks second most often (``a``), and the
poisons' probability of ``a`` against the clean examples' of the same
class (median and 95th percentile): a signal that does not come from labels.
Usage::

    python -m benchmarks.defense.group_votes --dir benchmarks/out/defense/separation \\
        --attacks bullseye-polytope feature-collision
"""

import argparse
import glob
import os
import warnings

import numpy as np

import gradscore
from gradscore import neighbors as nb
from gradscore.gradients import DenseGradients
from gradscore.scoring.tasks import canonical_order as _canonical_order

from .signals import K, tree_nodes


def poison_node(lab, lg, ft, pm, share=0.8):
    c = int(np.bincount(lab[pm]).argmax())
    rows = np.flatnonzero(lab == c)
    rows = rows[_canonical_order(lg[rows], ft[rows])]
    ispo = pm[rows]
    for m in tree_nodes(ft[rows]):
        if ispo[m].sum() >= share * ispo.sum():
            return c, rows, rows[m]
    return c, rows, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="folder of separation.py's .npz exports")
    ap.add_argument("--attacks", nargs="+", required=True)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    margins = []
    print("| export | class size | poisons | node (poisons) | votes: own / other max / total | groups recall |")
    print("|---|---|---|---|---|---|")
    for attack in a.attacks:
        for f in sorted(glob.glob(os.path.join(a.dir, f"{attack}_*.npz"))):
            d = np.load(f)
            lab, lg, ft = d["labels"], d["logits"], d["features"]
            pm = d["is_poison"].astype(bool)
            c, rows, node = poison_node(lab, lg, ft, pm)
            nbr, _, _ = nb.kneighbors(DenseGradients(ft), K)
            inside = np.zeros(lab.size, dtype=bool)
            inside[node] = True
            far = nbr[node].ravel()
            votes = np.bincount(lab[far[~inside[far]]], minlength=lg.shape[1])
            other = np.delete(votes, c).max()
            r = gradscore.score(lab, lg, ft, method="groups")
            print(f"| {os.path.basename(f)} | {rows.size} | {pm.sum()} | {node.size} "
                  f"({pm[node].sum()}) | {votes[c]} / {other} / {votes.sum()} | "
                  f"{(~r.keep)[pm].mean():.2f} |")
            margins.append((os.path.basename(f), c) + runner_up(lab, lg, pm, c))
    print()
    print("| export | class | poisons' runner-up class a (share) | p(a): poisons, median "
          "| p(a): clean, median / 95th pct |")
    print("|---|---|---|---|---|")
    for name, c, a, share, pp, pc, pc95 in margins:
        print(f"| {name} | {c} | {a} ({share:.2f}) | {pp:.2g} | {pc:.2g} / {pc95:.2g} |")


def runner_up(lab, lg, pm, c):
    """The poisons' most common second class and p(that class), poisons vs clean."""
    z = lg.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    own = lab == c
    q = p.copy()
    q[:, c] = -1.0
    second = q.argmax(axis=1)
    a = int(np.bincount(second[pm & own]).argmax())
    clean = p[~pm & own, a]
    return (a, float(np.mean(second[pm & own] == a)), float(np.median(p[pm & own, a])),
            float(np.median(clean)), float(np.quantile(clean, 0.95)))


if __name__ == "__main__":
    main()
