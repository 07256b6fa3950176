"""The text audit against issue 29's target, beside cleanlab, on the same features.

Usage::

    nice -n 10 python -m benchmarks.audit.text_measure --seeds 0 1 --out benchmarks/out/audit/text

For each seed: the generated set of :mod:`benchmarks.audit.textset` (its
defaults: 4,000 rows, 4 classes, 2% trigger-word poisons into class 0, 2%
label flips), a word-level tokenizer trained on it, and a text encoder
(token + position embeddings, one tanh layer, mean pooling) exported to
ONNX, one of two kinds, neither of which knows the attack or the labels:

- ``random``: random weights, width 512 (a random projection of the bag of
  words; measured first);
- ``pretrained``: token vectors learnt without labels from a clean corpus
  of the same text (:func:`benchmarks.audit.textset.pretrained_vectors`,
  width 64), the stand-in for a generic pretrained sentence encoder.

 ``gradscore audit ENC set.csv --text-column text --probe`` runs the
default method through the CLI's own function; cleanlab's
``find_label_issues`` and Datalab (label issues) get the audit's export:
the same out-of-fold probe probabilities and the same features.

Reported per method: share of poisons and of flips dropped, share of clean
rows dropped, and (a diagnostic, not a method: it needs the truth) the
poison and flip recall when the method's own score is thresholded to drop
exactly 1% of clean rows (gradscore: its score; cleanlab: the probe's
probability of the given label). A last row per seed is no method either:
the generator's exact posterior of the given label
(:func:`benchmarks.audit.textset.posterior`; dropped: below 0.5), the best
any audit could know, showing whether the target is reachable at all.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    __package__ = "benchmarks.audit"

from . import textset as T  # noqa: E402
from .methods import Case  # noqa: E402

TARGET = {"poison": 0.95, "flip": 0.90, "clean": 0.01}
PEERS = ("cleanlab", "datalab-label")


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def at_one_percent(score, kind):
    """Poison and flip recall when dropping lowest ``score`` down to 1% of clean rows."""
    clean = np.sort(score[kind == "clean"])
    cut = clean[int(np.floor(0.01 * clean.size))]
    drop = score < cut
    return float(drop[kind == "poison"].mean()), float(drop[kind == "flip"].mean())


def rates(drop, kind):
    return {k: float(drop[kind == k].mean()) for k in ("poison", "flip", "clean")}


def one_seed(seed, out, width, encoder):
    import h5py
    import pyarrow as pa
    import pyarrow.csv as pcsv
    from tokenizers import Tokenizer

    from gradscore.audit import audit

    os.makedirs(out, exist_ok=True)
    d = T.generate(seed=seed)
    kind = d["kind"]
    pcsv.write_csv(pa.table({"text": d["text"], "label": d["label"]}),
                   os.path.join(out, "set.csv"))
    tok = T.train_tokenizer(d["text"], os.path.join(out, "tokenizer.json"))
    if encoder == "random":
        enc = T.export_encoder(os.path.join(out, "encoder.onnx"),
                               Tokenizer.from_file(tok).get_vocab_size(), width=width)
    else:
        enc = T.export_encoder(os.path.join(out, "encoder.onnx"), 0,
                               token_vectors=T.pretrained_vectors(tok))
    t0 = time.time()
    res = audit(enc, os.path.join(out, "set.csv"), os.path.join(out, "audit"), probe=True,
                text_column="text", random_state=seed)
    wall = time.time() - t0
    log(f"seed {seed}: audit of {kind.size} rows in {wall:.0f} s")
    keep = set(int(v) for v in open(res["keep"]).read().split())
    rows = {}
    drop = np.array([i not in keep for i in range(kind.size)])
    with h5py.File(res["export"], "r") as f:
        ids = f["ids"][()]
        case = Case(labels=f["labels"][()], logits=f["logits"][()],
                    features=f["features"][()], seed=seed)
    assert (ids == np.arange(kind.size)).all()
    import csv
    with open(res["scores"], newline="") as fh:
        score = np.array([float(r["score"]) for r in csv.DictReader(fh)])
    rows["gradscore audit (label-support)"] = dict(rates(drop, kind),
                                                   at1=at_one_percent(score, kind))
    post = T.posterior(d["text"])[np.arange(kind.size), d["label"]]
    rows["generator's exact posterior (oracle)"] = dict(
        rates(post < 0.5, kind), at1=at_one_percent(post, kind))
    self_conf = case.probs[np.arange(kind.size), case.labels]
    for name in PEERS:
        t1 = time.time()
        m = case.mask(name)
        log(f"seed {seed}: {name} in {time.time() - t1:.0f} s")
        rows[name] = dict(rates(m, kind), at1=at_one_percent(self_conf, kind)
                          if name == "cleanlab" else None)
    return {"seed": seed, "encoder": encoder, "n": int(kind.size),
            "probe_accuracy": res["summary"]["probe"]["accuracy"], "audit_wall_s": wall,
            "rows": rows,
        "counts": {k: int((kind == k).sum()) for k in ("clean", "poison", "flip")}}


def table(results):
    lines = ["| encoder | seed | method | poisons dropped | flips dropped | clean dropped | "
             "target met | recall at 1% clean (poison / flip) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, v in r["rows"].items():
            met = v["poison"] >= TARGET["poison"] and v["flip"] >= TARGET["flip"] and \
                v["clean"] <= TARGET["clean"]
            at1 = "" if v["at1"] is None else f"{v['at1'][0]:.1%} / {v['at1'][1]:.1%}"
            lines.append(f"| {r['encoder']} | {r['seed']} | {name} | {v['poison']:.1%} | "
                         f"{v['flip']:.1%} | {v['clean']:.2%} | {'yes' if met else 'no'} | "
                         f"{at1} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--width", type=int, default=512, help="random encoder's width")
    ap.add_argument("--encoders", nargs="+", choices=("random", "pretrained"),
                    default=["random", "pretrained"])
    ap.add_argument("--out", default=os.path.join("benchmarks", "out", "audit", "text"))
    args = ap.parse_args(argv)
    results = [one_seed(s, os.path.join(args.out, f"{e}-seed{s}"), args.width, e)
               for e in args.encoders for s in args.seeds]
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    for r in results:
        print(f"{r['encoder']} encoder, seed {r['seed']}: {r['counts']}, probe accuracy "
              f"{r['probe_accuracy']:.1%}, "
              f"audit {r['audit_wall_s']:.0f} s")
    print(table(results))


if __name__ == "__main__":
    main()
