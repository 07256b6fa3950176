"""Summaries, the markdown table, the ASR-vs-accuracy figure and the docs page.

Run on its own to rebuild the docs from whatever results exist (a cut-off
run included); several output folders (say, the five original settings in
one and the realistic ones in another) merge into one page::

    python -m benchmarks.defense.report [--out benchmarks/out/defense [OTHER_OUT ...]]

While runs are still going, ``--partial ATTACK ...`` adds only those attacks'
results so far (with FINDINGS.md's issue-19 section and the trajectory-signal
table) as one section of the existing page, replacing an older copy of that
section and leaving the complete tables as they are::

    python -m benchmarks.defense.report --partial feature-collision-10pct \
        --out benchmarks/out/defense benchmarks/out/defense-10pct
"""

import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

DEFENCE_ORDER = ["none", "epic-0.1", "epic-0.2", "epic-0.3", "knn-density",
                 "epic-0.2-last-layer", "deep-knn", "groups", "trajectory", "spectral",
                 "random-30%", "art-activation", "art-spectral"]
ATTACK_ORDER = ["backdoor", "gradient-matching", "gradient-matching-35", "bullseye-polytope",
                "feature-collision", "backdoor-10pct", "bullseye-polytope-10pct",
                "feature-collision-10pct", "gradient-matching-10pct"]
PAPER = {"epic-0.1", "epic-0.2", "epic-0.3"}
GRADSCORE_OTHER = {"knn-density", "epic-0.2-last-layer", "deep-knn", "spectral", "groups",
                   "trajectory"}
#: The new method of issue 19 and the peers it is held against.
NEW_METHOD = "trajectory"
PEERS = ["epic-0.1", "epic-0.2", "epic-0.3", "deep-knn", "groups", "spectral",
         "art-activation", "art-spectral"]
#: Settings no per-class defence can act on (poisons nearly their whole
#: class): reported, kept out of the verdict.
OUT_OF_REACH = {"gradient-matching": "poisons 97% of their class"}
#: Issue 19's targets: where the undefended ASR is at least this ...
TARGET_SUCCESS_ASR = 0.3
#: ... the new method's ASR at most the best peer's plus this ...
TARGET_ASR_SLACK = 0.05
#: ... its clean data dropped and clean-accuracy loss (points) at most ...
TARGET_CLEAN_DROP, TARGET_ACC_LOSS = 0.05, 0.01
#: ... and its poison recall at least this, on these settings where they succeed.
TARGET_RECALL = 0.9
RECALL_SETTINGS = ("backdoor", "backdoor-10pct", "gradient-matching-10pct",
                   "feature-collision-10pct")

#: An attack "succeeds undefended" when its undefended ASR is at least this.
SUCCESS_ASR = 0.2


def load_rows(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _ms(v):
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return dict(mean=float("nan"), std=float("nan"))
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else 0.0)


def wilson(k, n, z=1.96):
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _outs(out):
    return [out] if isinstance(out, str) else list(out)


def load_results(out):
    """Every row of ``<out>/results_*.jsonl`` (one file per attack); ``out``
    may be a list of folders."""
    import glob
    rows = []
    for o in _outs(out):
        for p in sorted(glob.glob(os.path.join(o, "results_*.jsonl"))):
            rows += load_rows(p)
    return rows


def load_meta(out):
    """``run_meta.json`` of every folder in ``out``, runs concatenated."""
    runs, machine = [], {}
    for o in _outs(out):
        p = os.path.join(o, "run_meta.json")
        if not os.path.exists(p):
            runs.append(dict(command=f"(run into {o} cut off before it finished)", started="?",
                             finished="?", wall_seconds=float("nan")))
            continue
        m = json.load(open(p))
        runs += m.get("runs", [m])
        machine = m.get("machine", machine)
    return dict(runs=runs, machine=machine)


def sign_test(a, b):
    """Two-sided exact sign test p-value for a vs b paired changes (ties dropped)."""
    n = a + b
    if n == 0:
        return 1.0
    k = min(a, b)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * p)


