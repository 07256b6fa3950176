"""The defence benchmark's poisoned training sets, crafted once and cached.

Usage::

    nice -n 19 python -m benchmarks.audit.poisons --attacks bullseye-polytope --targets 8

Reuses ``benchmarks.defense`` as it is: its data splits, its pre-trained
network (trained on the split neither poisons nor targets come from), its
targets (``benchmarks/defense/targets/<attack>.json``) and ART's crafting
through ``shared.load_or_craft``. Poisons are cached under
``benchmarks/out/audit/poisons/<attack>/``; each set's hash is checked against
the one the defence benchmark recorded, so the audit measures the very
poisons the training-loop benchmark measured.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    __package__ = "benchmarks.audit"

from ..defense import config as C      # noqa: E402
from ..defense import data as D        # noqa: E402
from ..defense import run as R         # noqa: E402
from ..defense import shared as S      # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, "benchmarks", "out", "audit")
TARGETS_DIR = os.path.join(REPO, "benchmarks", "defense", "targets")


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def targets_of(attack, n):
    """The first ``n`` targets the defence benchmark recorded for ``attack``."""
    with open(os.path.join(TARGETS_DIR, f"{attack}.json")) as fh:
        doc = json.load(fh)
    return sorted(doc["targets"], key=lambda t: t["target"])[:n]


def encoder(dataset, *, seed=0, out=OUT):
    """The benchmark's pre-trained network for ``dataset`` (trained once, cached)."""
    os.makedirs(out, exist_ok=True)
    splits = D.load(dataset, seed=seed)
    return splits, S.pretrained_model(splits, seed, "cpu", out)


def poisoned_set(attack, target, splits, pretrained, *, out=OUT, check=True):
    """``(x, y, poison_idx)``: the training set with ``target``'s poisons in place."""
    cfg = C.attack_config(attack)
    xp, yp, idx, _ = S.load_or_craft(attack, cfg, splits, pretrained, target, "cpu", out)
    if check and target.get("poison_sha"):
        got = S.poison_digest(xp, yp, idx)
        if got != target["poison_sha"]:
            raise RuntimeError(f"{attack} target {target['target']}: poisons hash {got}, the "
                               f"defence benchmark recorded {target['poison_sha']}")
    return xp, yp, np.asarray(idx)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attacks", nargs="+", choices=C.ALL_ATTACKS, required=True)
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    R.limit_threads(args.threads)
    for attack in args.attacks:
        splits, net = encoder(C.ATTACKS[attack]["dataset"])
        for t in targets_of(attack, args.targets):
            t0 = time.perf_counter()
            _, _, idx = poisoned_set(attack, t, splits, net)
            log(f"{attack} target {t['target']}: {len(idx)} poisons, "
                f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
