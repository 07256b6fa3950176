"""What separates the poisons from clean data? Statistics over the saved poison sets.

For every target of every attack, train the undefended victim through the
warm-up as the benchmark does, export what gradscore would see at the first
drop epoch (labels, logits, penultimate features) and measure, for the
poisons against the clean examples *of the poisons' labelled class*:

``grad_pct``
    k-NN density (k=20) in logit-gradient space as a within-class percentile
    (0 = most isolated; clean examples average 50): EPIC's signal.
``agree``
    deep-kNN's signal: the share of an example's 20 nearest neighbours in
    feature space (all classes) that carry its label.
``group``
    the share of an example's 20 nearest same-class neighbours (features)
    that are poisons: how much the poisons form a group of their own.
``outside``
    label agreement of the 20 nearest neighbours *outside the poison set*
    (for clean examples: outside themselves): what surrounds the group.
``centre_pct``
    distance to the class's feature centroid as a within-class percentile
    (100 = farthest).

The exports are saved as ``<out>/separation/<attack>_<target>.npz`` (so the
method can be developed on them), the victim's logits before its first epoch
as ``<out>/separation-start/<attack>_<target>.npz``, and the table as
``<out>/separation.json``. Usage::

    python -m benchmarks.defense.separation --out benchmarks/out/defense \\
        --attacks backdoor feature-collision --max-targets 5
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
K = 20


def _knn(x, q, k, exclude=None):
    """Indices of the k nearest rows of ``x`` to each row of ``q`` (exact).

    ``exclude`` (bool mask over ``x``) rows are never returned.
    """
    xx = (x * x).sum(1)
    d2 = (q * q).sum(1)[:, None] - 2 * q @ x.T + xx[None, :]
    if exclude is not None:
        d2[:, exclude] = np.inf
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


def within_pct(values, mask):
    """Percentile rank of ``values[mask]`` among themselves (0 = lowest)."""
    v = values[mask]
    ranks = np.argsort(np.argsort(v, kind="stable"), kind="stable")
    out = np.full(values.size, np.nan)
    out[mask] = 100.0 * ranks / max(v.size - 1, 1)
    return out


def measure(labels, logits, feats, is_poison):
    n = labels.size
    adv = int(np.bincount(labels[is_poison]).argmax())
    cls = labels == adv
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = gradscore.score(labels, logits, feats, method="knn-density", k=K)
    grad_pct = within_pct(res.scores, cls)
    f = feats.astype(np.float64)
    # deep-kNN agreement (self excluded), for the class's rows.
    crow = np.flatnonzero(cls)
    nn = np.empty((crow.size, K), np.int64)
    for i, r in enumerate(crow):
        ex = np.zeros(n, bool)
        ex[r] = True
        nn[i] = _knn(f, f[r:r + 1], K, ex)[0]
    agree = (labels[nn] == adv).mean(1)
    # Group: poisons among the 20 nearest same-class neighbours.
    group = np.empty(crow.size)
    for i, r in enumerate(crow):
        ex = ~cls.copy()
        ex[r] = True
        group[i] = is_poison[_knn(f, f[r:r + 1], K, ex)[0]].mean()
    # Outside: neighbours outside the poison set (poisons) / outside self (clean).
    outside = agree.copy()
    pr = np.flatnonzero(is_poison)
    nn_out = _knn(f, f[pr], K, is_poison)
    outside[np.isin(crow, pr)] = (labels[nn_out] == adv).mean(1)
    centre = np.linalg.norm(f - f[cls].mean(0), axis=1)
    centre_pct = within_pct(centre, cls)
    p = is_poison[crow]
    stat = {}
    for name, v in (("grad_pct", grad_pct[crow]), ("agree", agree), ("group", group),
                    ("outside", outside), ("centre_pct", centre_pct[crow])):
        stat[name] = float(np.mean(v[p]))
        stat[name + "_clean"] = float(np.mean(v[~p]))
    # One round of the methods on this export: recall and clean data dropped.
    for method in ("groups", "deep-knn"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keep = gradscore.score(labels, logits, feats, method=method, k=K).keep
        stat[method + "_recall"] = float(np.mean(~keep[is_poison]))
        stat[method + "_clean_drop"] = float(np.mean(~keep[~is_poison]))
    stat["n_class"] = int(cls.sum())
    stat["n_poisons"] = int(is_poison.sum())
    stat["poison_share"] = float(is_poison.sum() / cls.sum())
    return stat


def _fresh_victim(name, t, splits, pre, out, device):
    """The poisoned set of target ``t`` and its victim before training."""
    cfg = C.attack_config(name)
    vc = cfg["victim"]
    xp, yp, idx, _ = S.load_or_craft(name, cfg, splits, pre, t, device, out)
    is_p = np.zeros(len(xp), bool)
    is_p[idx] = True
    return xp, yp, is_p, V._Run(V.make_victim(pre, splits.num_classes, vc, t["seed"]), vc)


def export_warmup(name, t, splits, pre, out, device):
    """Labels, logits, features and poison mask at the first drop, and the
    victim's logits before its first epoch (evaluation does not change its training)."""
    xp, yp, is_p, run = _fresh_victim(name, t, splits, pre, out, device)
    start = M.outputs(run.model, xp, device)[1]
    run.train(xp, yp, np.arange(len(xp)), 0, run.cfg.drop_after, t["seed"], device)
    feats, logits = M.outputs(run.model, xp, device)
    return yp, logits, feats, is_p, start


