"""gradscore's EPIC against the authors' code, on real exports: one round and two cumulative rounds.

The reference is the authors' ``utils/coreset.py`` (github YuYang0901/EPIC)
run as is, with the submodlib it calls (``pip install "gradscore[reference]"``
brings ``submodlib-py``), followed by the few lines of their training script
that turn its output into a training subset:

- ``get_subset``: ``B = int(subset_size * N)`` over all N examples,
  ``get_orders_and_weights(B, grads, "euclidean", y=labels, equal_num=False,
  num_classes=C)``, keep the examples whose cluster has weight
  ``> cluster_thresh``;
- ``train``: at a drop epoch, keep only the subset members with
  ``times_selected == epoch`` (trained on at every epoch before).

Their code is not part of gradscore; point ``--reference-repo`` at a
checkout of it. The authors' ``coreset.py`` numbers class c's clusters from
``c * budget_c``, which sends clusters to other classes' weights whenever
class budgets differ; the "fixed" reference numbers them from the sum of the
earlier classes' budgets, which is what gradscore does (docs/method.md). The
budget's random surplus removal uses NumPy's global state there and a seeded
generator here, so a class can differ by one medoid.

    python benchmarks/real_exports.py --n 25000 --export 5 7
    python benchmarks/bench_epic_reference.py --reference-repo PATH/TO/EPIC --write-docs
"""

import argparse
import contextlib
import importlib.util
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import gradscore  # noqa: E402
from gradscore.gradients import logit_gradients  # noqa: E402
from bench_score import machine, write_docs as _write  # noqa: E402


def load_coreset(repo):
    """The authors' utils/coreset.py, imported by path (its package
    ``__init__`` pulls in torch helpers this does not need)."""
    path = os.path.join(repo, "utils", "coreset.py")
    spec = importlib.util.spec_from_file_location("epic_reference_coreset", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def quiet_fd(fd=1):
    """Silence a file descriptor (submodlib's C++ progress bars bypass sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def reference_round(coreset, grads, labels, fraction, num_classes, *, fixed, seed,
                    cluster_thresh=1.0):
    """Keep mask of one round of the authors' get_subset (all N examples)."""
    n = labels.size
    b = int(fraction * n)
    np.random.seed(seed)
    with quiet_fd(1), quiet_fd(2):
        vals = coreset.get_orders_and_weights(
            b, grads.astype(np.float32), "euclidean", y=labels, equal_num=False,
            num_classes=num_classes, optimizer="LazyGreedy")
    order, weights, cluster = vals[0], vals[1], vals[6].astype(np.int64)
    if fixed:
        # Renumber class c's clusters from the sum of earlier budgets.
        budgets = np.bincount(labels[order], minlength=num_classes)
        offsets = np.concatenate([[0], np.cumsum(budgets)[:-1]])
        lab = labels
        cluster = cluster - lab * budgets[lab] + offsets[lab]
    keep_clusters = np.flatnonzero(weights > cluster_thresh)
    return np.isin(cluster, keep_clusters)


def reference_rounds(coreset, rounds, fraction, num_classes, *, fixed, seed):
    """Keep masks after each round under the times_selected rule (one epoch
    between rounds; the rule does not depend on how many)."""
    n = rounds[0][0].size
    kept = np.ones(n, dtype=bool)
    out = []
    for labels, grads in rounds:
        kept = kept & reference_round(coreset, grads, labels, fraction, num_classes,
                                      fixed=fixed, seed=seed)
        out.append(kept.copy())
    return out


def gradscore_rounds(rounds_logits, fraction, seed, dense_max):
    active, out = None, []
    for labels, logits in rounds_logits:
        r = gradscore.score(labels, logits, method="epic", fraction=fraction,
                            max_drop_fraction=1.0, max_total_drop_fraction=1.0,
                            random_state=seed, dense_max=dense_max, active=active)
        active = r.keep
        out.append(r.keep)
    return out


def jaccard(a, b):
    u = (a | b).sum()
    return 1.0 if u == 0 else float((a & b).sum() / u)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-repo", required=True,
                    help="a checkout of github.com/YuYang0901/EPIC")
    ap.add_argument("--n", type=int, default=25_000, help="mnist1d samples for the exports")
    ap.add_argument("--epochs", type=int, nargs=2, default=[5, 7])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    from real_exports import make_exports
    paths = make_exports(a.n, tuple(a.epochs))
    coreset = load_coreset(a.reference_repo)
    eps = [gradscore.read_epoch(p) for p in paths]
    c = eps[0].num_classes
    rounds_logits = [(e.labels, e.logits) for e in eps]
    rounds_grads = [(e.labels, logit_gradients(e.labels, e.logits)) for e in eps]
    n = eps[0].labels.size
    sizes = np.bincount(eps[0].labels, minlength=c)
    gradscore.score(np.repeat([0, 1], 30), np.random.default_rng(0).normal(size=(60, 2)))
    rows = []
    for f in a.fractions:
        t = time.perf_counter()
        ref = {fixed: reference_rounds(coreset, rounds_grads, f, c, fixed=fixed, seed=a.seed)
               for fixed in (True, False)}
        t_ref = (time.perf_counter() - t) / 2
        for label, dense_max in (("dense", 10 ** 9), ("graph", 0)):
            t = time.perf_counter()
            mine = gradscore_rounds(rounds_logits, f, a.seed, dense_max)
            t_mine = time.perf_counter() - t
            for r in range(2):
                rows.append(dict(
                    fraction=f, round=r + 1, kernel=label,
                    dropped_ref=int((~ref[True][r]).sum()),
                    dropped_asis=int((~ref[False][r]).sum()),
                    dropped=int((~mine[r]).sum()),
                    j_fixed=jaccard(~ref[True][r], ~mine[r]),
                    j_asis=jaccard(~ref[False][r], ~mine[r]),
                    equal=float((ref[True][r] == mine[r]).mean()),
                    t_ref=t_ref, t=t_mine))
                print(rows[-1], flush=True)
    lines = [
        f"Real exports: mnist1d ({n:,} training examples, {c} classes of "
        f"{sizes.min():,}-{sizes.max():,}), an MLP's epochs {a.epochs[0]} and "
        f"{a.epochs[1]} (`benchmarks/real_exports.py`); logits gradient. Reference: "
        "the authors' `utils/coreset.py` with submodlib-py, plus their training "
        "script's keep rule (`times_selected`), for two rounds. \"fixed\": their "
        "cluster numbering corrected per class (gradscore's behaviour); \"as is\": "
        "unchanged. No caps on either side. Times: both rounds, one process.",
        "",
        "| fraction | round | gradscore kernel | dropped: reference (fixed) | as is | gradscore "
        "| Jaccard vs fixed | Jaccard vs as is | same decision | time reference | time gradscore |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fraction']} | {r['round']} | {r['kernel']} | {r['dropped_ref']:,} | "
            f"{r['dropped_asis']:,} | {r['dropped']:,} | {r['j_fixed']:.3f} | "
            f"{r['j_asis']:.3f} | {100 * r['equal']:.2f}% | {r['t_ref']:.1f} s | {r['t']:.1f} s |")
    lines += ["", f"Machine: {machine()}. Command: `python benchmarks/bench_epic_reference.py "
              f"--reference-repo PATH --n {a.n}`."]
    text = "\n".join(lines)
    print(text)
    if a.write_docs:
        _write(text, key="epic-reference")


if __name__ == "__main__":
    main()