def summarise(out):
    """Per attack and defence: means and spreads over the targets every defence finished."""
    rows = load_results(out)
    # Only targets every defence finished are compared (paired by target).
    by_attack = {}
    for r in rows:
        by_attack.setdefault(r["attack"], []).append(r)
    out = {"attacks": {}}
    for attack in [a for a in ATTACK_ORDER if a in by_attack] + \
            sorted(set(by_attack) - set(ATTACK_ORDER)):
        rs = by_attack[attack]
        per_t = {}
        for r in rs:
            per_t.setdefault(r["target"], {})[r["defence"]] = r
        # A defence run on fewer than half the targets (say, added to a few
        # only) is left out rather than shrinking every defence's sample.
        cover = {d: sum(d in x for x in per_t.values()) for d in DEFENCE_ORDER}
        defs = [d for d in DEFENCE_ORDER if cover[d] and 2 * cover[d] >= len(per_t)]
        left_out = [d for d in DEFENCE_ORDER if cover[d] and d not in defs]
        complete = sorted(t for t, d in per_t.items() if all(x in d for x in defs))
        table = {}
        for d in defs:
            sel = [per_t[t][d] for t in complete]
            succ = [r["success"] for r in sel]
            binary = all(s in (0.0, 1.0) for s in succ)
            k = int(round(sum(succ)))
            entry = dict(
                n=len(sel), asr=_ms(succ), clean_acc=_ms([r["clean_acc"] for r in sel]),
                poison_recall=_ms([r["poison_recall"] for r in sel]),
                clean_dropped=_ms([r["clean_dropped"] for r in sel]),
                defence_seconds=_ms([r["defence_seconds"] for r in sel]),
                total_seconds=_ms([r["total_seconds"] for r in sel]),
                binary=binary, successes=k if binary else None,
                asr_ci=wilson(k, len(sel)) if binary else None)
            if "none" in defs and d != "none":
                # Paired by target: successes the defence removed / added vs none.
                base = [per_t[t]["none"]["success"] for t in complete]
                entry["fixed"] = int(sum(1 for a, b in zip(base, succ) if a > b + 1e-12))
                entry["broke"] = int(sum(1 for a, b in zip(base, succ) if b > a + 1e-12))
                entry["sign_p"] = sign_test(entry["fixed"], entry["broke"])
            table[d] = entry
        out["attacks"][attack] = dict(n_targets=len(complete), defences=table,
                                      verdict=verdict(table), left_out=left_out)
    return out


def _best(table, names):
    """Lowest ASR, then highest clean accuracy."""
    cands = [(table[n]["asr"]["mean"], -table[n]["clean_acc"]["mean"], n)
             for n in names if n in table]
    return min(cands)[2] if cands else None


def verdict(table):
    if "none" not in table:
        return None
    none = table["none"]
    v = dict(undefended_asr=none["asr"]["mean"],
             succeeds=bool(none["asr"]["mean"] >= SUCCESS_ASR))
    bp = _best(table, PAPER)
    bo = _best(table, GRADSCORE_OTHER)
    ball = _best(table, PAPER | GRADSCORE_OTHER)
    v.update(best_paper=bp, best_other=bo, best_gradscore=ball)
    v["undefended_asr"] = none["asr"]["mean"]
    if bp and bo:
        a_p, a_o = table[bp]["asr"]["mean"], table[bo]["asr"]["mean"]
        c_p, c_o = table[bp]["clean_acc"]["mean"], table[bo]["clean_acc"]["mean"]
        v["other_asr_le_paper"] = bool(a_o <= a_p + 1e-12)
        v["other_acc_ge_paper"] = bool(c_o >= c_p - 1e-12)
        v["other_beats_paper"] = v["other_asr_le_paper"] and v["other_acc_ge_paper"]
    return v


def _pct(ms, digits=1):
    if not np.isfinite(ms["mean"]):
        return "n/a"
    return f"{100 * ms['mean']:.{digits}f} ± {100 * ms['std']:.{digits}f}"


def _asr_cell(e):
    if e["binary"]:
        lo, hi = e["asr_ci"]
        return f"{100 * e['asr']['mean']:.0f}% ({e['successes']}/{e['n']}; CI {100 * lo:.0f}–{100 * hi:.0f})"
    return _pct(e["asr"])


def markdown_table(summary):
    lines = []
    for attack, a in summary["attacks"].items():
        lines.append(f"\n### {attack} ({a['n_targets']} targets)\n")
        if a.get("left_out"):
            lines.append(f"(Run on fewer than half the targets, so not shown: "
                         f"{', '.join(a['left_out'])}.)\n")
        lines.append("| defence | ASR | vs none: better / worse (p) | clean acc % | "
                     "poison recall % | clean dropped % | defence s |")
        lines.append("|---|---|---|---|---|---|---|")
        for d, e in a["defences"].items():
            name = f"{d} (paper)" if d in PAPER else d
            sec = e["defence_seconds"]
            vs = (f"{e['fixed']} / {e['broke']} (p={e['sign_p']:.2f})" if "fixed" in e else "–")
            lines.append(f"| {name} | {_asr_cell(e)} | {vs} | {_pct(e['clean_acc'])} | "
                         f"{_pct(e['poison_recall'])} | {_pct(e['clean_dropped'])} | "
                         f"{sec['mean']:.2f} ± {sec['std']:.2f} |")
    return "\n".join(lines)


