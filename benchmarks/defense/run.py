"""Defence benchmark: ART poisoning attacks vs gradscore and peer defences.

Usage::

    python -m benchmarks.defense.run --quick            # smoke test, ~2 min on 2 CPU cores
    python -m benchmarks.defense.run                    # full run, writes docs/
    python -m benchmarks.defense.run --device cuda      # same, on a GPU

Every (attack, target, defence) result is appended to
``<out>/results_<attack>.jsonl`` as soon as it is measured, so a run that is cut off
still leaves its data, and a rerun skips the (target, defence) pairs already
done: ``--defences NAME`` adds one defence's rows to existing results without
re-running the others.
Targets and poison indices are fixed by seed and written to
``<targets-dir>/<attack>.json``; a later run re-crafts the same poisons and
checks their hash against that file.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

if __package__ in (None, ""):          # python benchmarks/defense/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "benchmarks.defense"

from . import attacks as A                     # noqa: E402
from . import config as C                      # noqa: E402
from . import data as D                        # noqa: E402
from . import models as M                      # noqa: E402
from . import report                           # noqa: E402
from . import victim as V                      # noqa: E402
from .shared import (HERE, REPO, load_or_craft, log, poison_digest,  # noqa: E402,F401
                     pretrained_model)

def draw_rows(ok, n, draw, rng):
    """The first ``n`` test rows of a setting's targets, drawn from ``ok``.

    Draws the full run's ``draw`` targets and takes the first ``n``, so that a
    shorter run (``--targets n``) scores a prefix of the full run's targets.
    A setting may fix its own draw size (``target_draw``: the realistic
    settings were first run with 12 targets, drawn before this rule). Targets
    beyond the draw come from a second draw of the same generator among the
    rows not drawn yet, so that a longer run extends the shorter one's
    targets instead of replacing them.
    """
    rows = rng.choice(ok, size=min(draw, ok.size), replace=False)
    if n > rows.size:
        rest = np.setdiff1d(ok, rows)
        rows = np.concatenate([rows, rng.choice(rest, size=min(n - rows.size, rest.size),
                                                replace=False)])
    return rows[:n]


def choose_targets(name, splits, pretrained, n, seed, device):
    """Targets fixed by seed.

    Targeted attacks: test images the pre-trained net gets right, each with
    its runner-up class as the adversarial class (the attacker's natural
    choice). Backdoor: one adversarial class per target, cycling 0..9.
    """
    rng = np.random.default_rng(seed)
    if cfg_kind(name) == "backdoor":
        return [dict(target=i, adv=int(i % splits.num_classes), seed=seed * 1000 + i)
                for i in range(n)]
    feats, logits = M.outputs(pretrained, splits.x_test, device)
    ok = np.flatnonzero(logits.argmax(1) == splits.y_test)
    rows = draw_rows(ok, n, C.ATTACKS[name].get("target_draw", C.FULL["n_targets"]), rng)
    out = []
    for i, r in enumerate(rows):
        lg = logits[r].copy()
        lg[splits.y_test[r]] = -np.inf
        out.append(dict(target=i, test_index=int(r), true=int(splits.y_test[r]),
                        adv=int(lg.argmax()), seed=seed * 1000 + i))
    return out


def cfg_kind(name):
    return C.ATTACKS[name].get("kind", name)


def target_eval_set(name, splits, t):
    if cfg_kind(name) == "backdoor":
        m = splits.y_test != t["adv"]
        return dict(kind="backdoor", x=A.trigger_fn(splits)(splits.x_test[m]), adv=t["adv"])
    r = t["test_index"]
    return dict(kind="targeted", x=splits.x_test[r:r + 1], adv=t["adv"])


def done_pairs(results_path):
    """(target, defence) pairs already measured in ``results_path``.

    Rows are appended one per (target, defence) as soon as measured, so a
    run that was cut off leaves only whole rows; a later run measures the
    missing pairs, and a run with a new defence adds only its rows.
    """
    return {(r["target"], r["defence"]) for r in report.load_rows(results_path)}


def warm_up_jit():
    """Run each gradscore method once on toy data, so numba's compile time is
    not charged to the first target's defence time."""
    import warnings
    import gradscore
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    logits = rng.normal(size=(120, 3))
    feats = rng.normal(size=(120, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for d in V.default_defences():
            if d.kind == "gradscore":
                kw = {}
                if d.params.get("method") == "trajectory":
                    from gradscore.history import history_from_arrays
                    kw["history"] = history_from_arrays(labels, [(labels, logits)])
                gradscore.score(labels, logits, feats, **d.params, **kw)


def limit_threads(n):
    """One BLAS/OpenMP thread per process (as many as torch gets).

    On a shared 2-core machine multi-threaded BLAS made gradscore's small
    SVDs (method="spectral") about 10x slower than single-threaded; timings
    would measure the contention, not the method.
    """
    import torch
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass


def run_attack(name, args):
    limit_threads(args.threads)
    quick = args.quick
    cfg = C.attack_config(name, quick=quick, overrides=args.set)
    out = args.out
    cfg.update(seed=args.seed, out=out)
    os.makedirs(out, exist_ok=True)
    splits = D.load(cfg["dataset"], seed=args.seed)
    pretrained = pretrained_model(splits, args.seed, args.device, out)
    n_targets = args.targets or (C.QUICK["n_targets"] if quick else C.FULL["n_targets"])
    budget = cfg["n_poisons"] / len(splits.x_train)
    defences = V.default_defences(expected_poison_fraction=0.05)
    if args.defences:
        defences = [d for d in defences if d.name in args.defences]

    # Targets: fixed by seed, saved so runs are comparable.
    os.makedirs(args.targets_dir, exist_ok=True)
    tpath = os.path.join(args.targets_dir, f"{name}.json")
    saved = None
    if os.path.exists(tpath):
        with open(tpath) as fh:
            saved = json.load(fh)
    targets = choose_targets(name, splits, pretrained, n_targets, args.seed, args.device)
    if saved is not None:
        by_t = {s["target"]: s for s in saved["targets"]}
        for t in targets:
            s = by_t.get(t["target"])
            if s and (s.get("test_index"), s["adv"]) != (t.get("test_index"), t["adv"]):
                raise SystemExit(f"{tpath}: target {t['target']} differs from this run's choice; "
                                 "seed or data changed")
    warm_up_jit()
    results_path = os.path.join(out, f"results_{name}.jsonl")
    done = done_pairs(results_path)
    doc = dict(attack=name, art=cfg["art"], dataset=cfg["dataset"], seed=args.seed,
               n_train=int(len(splits.x_train)), n_poisons=cfg["n_poisons"],
               poison_fraction=budget, params={k: v for k, v in cfg["params"].items()},
               victim=vars(cfg["victim"]), targets=[])
    if saved is not None:
        doc["targets"] = saved["targets"]
    known = {s["target"]: s for s in doc["targets"]}
    if args.only_targets is not None:
        by_number = {t["target"]: t for t in targets}
        targets = [by_number[i] for i in args.only_targets if i in by_number]
    for t in targets:
        # Read again: another process may have finished this target meanwhile.
        done = done_pairs(results_path)
        todo = [d for d in defences if (t["target"], d.name) not in done]
        if not todo:
            log(f"{name}: target {t['target']} already done, skipped")
            continue
        t0 = time.perf_counter()
        xp, yp, idx, craft_s = load_or_craft(name, cfg, splits, pretrained, t, args.device, out)
        digest = poison_digest(xp, yp, idx)
        entry = dict(t, poison_idx=[int(i) for i in idx], poison_sha=digest,
                     class_share=float(len(idx) / np.sum(yp == t["adv"])))
        old = known.get(t["target"])
        if old is not None and old.get("poison_sha") not in (None, digest):
            log(f"WARNING {name} target {t['target']}: poisons differ from {tpath} "
                f"({old['poison_sha']} vs {digest}); nondeterministic crafting?")
        known[t["target"]] = entry
        if os.path.exists(tpath):
            # Another process may be working on other targets of this attack.
            with open(tpath) as fh:
                for s in json.load(fh)["targets"]:
                    known.setdefault(s["target"], s)
        doc["targets"] = [known[k] for k in sorted(known)]
        # The poisons' largest share of the class they are labelled as.
        doc["class_share"] = max(e.get("class_share", 0.0) for e in doc["targets"])
        with open(tpath + ".tmp", "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tpath + ".tmp", tpath)
        tgt = target_eval_set(name, splits, t)
        workdir = os.path.join(out, "exports", name, f"target_{t['target']:03d}")

        def on_result(r, t=t):
            r = dict(r, attack=name, target=t["target"], adv=t["adv"], craft_seconds=craft_s,
                     device=args.device, quick=quick)
            with open(results_path, "a") as fh:
                fh.write(json.dumps(r) + "\n")

        traj = None
        if args.save_trajectory:
            os.makedirs(os.path.join(out, "trajectory"), exist_ok=True)
            traj = os.path.join(out, "trajectory", f"{name}_{t['target']:03d}.npz")
            if os.path.exists(traj) or not any(d.name == "none" for d in todo):
                traj = None
        res = V.run_target(pretrained, splits, xp, yp, idx, tgt, cfg["victim"], todo,
                           seed=t["seed"], device=args.device, workdir=workdir,
                           on_result=on_result, trajectory=traj)
        none = [r for r in res if r["defence"] == "none"]
        log(f"{name}: target {t['target']} adv={t['adv']} poisons={len(idx)} "
            f"craft {craft_s:.1f}s, all defences {time.perf_counter() - t0:.1f}s; "
            f"undefended success={none[0]['success'] if none else 'n/a'}")
        if not args.keep_exports:
            # Only this run's defences: another process may be exporting other
            # defences of the same target (--only-targets, --defences).
            import shutil
            for d in todo:
                shutil.rmtree(os.path.join(workdir, d.name), ignore_errors=True)
            if any(d.params.get("method") == "trajectory" for d in todo):
                try:
                    os.remove(os.path.join(workdir, "reference_epoch_000.h5"))
                except OSError:
                    pass
            try:
                os.rmdir(workdir)
            except OSError:
                pass
    return name


def run_parallel(attacks, args):
    """One child process per attack, ``args.jobs`` at a time.

    Plain subprocesses rather than a multiprocessing pool: ART's
    GradientMatchingAttack opens DataLoader workers, which daemonic pool
    workers may not do.
    """
    import subprocess
    base = [sys.executable, "-m", "benchmarks.defense.run", "--worker", "--device", args.device,
            "--out", args.out, "--targets-dir", args.targets_dir, "--seed", str(args.seed),
            "--threads", str(args.threads)]
    if args.quick:
        base.append("--quick")
    if args.targets:
        base += ["--targets", str(args.targets)]
    if args.only_targets:
        base += ["--only-targets", *map(str, args.only_targets)]
    if args.defences:
        base += ["--defences", *args.defences]
    if args.keep_exports:
        base.append("--keep-exports")
    if args.set:
        base += ["--set", *args.set]
    if args.save_trajectory:
        base.append("--save-trajectory")
    pending = list(attacks)
    running = []
    failed = []
    while pending or running:
        while pending and len(running) < args.jobs:
            a = pending.pop(0)
            log(f"starting worker for {a}")
            running.append((a, subprocess.Popen(base + ["--attacks", a], cwd=REPO)))
        time.sleep(1.0)
        for a, p in list(running):
            if p.poll() is not None:
                running.remove((a, p))
                if p.returncode != 0:
                    failed.append(a)
                log(f"worker for {a} exited with {p.returncode}")
    if failed:
        log(f"WARNING: workers failed for {failed}; their partial results are kept")


def append_meta(out, run):
    """Record this invocation in ``<out>/run_meta.json`` (a list: resumed or
    extended runs keep the earlier invocations) and return the whole record."""
    path = os.path.join(out, "run_meta.json")
    runs = []
    if os.path.exists(path):
        old = json.load(open(path))
        runs = old.get("runs", [old]) if isinstance(old, dict) else []
    runs.append(run)
    meta = dict(runs=runs, machine=run["machine"])
    with open(path + ".tmp", "w") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(path + ".tmp", path)
    return meta


def machine_info(args):
    import torch
    info = dict(python=platform.python_version(), platform=platform.platform(),
                processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), torch=torch.__version__, device=args.device)
    try:
        import art
        info["art"] = art.__version__
    except ImportError:
        pass
    import gradscore
    info["gradscore"] = gradscore.__version__
    if args.device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 targets of one attack, 6 epochs")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", default=None,
                    help="output folder (default benchmarks/out/defense[-quick])")
    ap.add_argument("--targets-dir", default=None,
                    help="where target/poison definitions go (default: benchmarks/defense/"
                         "targets for full runs, <out>/targets for --quick)")
    ap.add_argument("--attacks", nargs="+", choices=C.ALL_ATTACKS, default=None)
    ap.add_argument("--defences", nargs="+", default=None, help="subset of defence names")
    ap.add_argument("--targets", type=int, default=None, help="targets per attack")
    ap.add_argument("--only-targets", type=int, nargs="+", default=None,
                    help="of those, run only these target numbers, in this order (to share "
                         "one attack's targets between processes writing to the same --out)")
    ap.add_argument("--jobs", type=int, default=1, help="attacks run in parallel processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override a setting for exploration, e.g. n_poisons=40 "
                         "params.epsilon=0.125 victim.lr=0.002 (use a separate --out)")
    ap.add_argument("--keep-exports", action="store_true", help="keep the HDF5 exports")
    ap.add_argument("--save-trajectory", action="store_true",
                    help="save the undefended victim's per-epoch logits (and features at the "
                         "drop epochs) as <out>/trajectory/<attack>_<target>.npz")
    ap.add_argument("--docs", action="store_true",
                    help="write docs/defense-benchmark.md and the PNG (default for full runs)")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(REPO, "benchmarks", "out", "defense-quick" if args.quick else "defense")
    if args.targets_dir is None:
        args.targets_dir = (os.path.join(args.out, "targets") if args.quick
                            else os.path.join(HERE, "targets"))
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible to torch")
    attacks = args.attacks or (C.QUICK["attacks"] if args.quick else C.FULL["attacks"])
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if args.jobs > 1 and len(attacks) > 1:
        # Pre-train once here, so the workers load one shared network.
        import torch
        torch.set_num_threads(args.threads)
        for ds in sorted({C.ATTACKS[a]["dataset"] for a in attacks}):
            pretrained_model(D.load(ds, seed=args.seed), args.seed, args.device, args.out)
        run_parallel(attacks, args)
    else:
        for a in attacks:
            run_attack(a, args)
    if args.worker:
        return 0
    wall = time.perf_counter() - t0
    meta = dict(command="python -m benchmarks.defense.run " + " ".join(argv or sys.argv[1:]),
                started=started, finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                wall_seconds=wall, machine=machine_info(args), attacks=attacks)
    meta = append_meta(args.out, meta)
    summary = report.summarise(args.out)
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    print(report.markdown_table(summary))
    write_docs = (args.docs or not args.quick) and not args.no_docs
    if write_docs:
        report.write_docs(args.out, summary, meta, targets_dir=args.targets_dir)
    log(f"done in {wall:.0f}s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
