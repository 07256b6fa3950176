"""Measure every drop rule in the audit regime: poison recall and clean data flagged.

Usage::

    nice -n 19 python -m benchmarks.audit.measure --targets 25 --shapes 5
    python -m benchmarks.audit.measure --table          # the table from saved results
    python -m benchmarks.audit.measure --check          # each method against the target

Data sets and attacks:

(a) the defence benchmark's poisoned training sets (``benchmarks/defense``):
    its pre-trained network (trained on a split the poisons and targets
    never came from) is the encoder, its penultimate features go to the
    cross-fitted probe. Attacks: the dirty-label backdoors (``backdoor``, 30
    poisons in 719 digits; ``backdoor-10pct``, 60 in 6,471 shift-augmented
    digits), label flips added here (``flips``: 30 and 60 random rows filed
    under a random other class), and the clean-label attacks (Feature
    Collision, Bullseye Polytope, Gradient Matching), each with the targets
    and poisons the defence benchmark recorded.
(b) the generated shapes (:mod:`benchmarks.audit.shapes`): 6,000 32x32 RGB
    images, 60 backdoor poisons and 30 label flips per variant, audited
    end to end as a user would: image folder -> ONNX encoder ->
    ``gradscore.audit.extract_dataset(probe=True)``.

Each (data set, attack, target) is one audit: one scoring of one poisoned
set. Every method sees the same labels, out-of-fold logits and features.
Results go to ``benchmarks/out/audit/results.jsonl`` (one row per method and
poison kind), so an interrupted run resumes where it stopped.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "benchmarks.audit"

from . import methods as MM            # noqa: E402
from . import poisons as P             # noqa: E402

OUT = P.OUT
RESULTS = os.path.join(OUT, "results.jsonl")
DEFENSE_ATTACKS = ["backdoor", "backdoor-10pct", "flips", "flips-10pct", "feature-collision",
                   "bullseye-polytope", "bullseye-polytope-10pct", "gradient-matching-35",
                   "gradient-matching"]
DIRTY = ("backdoor", "backdoor-10pct", "shapes-backdoor")


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def probe_logits(labels, features, seed=0):
    from gradscore.audit import cross_fit_probe
    res = cross_fit_probe(labels, features, random_state=seed)
    return res.logits, res.accuracy


_ENCODERS = {}


def defense_case(attack, target):
    """``(Case, {kind: poison rows}, info)`` for one defence-benchmark target."""
    from ..defense import models as M
    dataset = "digits-aug" if attack.endswith("10pct") else "digits"
    if dataset not in _ENCODERS:
        _ENCODERS[dataset] = P.encoder(dataset)
    splits, net = _ENCODERS[dataset]
    if attack.startswith("confusable"):
        # Class-conditional flips: each row goes to the class its own class is
        # most often mistaken for (the clean probe's out-of-fold confusion).
        x, y = splits.x_train, splits.y_train.copy()
        feats, _ = M.outputs(net, x, "cpu")
        pred = probe_logits(y, feats, seed=0)[0].argmax(1)
        conf = np.zeros((splits.num_classes,) * 2)
        np.add.at(conf, (y, pred), 1)
        np.fill_diagonal(conf, -1)
        to = conf.argmax(1)
        rng = np.random.default_rng(3000 + target["target"])
        n = 60 if attack.endswith("10pct") else 30
        idx = np.sort(rng.choice(y.size, n, replace=False))
        y[idx] = to[y[idx]]
    elif attack.startswith("blended"):
        # A blended backdoor (Chen et al., 2017): a fixed random pattern mixed
        # into images of the other classes at 20%, labelled as the target class.
        x, y = splits.x_train.copy(), splits.y_train.copy()
        rng = np.random.default_rng(4000 + target["target"])
        tgt = int(rng.integers(splits.num_classes))
        pattern = np.random.default_rng(4000).uniform(0, 1, x.shape[1:]).astype(x.dtype)
        n = 60 if attack.endswith("10pct") else 30
        idx = np.sort(rng.choice(np.flatnonzero(y != tgt), n, replace=False))
        x[idx] = 0.8 * x[idx] + 0.2 * pattern
        y[idx] = tgt
    elif attack.startswith("flips"):
        x, y = splits.x_train, splits.y_train.copy()
        rng = np.random.default_rng(1000 + target["target"])
        n = 60 if attack == "flips-10pct" else 30
        idx = np.sort(rng.choice(y.size, n, replace=False))
        for r in idx:
            y[r] = rng.choice([c for c in range(splits.num_classes) if c != y[r]])
    else:
        x, y, idx = P.poisoned_set(attack, target, splits, net)
    feats, _ = M.outputs(net, x, "cpu")
    logits, acc = probe_logits(y, feats, seed=0)
    return MM.Case(y, logits, feats, seed=0), {attack: idx}, {"probe_accuracy": acc,
                                                           "n": int(y.size)}


def shapes_case(seed, encoder):
    """Variant ``seed`` of the generated shapes, audited end to end."""
    import h5py
    from gradscore.audit import extract_dataset
    from . import shapes as S
    folder = os.path.join(OUT, "shapes", f"v{seed}", "images")
    planted_path = os.path.join(OUT, "shapes", f"v{seed}", f"planted_{seed}.json")
    if not os.path.exists(planted_path):
        S.write_variant(folder, seed=seed)
    planted = json.load(open(planted_path))
    export = os.path.join(OUT, "shapes", f"v{seed}", "export.h5")
    if not os.path.exists(export):
        info = extract_dataset(encoder, folder, export, probe=True, random_state=0)
        log(f"shapes v{seed}: probe accuracy {info['probe']['accuracy']:.3f}")
    with h5py.File(export, "r") as f:
        labels, logits, feats = f["labels"][()], f["logits"][()], f["features"][()]
        ids = [v.decode() for v in f["ids"][()]]
    where = {v: i for i, v in enumerate(ids)}
    kinds = {"shapes-backdoor": np.array([where[v] for v in planted["backdoor"]]),
             "shapes-flips": np.array([where[v] for v in planted["flips"]])}
    acc = float(np.mean(logits.argmax(1) == labels))
    return MM.Case(labels, logits, feats, seed=0), kinds, {"probe_accuracy": acc,
                                                          "n": int(labels.size)}


CASES = os.path.join(OUT, "cases")


def cached_case(dataset, attack, target, make):
    """The case of one audit, computed once (features and out-of-fold logits) and cached."""
    path = os.path.join(CASES, f"{dataset}_{attack}_{target:03d}.npz")
    if os.path.exists(path):
        z = np.load(path, allow_pickle=False)
        kinds = {k[5:]: z[k] for k in z.files if k.startswith("kind_")}
        info = json.loads(str(z["info"]))
        return MM.Case(z["labels"], z["logits"], z["features"], seed=0), kinds, info
    case, kinds, info = make()
    os.makedirs(CASES, exist_ok=True)
    np.savez(path + ".tmp.npz", labels=case.labels, logits=case.logits,
             features=case.features, info=json.dumps(info),
             **{f"kind_{k}": v for k, v in kinds.items()})
    os.replace(path + ".tmp.npz", path)
    return case, kinds, info


def all_cases(attacks, n_targets, n_shapes):
    """Yield ``(dataset, attack, target, case, kinds, info)`` for every audit measured."""
    for attack in attacks:
        name = "backdoor" + ("-10pct" if attack.endswith("10pct") else "") \
            if attack.startswith(("flips", "confusable", "blended")) else attack
        for t in P.targets_of(name, n_targets):
            yield ("defense", attack, t["target"]) + cached_case(
                "defense", attack, t["target"], lambda: defense_case(attack, t))
    if n_shapes:
        encoder = os.path.join(OUT, "shapes", "encoder.onnx")
        if not os.path.exists(encoder):
            from . import shapes as S
            log(f"training the shapes encoder: accuracy {S.train_encoder(encoder):.3f}")
        for seed in range(n_shapes):
            yield ("shapes", "shapes", seed) + cached_case(
                "shapes", "shapes", seed, lambda: shapes_case(seed, encoder))


def done_keys():
    if not os.path.exists(RESULTS):
        return set()
    with open(RESULTS) as fh:
        return {(r["dataset"], r["attack"], r["target"], r["method"])
                for r in map(json.loads, fh)}


def measure_case(dataset, attack, target, case, kinds, info, methods, done):
    all_poison = np.zeros(case.labels.size, bool)
    for rows in kinds.values():
        all_poison[rows] = True
    for name in methods:
        if (dataset, attack, target, name) in done:
            continue
        t0 = time.perf_counter()
        drop = case.mask(name)
        secs = time.perf_counter() - t0
        clean = ~all_poison
        rows = []
        for kind, idx in kinds.items():
            rows.append(dict(dataset=dataset, attack=attack, target=target, method=name,
                             kind=kind, n_poison=int(len(idx)), caught=int(drop[idx].sum()),
                             n_clean=int(clean.sum()), clean_flagged=int((drop & clean).sum()),
                             seconds=secs, **info))
        with open(RESULTS, "a") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")


def _cell(name):
    """A method's name in a Markdown table cell (``a|b`` would split the cell)."""
    return name.replace("|", "\\|")