def verdict_lines(summary):
    out = []
    for attack, a in summary["attacks"].items():
        v = a["verdict"]
        if not v:
            continue
        t = a["defences"]
        head = f"- **{attack}**: undefended ASR {100 * v['undefended_asr']:.0f}%"
        if not v["succeeds"]:
            out.append(head + f" (below {100 * SUCCESS_ASR:.0f}%: the attack does not succeed "
                       "undefended here, so there is nothing to defend against).")
            continue
        bp, bo = v["best_paper"], v["best_other"]
        if not (bp and bo):
            out.append(head + ".")
            continue
        fp = (f"{bp}: ASR {100 * t[bp]['asr']['mean']:.0f}%, clean acc "
              f"{100 * t[bp]['clean_acc']['mean']:.1f}%")
        fo = (f"{bo}: ASR {100 * t[bo]['asr']['mean']:.0f}%, clean acc "
              f"{100 * t[bo]['clean_acc']['mean']:.1f}%")
        undef = v["undefended_asr"]
        paper_helps = t[bp]["asr"]["mean"] < undef - 1e-12
        other_helps = t[bo]["asr"]["mean"] < undef - 1e-12
        if v["other_beats_paper"] and not paper_helps and other_helps:
            s = (f"; gradscore's best non-paper setting ({fo}) lowers ASR below no defence, "
                 f"where the paper's best EPIC rule ({fp}) **does not**.")
        elif v["other_beats_paper"] and not paper_helps:
            s = (f"; gradscore's best non-paper setting ({fo}) does at least as well as the "
                 f"paper's best EPIC rule ({fp}) on ASR and clean accuracy, but **neither lowers "
                 f"ASR below no defence**.")
        elif v["other_beats_paper"]:
            s = (f"; gradscore's best non-paper setting ({fo}) lowers ASR at least as much as "
                 f"the paper's best EPIC rule ({fp}) at no larger clean-accuracy cost.")
        elif v["other_asr_le_paper"]:
            s = (f"; gradscore's best non-paper setting ({fo}) lowers ASR at least as much as "
                 f"the paper's best EPIC rule ({fp}), at **lower clean accuracy**.")
        else:
            why = []
            if not v["other_asr_le_paper"]:
                why.append("higher ASR")
            if not v["other_acc_ge_paper"]:
                why.append("lower clean accuracy")
            s = (f"; gradscore's best non-paper setting ({fo}) does **not** match the paper's "
                 f"best EPIC rule ({fp}): {' and '.join(why)}.")
        bg = v["best_gradscore"]
        eg = t[bg]
        if eg["asr"]["mean"] < v["undefended_asr"] - 1e-12:
            s += (f" Against no defence, gradscore's best setting overall ({bg}) lowers ASR from "
                  f"{100 * v['undefended_asr']:.0f}% to {100 * eg['asr']['mean']:.0f}%"
                  + (f" (better on {eg['fixed']} targets, worse on {eg['broke']}, sign-test "
                     f"p={eg['sign_p']:.2f})" if "fixed" in eg else "") + ".")
        else:
            s += (f" No gradscore setting lowers ASR below the undefended "
                  f"{100 * v['undefended_asr']:.0f}% (best: {bg}, "
                  f"{100 * eg['asr']['mean']:.0f}%).")
        peers = [d for d in ("art-activation", "art-spectral") if d in t]
        if peers:
            bpeer = min(peers, key=lambda d: t[d]["asr"]["mean"])
            s += (f" Best ART peer: {bpeer}, ASR {100 * t[bpeer]['asr']['mean']:.0f}%, clean acc "
                  f"{100 * t[bpeer]['clean_acc']['mean']:.1f}%, poison recall "
                  f"{100 * t[bpeer]['poison_recall']['mean']:.0f}%.")
        out.append(head + s)
    return "\n".join(out)


def target_rule():
    """Issue 19's targets in words (what ``target_lines`` checks)."""
    return (
        f"On every setting whose undefended ASR is at least {100 * TARGET_SUCCESS_ASR:.0f}%: "
        f"`{NEW_METHOD}`'s ASR no higher than the best peer's plus "
        f"{100 * TARGET_ASR_SLACK:.0f} points (peers: EPIC 0.1/0.2/0.3, deep-knn, groups, "
        "spectral, ART ActivationDefence and SpectralSignatureDefense, at any clean-data "
        f"cost), at most {100 * TARGET_CLEAN_DROP:.0f}% of clean data dropped and at most "
        f"{100 * TARGET_ACC_LOSS:.0f} point of clean accuracy lost against no defence; poison "
        f"recall at least {100 * TARGET_RECALL:.0f}% on "
        f"{', '.join(RECALL_SETTINGS)} where they succeed. Settings out of reach of any "
        "per-class defence are shown and not judged. The column \"best peer within the "
        "clean-data bound\" is context only.")