def start_logits(name, t, splits, pre, out, device):
    """The victim's logits on the poisoned set before its first epoch of training."""
    xp, _, _, run = _fresh_victim(name, t, splits, pre, out, device)
    return M.outputs(run.model, xp, device)[1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(S.REPO, "benchmarks", "out", "defense"))
    ap.add_argument("--targets-dir", default=os.path.join(HERE, "targets"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-targets", type=int, default=None)
    ap.add_argument("--attacks", nargs="+", default=C.ALL_ATTACKS, choices=C.ALL_ATTACKS)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    path = os.path.join(args.out, "separation.json")
    rows = [r for r in (json.load(open(path)) if os.path.exists(path) else [])
            if r["attack"] not in args.attacks]
    os.makedirs(os.path.join(args.out, "separation"), exist_ok=True)
    for name in args.attacks:
        tpath = os.path.join(args.targets_dir, f"{name}.json")
        if not os.path.exists(tpath):
            continue
        cfg = C.attack_config(name)
        splits = D.load(cfg["dataset"], seed=0)
        pre = S.pretrained_model(splits, 0, args.device, args.out)
        for t in json.load(open(tpath))["targets"][:args.max_targets]:
            npz = os.path.join(args.out, "separation", f"{name}_{t['target']:03d}.npz")
            # The start, for signals.py's training-dynamics measure.
            start = os.path.join(args.out, "separation-start", os.path.basename(npz))
            os.makedirs(os.path.dirname(start), exist_ok=True)
            if os.path.exists(npz):
                z = np.load(npz)
                y, lg, ft, isp = z["labels"], z["logits"], z["features"], z["is_poison"]
                if not os.path.exists(start):
                    np.savez_compressed(start, logits=start_logits(name, t, splits, pre,
                                                                   args.out, args.device))
            else:
                y, lg, ft, isp, st = export_warmup(name, t, splits, pre, args.out, args.device)
                np.savez_compressed(npz, labels=y, logits=lg, features=ft, is_poison=isp)
                np.savez_compressed(start, logits=st)
            rows.append(dict(attack=name, target=t["target"], **measure(y, lg, ft, isp)))
        S.log(f"separation: {name} done")
    with open(path + ".tmp", "w") as fh:
        json.dump(rows, fh, indent=1)
    os.replace(path + ".tmp", path)
    print(markdown(rows))
    return 0


def markdown(rows):
    attacks = []
    for r in rows:
        if r["attack"] not in attacks:
            attacks.append(r["attack"])
    lines = ["| attack | targets | poisons / class | gradient density pct (P / C) | "
             "deep-kNN agreement (P / C) | poisons among same-class neighbours (P / C) | "
             "agreement outside the poison group (P / C) | distance-to-centre pct (P / C) | "
             "one round of groups: recall / clean dropped | deep-knn: recall / clean dropped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in attacks:
        sel = [r for r in rows if r["attack"] == a]

        def f(m, sel=sel):
            # NaN where a target's class has no clean example left (Gradient Matching, 70
            # poisons): such targets count for the poisons' columns only.
            v = np.array([r[m] for r in sel], dtype=float)
            return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

        lines.append(
            f"| {a} | {len(sel)} | {f('n_poisons'):.0f} / {f('n_class'):.0f} "
            f"({100 * f('poison_share'):.0f}%) | {f('grad_pct'):.0f} / {f('grad_pct_clean'):.0f} | "
            f"{f('agree'):.2f} / {f('agree_clean'):.2f} | {f('group'):.2f} / {f('group_clean'):.2f} | "
            f"{f('outside'):.2f} / {f('outside_clean'):.2f} | "
            f"{f('centre_pct'):.0f} / {f('centre_pct_clean'):.0f} | "
            f"{100 * f('groups_recall'):.0f}% / {100 * f('groups_clean_drop'):.1f}% | "
            f"{100 * f('deep-knn_recall'):.0f}% / {100 * f('deep-knn_clean_drop'):.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
