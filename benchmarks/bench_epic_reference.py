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

``--cifar-shape`` instead times one round side by side on the CIFAR-10
shape (50,000 x 10 classes, synthetic, classes of about 5,000 on either side
of ``--dense-max``): the authors' ``get_orders_and_weights`` alone, in
process, against ``gradscore score FILE`` as a whole process (Python start,
imports, read, write included), alternating, ``--repeat`` times each.

    python benchmarks/bench_epic_reference.py --reference-repo PATH --cifar-shape --repeat 3 --write-docs
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
from bench_score import ensure, machine, run_measured, write_docs as _write  # noqa: E402


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


def cifar_shape(coreset, repeat, fraction, seed):
    """Side-by-side times and agreement on the CIFAR-10 shape (see the docstring)."""
    import statistics
    import tempfile
    path = ensure("cifar", 50_000, 10, 512, "float32")
    e = gradscore.read_epoch(path)
    c = e.num_classes
    grads = logit_gradients(e.labels, e.logits).astype(np.float32)
    t_ref, t_mine, rss, cpu = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        run_measured(path, [], tmp)  # numba's cache, as a user's second run finds it
        for _ in range(repeat):
            t = time.perf_counter()
            ref = reference_round(coreset, grads, e.labels, fraction, c, fixed=True, seed=seed)
            t_ref.append(time.perf_counter() - t)
            wall, r, u, _ = run_measured(path, [], tmp)
            t_mine.append(wall)
            rss.append(r)
            cpu.append(u)
        mine = gradscore.keep_mask(e.ids, gradscore.read_keeplist(
            os.path.join(tmp, "bench.keep.txt")))
    sizes = np.bincount(e.labels, minlength=c)
    r, m = statistics.median(t_ref), statistics.median(t_mine)
    lines = [
        f"CIFAR-10 shape: synthetic 50,000 x 10 classes x 512 float32 (`benchmarks/synth.py`), "
        f"classes of {sizes.min():,}-{sizes.max():,} ({(sizes > 5000).sum()} above 5,000); "
        f"fraction {fraction}, one round. Reference: the authors' `get_orders_and_weights` "
        "alone, in process (their keep rule, cluster numbering fixed). gradscore: "
        "`gradscore score FILE -q --json` as a whole process (start, imports, read, score, "
        f"write). Alternating, {repeat} runs each, medians.",
        "",
        "| dropped: reference | gradscore | Jaccard | time reference | time gradscore (whole "
        "process) | ratio | gradscore CPU | gradscore peak RSS | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {(~ref).sum():,} | {(~mine).sum():,} | {jaccard(~ref, ~mine):.3f} | {r:.1f} s | "
        f"{m:.2f} s | {r / m:.1f}x | {statistics.median(cpu):.1f} s | "
        f"{statistics.median(rss):.0f} MiB | {os.getloadavg()[0]:.1f} |",
        "",
        f"Runs: reference {', '.join(f'{x:.1f}' for x in t_ref)} s; gradscore "
        f"{', '.join(f'{x:.2f}' for x in t_mine)} s. Machine: {machine()}. Command: "
        f"`python benchmarks/bench_epic_reference.py --reference-repo PATH --cifar-shape "
        f"--repeat {repeat}`."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-repo", required=True,
                    help="a checkout of github.com/YuYang0901/EPIC")
    ap.add_argument("--cifar-shape", action="store_true",
                    help="time one round side by side on the CIFAR-10 shape instead")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n", type=int, default=25_000, help="mnist1d samples for the exports")
    ap.add_argument("--epochs", type=int, nargs=2, default=[5, 7])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    if a.cifar_shape:
        text = cifar_shape(load_coreset(a.reference_repo), a.repeat, 0.2, a.seed)
        print(text)
        if a.write_docs:
            _write(text, key="epic-reference-cifar")
        return
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
        for label, dense_max in (("kernel matrix kept", 10 ** 9), ("streamed", 0)):
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
