"""Before/after check: do keep-lists and score tables stay byte-identical?

Scores every method on the fixture export and on a synthetic export
(``benchmarks/synth.py``), in memory, and for the methods that run spilled
and on Dask also spilled and on a local 2-worker Dask cluster (127.0.0.1,
started and stopped here). It hashes every keep-list (``.txt``) and score
table (``.csv``) written through :func:`gradscore.score_files`, the library's
entry point, so a refactoring that moves code around can be checked against
the code before it:

    python benchmarks/check_same_results.py --write before.json   # old code
    python benchmarks/check_same_results.py --compare before.json # new code

``--n`` and ``--features`` size the synthetic export (default 20,000 x 64;
the full check uses ``--n 120000 --features 512``). ``--no-dask`` skips the
cluster; ``--gradient logits`` has epic and knn-density compare logits
gradients instead of last-layer ones (much cheaper on wide exports).
The hashes of the code before the scoring stages became one package are in
``check_same_results.before.json`` (the defaults) and
``check_same_results.before-120000x512.json`` (``--n 120000 --features 512
--gradient logits``). Exit status 1 when any hash differs from the file compared with.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import warnings

import numpy as np

import gradscore
from gradscore.io.reader import read_epoch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "fixtures", "digits_epoch.h5")
METHODS = ("epic", "knn-density", "deep-knn", "spectral", "groups", "trajectory",
           "label-support")
#: Methods that score only in memory (no spill, no Dask).
IN_MEMORY = ("trajectory",)
#: Columns for reviewers that score tables gained after the baselines were
#: taken (suggested label, how sure, which signal): left out of ``scores_core``.
REVIEW_COLUMNS = ("suggested_label", "suggestion_confidence", "signal")


def sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def sha_core(path):
    """The hash of a ``.csv`` score table without :data:`REVIEW_COLUMNS`, as the
    baselines' tables were written."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = fh.read().split("\r\n")        # the csv module's line ends
    head = rows[0].split(",")
    keep = [i for i, c in enumerate(head) if c not in REVIEW_COLUMNS]
    if len(keep) == len(head):
        return sha(path)
    # The review columns are the last ones and hold no commas.
    text = "\r\n".join(",".join(r.split(",")[:len(keep)]) if r else r for r in rows)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_reference(path, out):
    """A reference export (epoch 0) for ``trajectory``: the same rows, ids and
    labels, with logits of a less trained model (scaled down, plus fixed noise)."""
    ep = read_epoch([path], need_features=False)
    rng = np.random.default_rng(7)
    logits = (0.3 * ep.logits.astype(np.float64)
              + rng.normal(scale=0.5, size=ep.logits.shape)).astype(np.float32)
    kind = "str" if ep.ids.dtype.kind in "OUS" else "int"
    with gradscore.EpochWriter(out, num_classes=ep.num_classes, n_rows=ep.labels.size,
                               epoch=0, id_kind=kind) as w:
        w.append(ep.labels, logits, None, ep.ids)
    return out


def params_for(method, gradient):
    p = dict(method=method)
    if method in ("epic", "knn-density"):
        p["gradient"] = gradient
    return p


def run_one(tag, path, method, folder, *, history=None, gradient="last-layer", **kw):
    out = os.path.join(folder, f"{tag}-{method}.keep.txt")
    sc = os.path.join(folder, f"{tag}-{method}.scores.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradscore.score_files([path], output=out, scores_path=sc,
                              history=[history] if method == "trajectory" else None,
                              **params_for(method, gradient), **kw)
    return {"keep": sha(out), "scores": sha(sc), "scores_core": sha_core(sc)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", help="store the hashes in this JSON file")
    ap.add_argument("--compare", help="compare with the hashes in this JSON file")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--gradient", default="last-layer", choices=["last-layer", "logits"],
                    help="the gradient epic and knn-density compare by (logits: cheaper "
                         "on wide exports)")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="gradscore-check-") as folder:
        synth_path = os.path.join(folder, "synth.h5")
        synth.make(synth_path, n=args.n, classes=10, features=args.features, seed=0)
        inputs = {"fixture": os.path.abspath(FIXTURE), "synth": synth_path}
        refs = {name: write_reference(p, os.path.join(folder, f"{name}-ref.h5"))
                for name, p in inputs.items()}
        client = cluster = None
        if not args.no_dask:
            from distributed import Client, LocalCluster
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                   dashboard_address=None, processes=True)
            client = Client(cluster, timeout=60)
        try:
            for name, path in inputs.items():
                for method in METHODS:
                    key = f"{name}/{method}"
                    results[key + "/memory"] = run_one(name + "-mem", path, method, folder,
                                                       history=refs[name], spill="never",
                                                       gradient=args.gradient)
                    print(key, "memory", flush=True)
                    if method in IN_MEMORY:
                        continue
                    results[key + "/spilled"] = run_one(name + "-spill", path, method, folder,
                                                        spill="always", n_jobs=2,
                                                        gradient=args.gradient)
                    print(key, "spilled", flush=True)
                    if client is not None:
                        results[key + "/dask"] = run_one(name + "-dask", path, method, folder,
                                                         client=client, gradient=args.gradient)
                        print(key, "dask", flush=True)
        finally:
            if client is not None:
                client.close()
                cluster.close()
    meta = {"n": args.n, "features": args.features}
    if args.gradient != "last-layer":
        meta["gradient"] = args.gradient
    if args.write:
        tmp = args.write + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"synth": meta, "hashes": results}, fh, indent=1, sort_keys=True)
        os.replace(tmp, args.write)
    if args.compare:
        with open(args.compare) as fh:
            before = json.load(fh)
        if before["synth"] != meta:
            sys.exit(f"{args.compare} was made with synth {before['synth']}, not {meta}")
        bad = [k for k in sorted(set(before["hashes"]) | set(results))
               if not _same(k, before["hashes"], results)]
        for k in bad:
            print(f"DIFFERS: {k}: before {before['hashes'].get(k)} now {results.get(k)}")
        print(f"{len(results) - len(bad)} of {len(results)} runs byte-identical (keep-lists, "
              "and score tables without the columns for reviewers; a run the baseline "
              "lacks, such as label-support spilled, is held to the same method in memory)")
        if bad:
            sys.exit(1)


def _same(key, before, now):
    """``now[key]`` gives the keep-list and score table of ``before[key]`` (or of
    the same method's in-memory run, when the baseline has no such run)."""
    if key not in now:
        return False
    ref = before.get(key) or now.get(key.rsplit("/", 1)[0] + "/memory")
    if ref is None:
        return False
    return (ref["keep"] == now[key]["keep"]
            and ref.get("scores_core", ref["scores"]) == now[key]["scores_core"])


if __name__ == "__main__":
    main()