def target_lines(summary):
    """Issue 19's targets for the new method, checked per attack setting."""
    m = NEW_METHOD
    head = (f"| attack | undefended ASR | {m}: ASR / poison recall / clean dropped / acc. "
            f"change (points) | best peer (ASR, clean dropped) | ASR <= best peer + "
            f"{100 * TARGET_ASR_SLACK:.0f} | best peer within the clean-data bound (ASR) | "
            f"recall >= {100 * TARGET_RECALL:.0f}% | all targets met |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for attack, a in summary["attacks"].items():
        t = a["defences"]
        if m not in t or "none" not in t:
            continue
        none, g = t["none"], t[m]
        und = none["asr"]["mean"]
        drop = g["clean_dropped"]["mean"]
        loss = none["clean_acc"]["mean"] - g["clean_acc"]["mean"]
        rec = g["poison_recall"]["mean"]
        cell = (f"{100 * g['asr']['mean']:.0f}% / {100 * rec:.0f}% / {100 * drop:.1f}% / "
                f"{-100 * loss:+.1f}")
        peers = [d for d in PEERS if d in t]
        best = _best(t, peers)
        best_b = _best(t, [d for d in peers
                           if t[d]["clean_dropped"]["mean"] <= TARGET_CLEAN_DROP])
        bcell = (f"{best} ({100 * t[best]['asr']['mean']:.0f}%, "
                 f"{100 * t[best]['clean_dropped']['mean']:.1f}%)" if best else "–")
        bcell_b = f"{best_b} ({100 * t[best_b]['asr']['mean']:.0f}%)" if best_b else "none"
        if attack in OUT_OF_REACH:
            lines.append(f"| {attack} | {100 * und:.0f}% | {cell} | {bcell} | – | {bcell_b} | – "
                         f"| out of reach of per-class defences ({OUT_OF_REACH[attack]}): "
                         "not judged |")
            continue
        if und < TARGET_SUCCESS_ASR:
            lines.append(f"| {attack} | {100 * und:.0f}% | {cell} | {bcell} | – | {bcell_b} | – "
                         f"| below {100 * TARGET_SUCCESS_ASR:.0f}% undefended: no target |")
            continue
        le = best is None or g["asr"]["mean"] <= t[best]["asr"]["mean"] + TARGET_ASR_SLACK + 1e-12
        needs_recall = attack in RECALL_SETTINGS
        rec_ok = rec >= TARGET_RECALL - 1e-12
        ok = (le and drop <= TARGET_CLEAN_DROP + 1e-12 and loss <= TARGET_ACC_LOSS + 1e-12
              and (rec_ok or not needs_recall))
        rcell = ("yes" if rec_ok else "**no**") if needs_recall else "–"
        lines.append(f"| {attack} | {100 * und:.0f}% | {cell} | {bcell} | "
                     f"{'yes' if le else '**no**'} | {bcell_b} | {rcell} | "
                     f"{'yes' if ok else '**no**'} |")
    return "\n".join(lines)


COLORS = {"none": "black", "epic-0.1": "#9ecae1", "epic-0.2": "#4292c6", "epic-0.3": "#08519c",
          "knn-density": "#31a354", "epic-0.2-last-layer": "#756bb1", "deep-knn": "#e6550d", "groups": "#e7298a",
          "spectral": "#fdae6b", "random-30%": "#969696", "art-activation": "#de2d26", "art-spectral": "#fb6a4a"}
MARKERS = {"none": "X", "epic-0.1": "o", "epic-0.2": "o", "epic-0.3": "o", "knn-density": "s",
           "epic-0.2-last-layer": "D", "deep-knn": "^", "groups": "p", "spectral": "v",
           "random-30%": "h", "art-activation": "P", "art-spectral": "*"}


def plot(summary, path):
    """One panel per attack: mean ASR vs mean clean accuracy, one marker per defence."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    attacks = list(summary["attacks"])
    if not attacks:
        return
    ncol = 3 if len(attacks) > 2 else len(attacks) + 1
    nrow = math.ceil((len(attacks) + 1) / ncol)      # one spare cell for the legend
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.0 * ncol, 4.3 * nrow), squeeze=False)
    handles = {}
    for ax, attack in zip(axes.ravel(), attacks):
        a = summary["attacks"][attack]
        if "none" in a["defences"]:
            ax.axhline(100 * a["defences"]["none"]["asr"]["mean"], color="black", lw=0.8,
                       ls="--", alpha=0.6, zorder=0)
        for d, e in a["defences"].items():
            x, y = 100 * e["clean_acc"]["mean"], 100 * e["asr"]["mean"]
            if e["binary"]:
                lo, hi = e["asr_ci"]
                yerr = [[y - 100 * lo], [100 * hi - y]]
            else:
                yerr = 100 * e["asr"]["std"]
            ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=COLORS.get(d, "gray"),
                        elinewidth=1.0, alpha=0.35, capsize=0)
            handles[d] = ax.scatter(x, y, marker=MARKERS.get(d, "o"), s=110,
                                    color=COLORS.get(d, "gray"), edgecolor="black",
                                    linewidth=0.6, zorder=3)
        ax.set_title(f"{attack}  ({a['n_targets']} targets)", fontsize=11)
        ax.set_xlabel("clean test accuracy (%)  → better")
        ax.set_ylabel("attack success rate (%)  ↓ better")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    spare = axes.ravel()[len(attacks):]
    for ax in spare:
        ax.axis("off")
    order = [d for d in DEFENCE_ORDER if d in handles]
    labels = [d + ("  (paper's EPIC rule)" if d in PAPER else "") for d in order]
    if spare.size:
        spare[0].legend([handles[d] for d in order], labels, loc="center", fontsize=10,
                        frameon=False, title="defence  (dashed line: undefended ASR)",
                        title_fontsize=10)
    else:
        fig.legend([handles[d] for d in order], labels, loc="lower center", ncol=4, fontsize=9)
    fig.suptitle("Attack success vs clean accuracy per defence (means over targets; faint "
                 "bars: 95% Wilson interval, or ±1 sd for the backdoor)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _settings_lines(targets_dir):
    lines = []
    for attack in ATTACK_ORDER:
        p = os.path.join(targets_dir, f"{attack}.json")
        if not os.path.exists(p):
            continue
        with open(p) as fh:
            d = json.load(fh)
        v = d["victim"]
        params = ", ".join(f"{k}={round(x, 4) if isinstance(x, float) else x}"
                           for k, x in d["params"].items())
        lines.append(
            f"| {attack} | ART `{d['art']}` | {d['dataset']} ({d['n_train']} train) | "
            f"{d['n_poisons']} ({100 * d['poison_fraction']:.1f}%"
            + (f"; {100 * d['class_share']:.0f}% of their class" if "class_share" in d else "")
            + f") | {params or '–'} | "
            f"{v['mode']}, {v['epochs']} ep, Adam lr {v['lr']}, drops at "
            f"{', '.join(str(e) for e in _drop_epochs(v))} |")
    return lines


def _drop_epochs(v):
    return [e for e in range(v["drop_after"], min(v["stop_after"], v["epochs"]))
            if (e - v["drop_after"]) % v["freq"] == 0]


def _json_rows(out, name):
    rows = []
    for o in _outs(out):
        p = os.path.join(o, name)
        if os.path.exists(p):
            rows += json.load(open(p))
    return rows


def _separation_section(out):
    rows = _json_rows(out, "separation.json")
    if not rows:
        return []
    from .separation import markdown
    return [
        "## What separates poisons from clean data",
        "",
        "From `python -m benchmarks.defense.separation`: the victim at the end of warm-up "
        "(the first drop), poisons (P) against the clean examples of the poisons' labelled "
        "class (C), means over targets. Density percentile: k-NN density (k=20) in logit-"
        "gradient space within the class (0 = most isolated; EPIC's signal). deep-kNN "
        "agreement: share of the 20 nearest neighbours in feature space (all classes) with "
        "the same label. Poisons among same-class neighbours: how much the poisons form a "
        "group of their own. Agreement outside the group: the same share over the 20 nearest "
        "examples that are not poisons (what surrounds the group; for clean examples, "
        "deep-kNN agreement). Distance-to-centre percentile: distance to the class's feature "
        "centroid (100 = farthest).",
        "",
        markdown(rows),
        "",
    ]


def _signals_section(out):
    rows = _json_rows(out, "signals.json")
    if not rows:
        return []
    from .signals import markdown, markdown_gain
    gain = markdown_gain(rows)
    gain_lines = [
        "*Margin gain* (training dynamics, not in gradscore: it needs a second export): each "
        "example's own-class margin at the first drop minus the same before the victim's "
        "first epoch, and how much more a candidate group gains than the rest of its class.",
        "",
        gain,
        "",
    ] if gain else []
    return [
        "## Two signals that do not come from labels",
        "",
        "From `python -m benchmarks.defense.signals` on the same exports (see its docstring "
        "and docs/method.md, \"Where `groups` misses\"). *Margin lift*: how far a candidate group of "
        "`groups` (a node of the class's single-linkage tree in feature space) leans towards "
        "one other class, as the median logit margin of its members minus the rest of the "
        "class's; for the poisons, the best node that is mostly poisons and holds most of "
        "them; for clean classes, their largest lift. *Two-means*: ActivationDefence's split "
        "(10 principal components, k-means with k=2, the smaller cluster flagged) and its "
        "silhouette, in the poisons' class against the clean classes of the same export.",
        "",
        markdown(rows),
        "",
        *gain_lines,
    ]


def _dynamics_section(out, level="##"):
    rows = _json_rows(out, "dynamics.json")
    if not rows:
        return []
    from .dynamics import markdown
    return [
        f"{level} How training moves poisons and clean data (trajectory signals)",
        "",
        "From `python -m benchmarks.defense.dynamics` over the undefended victims' saved "
        "trajectories (`run.py --save-trajectory`): at the first drop epoch, per signal, the "
        "AUROC of the poisons against the clean examples of their class (gain: own-label "
        "margin now minus before training, poisons high; AUM: mean margin over the epochs "
        "so far, poisons low; loss shape: distance of the log-loss curve from the class's "
        "median curve, in per-epoch MADs; ref margin: the margin before training, poisons "
        "low), the largest lift of a candidate group of poisons against the largest of any "
        "clean class's group, whether the reference (the victim before training) gives clean "
        "data their label at all, and one round of `groups` and `trajectory` on that export.",
        "",
        markdown(rows),
        "",
    ]


def _isolation_section(out):
    rows = _json_rows(out, "isolation.json")
    if not rows:
        return []
    from .isolation import markdown
    n = {}
    for r in rows:
        n.setdefault(r["attack"], set()).add(r["target"])
    counts = ", ".join(f"{a}: {len(t)}" for a, t in n.items())
    return [
        "## Are the poisons isolated in gradient space?",
        "",
        "From `python -m benchmarks.defense.isolation`: the undefended victim of every target "
        f"({counts} targets) scored with `gradscore.score(method='epic', fraction=0.2)` at the "
        "end of warm-up (when the first drop happens) and after the last epoch. Density "
        "percentile: rank of a poison's k-NN density within its labelled class (0 = most "
        "isolated, 50 = typical). EPIC drops the members of singleton clusters.",
        "",
        markdown(rows),
        "",
    ]


def miss_lines(out, method=NEW_METHOD):
    """``method``'s six-round poison recall on the targets whose attack still
    succeeds under it, against the others (targeted attacks only)."""
    rows = [r for r in load_results(out) if r["defence"] == method]
    by = {}
    for r in rows:
        by.setdefault(r["attack"], []).append(r)
    lines = [f"| attack | targets still succeeding under {method} | their poison recall | "
             "other targets: mean recall (lowest) |", "|---|---|---|---|"]
    for attack in [a for a in ATTACK_ORDER if a in by]:
        rs = by[attack]
        if not all(r["success"] in (0.0, 1.0) for r in rs):
            continue  # a backdoor's success is a rate over triggered inputs
        hit = sorted(r["poison_recall"] for r in rs if r["success"] == 1.0)
        rest = [r["poison_recall"] for r in rs if r["success"] == 0.0]
        lines.append(f"| {attack} | {len(hit)} / {len(rs)} | "
                     + (", ".join(f"{v:.2f}" for v in hit) or "–") + " | "
                     + (f"{np.mean(rest):.2f} ({min(rest):.2f})" if rest else "–") + " |")
    return "\n".join(lines)


def _target_counts(summary):
    """The number of targets scored per attack, as text: "8" or "8 to 12"."""
    n = sorted({a["n_targets"] for a in summary["attacks"].values()}) or [0]
    return str(n[0]) if n[0] == n[-1] else f"{n[0]} to {n[-1]}"


def _replication_section(replication):
    """The issue-target table of a run on other seeds (data split, network, targets, poisons)."""
    if not replication:
        return []
    summary = summarise(replication)
    meta = load_meta(replication)
    runs = meta.get("runs", [meta] if "command" in meta else [])
    seeds = sorted({r["command"].split("--seed ")[1].split()[0] for r in runs
                    if "--seed " in r["command"]})
    return [
        "## Replication on targets the method never saw (computed)",
        "",
        "The same table for a second run with "
        f"{'seed ' + ', '.join(seeds) if seeds else 'another seed'}: another train/test split "
        "and pre-trained network, other targets and other poisons, none of which was looked "
        f"at while `{NEW_METHOD}` was designed. Commands:",
        "",
        *[f"- `{r['command']}`; wall time {r['wall_seconds'] / 60:.1f} min" for r in runs],
        "",
        target_lines(summary),
        "",
        "Its full per-defence tables: `python -m benchmarks.defense.report --out "
        f"{' '.join(os.path.relpath(o, REPO) for o in _outs(replication))} --docs-dir <folder>`.",
        "",
    ]


#: ``--partial`` writes its section between these markers of an existing page.
PARTIAL_BEGIN = "<!-- partial results: begin (report.py --partial) -->"
PARTIAL_END = "<!-- partial results: end -->"
PARTIAL_TITLE = "Realistic Feature Collision and Gradient Matching (partial)"
#: FINDINGS.md's section shown in the partial section.
PARTIAL_FINDINGS = "## Realistic settings:"


def findings_section(heading, path=None):
    """The body of FINDINGS.md's section whose heading line starts with
    ``heading``, up to the next section of the same level (or the results
    marker); "" when there is none."""
    path = path or os.path.join(HERE, "FINDINGS.md")
    text = open(path).read().partition("<!-- after-results -->")[0] if os.path.exists(path) else ""
    level = heading.split(" ")[0] + " "
    body, inside = [], False
    for line in text.splitlines():
        if line.startswith(heading):
            inside = True
            continue
        if inside and line.startswith(level):
            break
        if inside:
            body.append(line)
    return "\n".join(body).strip()


def partial_lines(out, attacks, *, planned, findings=None):
    """A section for runs still going: the per-defence tables of ``attacks``
    over the targets every defence has finished, issue 19's target check on
    them, FINDINGS.md's issue-19 section and the trajectory-signal table."""
    summary = summarise(out)
    missing = [a for a in attacks if a not in summary["attacks"]]
    if missing:
        raise SystemExit(f"Error: no results for {', '.join(missing)} in "
                         f"{', '.join(_outs(out))} (results_<attack>.jsonl)")
    summary["attacks"] = {a: summary["attacks"][a] for a in attacks}
    counts = ", ".join(f"{a}: {summary['attacks'][a]['n_targets']} of {planned}"
                       for a in attacks)
    seeds = sorted({r["command"].split("--seed ")[1].split()[0] if "--seed " in r["command"]
                    else "0" for r in load_meta(out)["runs"]})
    return [
        PARTIAL_BEGIN,
        f"## {PARTIAL_TITLE}",
        "",
        "**Partial results, kept apart from the complete tables under \"Results\" (an "
        "earlier run, without `trajectory`).** Targets finished with every defence so far "
        f"({counts}), seed {', '.join(seeds)}; the held-out seed and the full tables are not "
        "run. Generated by "
        f"`python -m benchmarks.defense.report --partial {' '.join(attacks)} --out "
        f"{' '.join(os.path.relpath(o, REPO) for o in _outs(out))}`.",
        markdown_table(summary),
        "",
        f"### The bar for `{NEW_METHOD}` on these targets (computed)",
        "",
        target_rule(),
        "",
        target_lines(summary),
        "",
        "### The realistic settings: attempts and state (from FINDINGS.md)",
        "",
        findings_section(PARTIAL_FINDINGS, findings),
        "",
        *_dynamics_section(out, level="###"),
        PARTIAL_END,
    ]


def write_partial(page, lines):
    """Put ``lines`` into ``page`` between the partial markers (replacing an
    older copy), or just before its "## Results" section; the rest of the page
    stays as it is. Written atomically."""
    try:
        text = open(page).read()
    except OSError as e:
        raise SystemExit(f"Error: {page}: cannot read the page to add a section to ({e})")
    block = "\n".join(lines) + "\n"
    if PARTIAL_BEGIN in text and PARTIAL_END in text:
        head, _, rest = text.partition(PARTIAL_BEGIN)
        tail = rest.partition(PARTIAL_END)[2].lstrip("\n")
        text = head + block + "\n" + tail
    elif "\n## Results\n" in text:
        head, _, tail = text.partition("\n## Results\n")
        text = head + "\n" + block + "\n## Results\n" + tail
    else:
        raise SystemExit(f"Error: {page}: neither the partial-results markers nor a "
                         "'## Results' heading to put the section before")
    tmp = page + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, page)


