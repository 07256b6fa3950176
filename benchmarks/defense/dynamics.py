"""How training moves poisons and clean data: trajectory signals, per attack.

Reads the undefended victims' trajectories that ``run.py --save-trajectory``
saves (``<out>/trajectory/<attack>_<target>.npz``: the logits of every
example at every epoch, 0 = before training, and the features at the drop
epochs) and asks, at the first drop epoch ``e`` (what a defence sees at its
first round), how well each signal tells the poisons from the clean
examples of the class they are labelled as:

``gain``
    own-label margin at ``e`` minus at epoch 0 (the reference): how far
    training had to pull the example towards its label. Poisons high.
``aum``
    area under the margin (Pleiss et al., NeurIPS 2020): the mean margin
    over epochs 1..e. Poisons low (hard to fit).
``loss shape``
    BaDLoss's idea (ICLR 2025): an example's loss trajectory over epochs
    1..e, log-scaled, compared with its class's: the distance to the class's
    median trajectory, in units of the class's spread per epoch. Poisons far.
``ref margin``
    the reference's own-label margin alone (epoch 0). Poisons low.

Per signal: the AUROC of poisons against clean examples of their class
(1 = every poison more suspicious than every clean example; 0.5 = no
signal), and, on ``groups``' candidate groups (single-linkage nodes over the
class's k-NN graph in features at ``e``, 3 members to half the class), the
largest lift of a poison node (the median of the signal inside minus outside,
oriented so that suspicious is positive) against the largest lift of any
node of the other classes, which are clean. ``ref agrees``: the share of
clean examples the reference model already gives their label (about 1/C when
the reference is a random head or net: its margins carry no signal).

Usage::

    python -m benchmarks.defense.dynamics --dir benchmarks/out/defense benchmarks/out/defense-10pct

Each folder gets ``dynamics.json``; the report (``report.py``) shows the table.
"""

import argparse
import glob
import json
import os
import warnings

import numpy as np

from gradscore.history import label_loss, own_margin

from .signals import MIN_GROUP, tree_nodes

SIGNALS = ("gain", "aum", "loss_shape", "ref_margin")


def load(path):
    z = np.load(path)
    return {k: z[k] for k in z.files}


def signals_at(traj, e):
    """Per-example signals at epoch ``e``, oriented so that higher = more suspicious."""
    labels = traj["labels"].astype(np.int64)
    lg = traj["logits"]
    m = np.stack([own_margin(labels, lg[t]) for t in range(e + 1)])
    loss = np.stack([label_loss(labels, lg[t]) for t in range(1, e + 1)])
    out = dict(gain=m[e] - m[0], aum=-m[1:e + 1].mean(0), ref_margin=-m[0])
    shape = np.zeros(labels.size)
    logl = np.log(loss + 1e-6)
    for c in np.unique(labels):
        r = labels == c
        med = np.median(logl[:, r], axis=1, keepdims=True)
        mad = 1.4826 * np.median(np.abs(logl[:, r] - med), axis=1, keepdims=True) + 1e-6
        shape[r] = np.sqrt(np.mean(((logl[:, r] - med) / mad) ** 2, axis=0))
    out["loss_shape"] = shape
    return out


