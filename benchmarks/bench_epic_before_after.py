"""Drops of another gradscore version against the authors' rule, on the same real exports.

For the before/after figures of issue 8: run it with the gradscore to
measure first on the path, e.g. a checkout of the commit before the fix::

    git worktree add /tmp/gs-before f917672
    PYTHONPATH=/tmp/gs-before python benchmarks/bench_epic_before_after.py --reference-repo PATH

It prints, per fraction, each of two cumulative rounds' drops against the
authors' code (as ``bench_epic_reference.py`` runs it, numbering fixed) and
the drops of scoring the first export three times in a row with
``active=`` the previous keep mask.
"""

import argparse
import inspect
import os
import sys

import numpy as np

import gradscore  # the version on the path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(HERE)
from bench_epic_reference import jaccard, load_coreset, reference_rounds  # noqa: E402
from real_exports import make_exports  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-repo", required=True)
    ap.add_argument("--n", type=int, default=25_000)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    a = ap.parse_args()
    print("gradscore from", os.path.dirname(gradscore.__file__))
    eps = [gradscore.read_epoch(p) for p in make_exports(a.n, (5, 7))]
    coreset = load_coreset(a.reference_repo)
    grads = [(e.labels, gradscore.gradients.logit_gradients(e.labels, e.logits)) for e in eps]
    accepted = inspect.signature(gradscore.score).parameters
    uncapped = {k: 1.0 for k in ("max_drop_fraction", "max_total_drop_fraction")
                if k in accepted}
    for f in a.fractions:
        ref = reference_rounds(coreset, grads, f, eps[0].num_classes, fixed=True, seed=0)
        active = None
        for r, e in enumerate(eps):
            active = gradscore.score(e.labels, e.logits, fraction=f, active=active,
                                     **uncapped).keep
            print(f"fraction {f} round {r + 1}: reference drops {(~ref[r]).sum()}, this "
                  f"gradscore {(~active).sum()}, Jaccard {jaccard(~ref[r], ~active):.3f}")
        active, drops = None, []
        for _ in range(3):
            active = gradscore.score(eps[0].labels, eps[0].logits, fraction=f, active=active,
                                     **uncapped).keep
            drops.append(int((~active).sum()))
        print(f"fraction {f}: the same export scored 3 times drops {drops} "
              f"(of {active.size})", flush=True)


if __name__ == "__main__":
    main()