def write_docs(out, summary, meta, *, targets_dir, docs_dir=None, replication=None):
    docs_dir = docs_dir or os.path.join(REPO, "docs")
    os.makedirs(docs_dir, exist_ok=True)
    png = os.path.join(docs_dir, "defense-asr-vs-accuracy.png")
    plot(summary, png)
    findings_path = os.path.join(HERE, "FINDINGS.md")
    findings = open(findings_path).read() if os.path.exists(findings_path) else ""
    before, _, after = findings.partition("<!-- after-results -->")
    m = meta.get("machine", {})
    runs = meta.get("runs", [meta] if "command" in meta else [])
    run_lines = [f"- `{r['command']}`: {', '.join(r.get('attacks', []))}; started "
                 f"{r['started']}, finished {r['finished']}, wall time "
                 f"{r['wall_seconds'] / 60:.1f} min" for r in runs]
    text = [
        "# Defence benchmark: ART poisoning attacks vs gradscore and peers",
        "",
        "Generated by `benchmarks/defense/report.py` from the run's `results_<attack>.jsonl`;",
        "the discussion sections come from `benchmarks/defense/FINDINGS.md`.",
        "",
        "## Run",
        "",
        "Commands, run from the repository root (a rerun with the same `--out` resumes and "
        "skips finished targets):",
        "",
        *run_lines,
        "",
        "To reproduce everything from scratch (`D` = `none epic-0.1 "
        "epic-0.2 epic-0.3 deep-knn groups trajectory spectral art-activation art-spectral`): "
        "`python -m benchmarks.defense.run --targets 25 --save-trajectory --defences D "
        "--attacks backdoor gradient-matching-35 bullseye-polytope gradient-matching "
        "feature-collision --out benchmarks/out/defense` (the five original settings), the "
        "same with `--attacks feature-collision-10pct backdoor-10pct bullseye-polytope-10pct "
        "--out benchmarks/out/defense-10pct` (poisons at most 10% of their class) and with "
        "`--attacks gradient-matching-10pct --out benchmarks/out/defense-gm10`; the held-out "
        "seed: each of them with `--seed 2 --targets-dir benchmarks/defense/targets-seed2 "
        "--out benchmarks/out/defense-seed2`. Then `python -m benchmarks.defense.dynamics "
        "--dir <each out folder>` and `python -m benchmarks.defense.report --out "
        "benchmarks/out/defense benchmarks/out/defense-10pct benchmarks/out/defense-gm10 "
        "--replication benchmarks/out/defense-seed2`. A run resumes where it stopped and "
        "skips (target, defence) pairs already measured, so the steps can be split "
        "(`--defences`, `--only-targets`) and run side by side. ",
        "Smoke test: `python -m benchmarks.defense.run --quick` (2 backdoor targets, 6 epochs). "
        "Add `--device cuda` to run on a GPU.",
        "",
        f"- machine: {m.get('processor')}, {m.get('cpu_count')} CPU cores shared with other "
        f"jobs (timings are noisy), device `{m.get('device')}`{', ' + m['gpu'] if m.get('gpu') else ''}; "
        f"Python {m.get('python')}, torch {m.get('torch')}, ART {m.get('art')}, "
        f"gradscore {m.get('gradscore')}",
        "",
        "## Attack settings",
        "",
        "| attack | implementation | data | poisons (share of train) | attack params | victim |",
        "|---|---|---|---|---|---|",
        *_settings_lines(targets_dir),
        "",
        before.strip(),
        "",
        "## Results",
        "",
        "ASR: share of targets misclassified into the adversarial class (targeted attacks; "
        "with the 95% Wilson interval) or share of triggered test images of other classes "
        "classified as the target class (backdoor; mean ± sd over targets). Other columns: "
        "mean ± sd over targets. *Poison recall*: share of the poisons the defence dropped; "
        "*clean dropped*: share of clean training examples dropped; *defence s*: the "
        "defence's own time per victim (gradscore: exports + scoring over all drop rounds; "
        "ART: `detect_poison`), not the training.",
        markdown_table(summary),
        "",
        "![ASR vs clean accuracy](defense-asr-vs-accuracy.png)",
        "",
        "Each panel scales its accuracy axis to its own points, which span only a few "
        "points of accuracy; compare positions within a panel, not across panels.",
        "",
        *_isolation_section(out),
        "",
        "## The bar for the `trajectory` method (computed)",
        "",
        target_rule(),
        "",
        target_lines(summary),
        "",
        "Where the group methods miss: their poison recall over the six rounds on the "
        "targets whose attack still succeeds under them, and on the others.",
        "",
        miss_lines(out, "groups"),
        "",
        miss_lines(out, NEW_METHOD),
        "",
        *_replication_section(replication),
        *_dynamics_section(out),
        *_separation_section(out),
        *_signals_section(out),
        "## Verdicts (computed)",
        "",
        f"An attack counts as succeeding undefended when its undefended ASR is at least "
        f"{100 * SUCCESS_ASR:.0f}%. *Paper's EPIC rule*: `method=epic`, logit gradients, "
        "fraction 0.1/0.2/0.3 (best of the three). *gradscore's other settings*: "
        "knn-density, last-layer gradients, deep-knn, groups, spectral (best of them). Best = "
        "lowest mean ASR, ties broken by clean accuracy. Differences of a few targets are within "
        f"noise at {_target_counts(summary)} targets (see the intervals and the paired sign "
        "test).",
        "",
        verdict_lines(summary),
        "",
        after.strip(),
        "",
    ]
    with open(os.path.join(docs_dir, "defense-benchmark.md"), "w") as fh:
        fh.write("\n".join(text))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", nargs="+", default=[os.path.join(REPO, "benchmarks", "out", "defense")],
                    help="one or more output folders of run.py; their results are merged")
    ap.add_argument("--targets-dir", default=os.path.join(HERE, "targets"))
    ap.add_argument("--docs-dir", default=None)
    ap.add_argument("--replication", nargs="+", default=None,
                    help="output folders of a run with another --seed: reported apart, "
                         "never merged with --out")
    ap.add_argument("--partial", nargs="+", default=None, metavar="ATTACK",
                    help="runs still going: add only these attacks' results (targets "
                         "finished so far) as a section of the existing page, leaving the "
                         "complete tables as they are")
    ap.add_argument("--planned", type=int, default=25,
                    help="with --partial: the targets the runs will have when complete")
    args = ap.parse_args(argv)
    if args.partial:
        page = os.path.join(args.docs_dir or os.path.join(REPO, "docs"), "defense-benchmark.md")
        write_partial(page, partial_lines(args.out, args.partial, planned=args.planned))
        return 0
    summary = summarise(args.out)
    print(markdown_table(summary))
    meta = load_meta(args.out)
    write_docs(args.out, summary, meta, targets_dir=args.targets_dir, docs_dir=args.docs_dir,
               replication=args.replication)
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, REPO)
    sys.exit(main())