def auroc(pos, neg):
    """P(a random positive scores above a random negative), ties half."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = _rankdata(allv)
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _rankdata(v):
    from scipy.stats import rankdata
    return rankdata(v)


def node_lifts(signal, nodes, is_poison, n):
    """(largest lift of a poison node or NaN, largest lift of a clean node or NaN) in one class."""
    best_p, best_c = np.nan, np.nan
    n_p = int(is_poison.sum())
    for g in nodes:
        if not MIN_GROUP <= g.size <= n // 2:
            continue
        inside = np.zeros(n, bool)
        inside[g] = True
        lift = float(np.median(signal[inside]) - np.median(signal[~inside]))
        k = int(is_poison[g].sum())
        if n_p and 2 * k >= g.size and 2 * k >= n_p:
            best_p = np.fmax(best_p, lift)
        elif 2 * k < g.size:
            best_c = np.fmax(best_c, lift)
    return best_p, best_c


def measure(traj, e):
    labels = traj["labels"].astype(np.int64)
    isp = traj["is_poison"].astype(bool)
    fe = list(traj["feature_epochs"])
    feats = traj["features"][fe.index(e)].astype(np.float64)
    pc = int(np.bincount(labels[isp]).argmax())
    sig = signals_at(traj, e)
    cls = labels == pc
    ref_ok = traj["logits"][0].argmax(1) == labels
    out = dict(epoch=e, ref_agrees=float(ref_ok[~isp].mean()),
               poison_share=float(isp.sum() / cls.sum()))
    for s in SIGNALS:
        out[f"{s}_auroc"] = auroc(sig[s][isp], sig[s][cls & ~isp])
        out[f"{s}_clean_lifts"] = []
    out.update(one_round(traj, e, feats))
    if isp.sum() == cls.sum():
        return out          # the class is all poisons: nothing to compare with
    for c in np.unique(labels):
        rows = labels == c
        nodes = list(tree_nodes(feats[rows]))
        for s in SIGNALS:
            lp, lc = node_lifts(sig[s][rows], nodes, isp[rows], int(rows.sum()))
            if c == pc:
                out[f"{s}_poison_lift"] = lp
            else:
                out[f"{s}_clean_lifts"].append(lc)
    return out


def one_round(traj, e, feats):
    """One round of ``groups`` and of ``trajectory`` on the export at ``e``
    (history: the victim before training): poison recall and clean data dropped."""
    import gradscore
    from gradscore.history import history_from_arrays
    labels = traj["labels"].astype(np.int64)
    isp = traj["is_poison"].astype(bool)
    lg = traj["logits"]
    h = history_from_arrays(labels, [(labels, lg[0])])
    out = {}
    for method in ("groups", "trajectory"):
        kw = dict(history=h) if method == "trajectory" else {}
        keep = gradscore.score(labels, lg[e], feats, method=method, **kw).keep
        out[f"{method}_recall"] = float(np.mean(~keep[isp]))
        out[f"{method}_clean"] = float(np.mean(~keep[~isp]))
    return out


def summarise(rows):
    table = []
    by = {}
    for r in rows:
        by.setdefault(r["attack"], []).append(r)
    for attack, rs in by.items():
        t = dict(attack=attack, exports=len(rs), epoch=rs[0]["epoch"], mode=rs[0]["mode"],
                 ref_agrees=float(np.mean([r["ref_agrees"] for r in rs])),
                 poison_share=float(np.mean([r["poison_share"] for r in rs])),
                 **{f"{m}_{q}": float(np.mean([r[f"{m}_{q}"] for r in rs]))
                    for m in ("groups", "trajectory") for q in ("recall", "clean")})
        for s in SIGNALS:
            t[f"{s}_auroc"] = float(np.nanmean([r[f"{s}_auroc"] for r in rs]))
            lp = np.array([r.get(f"{s}_poison_lift", np.nan) for r in rs], float)
            cm = np.array([np.nanmax(r[f"{s}_clean_lifts"]) if np.isfinite(
                r[f"{s}_clean_lifts"]).any() else np.nan for r in rs
                if f"{s}_poison_lift" in r] or [np.nan])
            lpp = lp[[f"{s}_poison_lift" in r for r in rs]]
            t[f"{s}_node"] = int(np.isfinite(lpp).sum())
            t[f"{s}_lift"] = float(np.nanmedian(lpp)) if np.isfinite(lpp).any() else np.nan
            t[f"{s}_clean"] = float(np.nanmedian(cm)) if np.isfinite(cm).any() else np.nan
            t[f"{s}_first"] = int(np.sum(lpp > cm))
            t["judged"] = int(lpp.size)
        table.append(t)
    return table


def markdown(rows):
    lines = ["| attack | victim | exports | poisons / class | reference gives clean data "
             "their label | AUROC: gain / AUM / loss shape / ref margin | poison group's "
             "gain lift vs clean classes' largest (median nats; exports where larger) | "
             "the same for AUM (lower inside) | one round: groups / trajectory, recall / "
             "clean dropped |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in summarise(rows):
        mode = t["mode"]
        j = t["judged"]
        lines.append(
            f"| {t['attack']} | {mode} | {t['exports']} | {100 * t['poison_share']:.0f}% | "
            f"{100 * t['ref_agrees']:.0f}% | {t['gain_auroc']:.2f} / {t['aum_auroc']:.2f} / "
            f"{t['loss_shape_auroc']:.2f} / {t['ref_margin_auroc']:.2f} | "
            f"{t['gain_lift']:.1f} vs {t['gain_clean']:.1f} ({t['gain_first']} / {j}) | "
            f"{t['aum_lift']:.1f} vs {t['aum_clean']:.1f} ({t['aum_first']} / {j}) | "
            f"{100 * t['groups_recall']:.0f}% / {100 * t['groups_clean']:.1f}%, "
            f"{100 * t['trajectory_recall']:.0f}% / {100 * t['trajectory_clean']:.1f}% |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", nargs="+", required=True,
                    help="run.py output folder(s) with trajectory/; each gets a dynamics.json")
    ap.add_argument("--attacks", nargs="+", default=None)
    ap.add_argument("--epoch-index", type=int, default=0,
                    help="which drop epoch (0 = the first)")
    args = ap.parse_args(argv)
    rows = []
    for d in args.dir:
        mine = collect(d, args.attacks, args.epoch_index)
        path = os.path.join(d, "dynamics.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(mine, fh, indent=1)
        os.replace(path + ".tmp", path)
        rows += mine
    print(markdown(rows))
    return 0


def collect(folder, attacks=None, epoch_index=0):
    """The measures of every saved trajectory in ``folder``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "trajectory", "*.npz"))):
        if path.endswith(".tmp.npz"):
            continue          # being written
        attack, target = os.path.basename(path)[:-4].rsplit("_", 1)
        if attacks and attack not in attacks:
            continue
        traj = load(path)
        e = int(traj["drop_epochs"][epoch_index])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows.append(dict(attack=attack, target=int(target), mode=str(traj["mode"]),
                             **measure(traj, e)))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