def table(path=RESULTS, methods=None):
    """Markdown: per (data set, poison kind) and method, mean recall / mean clean flagged."""
    rows = [json.loads(line) for line in open(path)]
    methods = methods or list(dict.fromkeys(r["method"] for r in rows))
    cells = {}
    for r in rows:
        key = (r["dataset"], r["kind"])
        cells.setdefault(key, {}).setdefault(r["method"], []).append(
            (r["caught"] / r["n_poison"], r["clean_flagged"] / r["n_clean"]))
    keys = sorted(cells, key=lambda k: (k[0], k[1]))
    out = ["| method | " + " | ".join(f"{d}: {k} ({len(cells[(d, k)].get(methods[0], []))})"
                                       for d, k in keys) + " |",
           "|---|" + "---|" * len(keys)]
    for m in methods:
        vals = []
        for key in keys:
            v = cells[key].get(m)
            if not v:
                vals.append("")
                continue
            rec, cl = np.mean(v, axis=0)
            vals.append(f"{100 * rec:.0f}% / {100 * cl:.1f}%")
        out.append(f"| {_cell(m)} | " + " | ".join(vals) + " |")
    return "\n".join(out)


#: The target (issue 18), on every dirty-label backdoor: recall >= 0.9 at <= 3% of the clean
#: data flagged, recall no lower than deep-knn's, clean flagged no more than cleanlab's + 1 point.
TARGET = dict(recall=0.9, clean=0.03, recall_of="deep-knn", clean_of="cleanlab", slack=0.01)


def _means(rows):
    """``{(data set, kind): {method: (mean recall, mean clean flagged, n audits)}}``."""
    cells = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["kind"]), {}).setdefault(r["method"], []).append(
            (r["caught"] / r["n_poison"], r["clean_flagged"] / r["n_clean"]))
    return {key: {m: tuple(np.mean(v, axis=0)) + (len(v),) for m, v in by.items()}
            for key, by in cells.items()}


def check(path=RESULTS, methods=None, target=TARGET):
    """Markdown: each method against the target on each dirty-label backdoor measured.

    A cell is mean recall / mean clean flagged, then the parts of the target
    it misses: R (recall < 90%), C (clean > 3%), D (recall below deep-knn's),
    L (clean above cleanlab's + 1 point).
    """
    means = _means([json.loads(line) for line in open(path)])
    keys = sorted(k for k in means if k[1] in DIRTY)
    methods = methods or list(dict.fromkeys(m for k in keys for m in means[k]))
    out = ["| method | " + " | ".join(f"{d}: {k}" for d, k in keys) + " | all met |",
           "|---|" + "---|" * (len(keys) + 1)]
    for m in methods:
        cells, ok = [], True
        for key in keys:
            if m not in means[key]:
                cells.append("")
                ok = False
                continue
            rec, cl, _ = means[key][m]
            ref_rec = means[key].get(target["recall_of"], (0, 0, 0))[0]
            ref_cl = means[key].get(target["clean_of"], (1, 1, 0))[1]
            missed = "".join(code for code, bad in (
                ("R", rec < target["recall"]), ("C", cl > target["clean"]),
                ("D", rec < ref_rec - 1e-12), ("L", cl > ref_cl + target["slack"] + 1e-12))
                if bad)
            ok &= not missed
            cells.append(f"{100 * rec:.0f}% / {100 * cl:.1f}% " + (missed or "met"))
        out.append(f"| {_cell(m)} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=25, help="defence-benchmark targets per attack")
    ap.add_argument("--attacks", nargs="+", default=DEFENSE_ATTACKS)
    ap.add_argument("--shapes", type=int, default=5, help="generated-shapes variants")
    ap.add_argument("--methods", nargs="+", default=list(MM.METHODS))
    ap.add_argument("--table", action="store_true", help="print the table and exit")
    ap.add_argument("--check", action="store_true",
                    help="print each method against the target (dirty-label backdoors) and exit")
    ap.add_argument("--cases-only", action="store_true",
                    help="compute and cache the cases (features, probe) only")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.table:
        print(table(methods=[m for m in args.methods if m in MM.METHODS]))
        return 0
    if args.check:
        print(check(methods=[m for m in args.methods if m in MM.METHODS]))
        return 0
    from ..defense import run as R
    R.limit_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    log(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; load {os.getloadavg()}")
    if args.cases_only:
        for dataset, attack, target, *_ in all_cases(args.attacks, args.targets, args.shapes):
            log(f"case {dataset} {attack} {target}")
        return 0
    done = done_keys()
    for dataset, attack, target, case, kinds, info in all_cases(args.attacks, args.targets,
                                                                 args.shapes):
        if all((dataset, attack, target, m) in done for m in args.methods):
            continue
        measure_case(dataset, attack, target, case, kinds, info, args.methods, done)
        log(f"{dataset} {attack} target {target}: probe accuracy {info['probe_accuracy']:.3f}")
    print(table(methods=[m for m in args.methods if m in MM.METHODS]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
