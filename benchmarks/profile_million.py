"""Where the time of a logits-gradient run on 1M x 10 x 512 float16 goes:
reading and checking the export (and within it the unused features) versus
scoring. Runs in one process against whichever gradscore is importable, so
the same script times the code before and after a change:

    python benchmarks/profile_million.py FILE.h5 [--deep] [--jobs N]

FILE: ``bench_score.py --configs million`` makes one (benchmarks/data/).
Prints one JSON line: wall and CPU seconds (all threads) of the read and of
the scoring, the best of ``--repeat`` reads, and ``uptime``'s load.
"""

import argparse
import inspect
import json
import os
import time

import gradscore
from gradscore.scoring.memory import check_params, score_checked


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--deep", action="store_true", help="read_epoch(deep=True), if supported")
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--repeat", type=int, default=2, help="reads timed (best kept)")
    ap.add_argument("--no-score", action="store_true")
    a = ap.parse_args()
    kw = {"need_features": False}
    if a.deep:
        if "deep" not in inspect.signature(gradscore.read_epoch).parameters:
            raise SystemExit("this gradscore has no deep= option")
        kw["deep"] = True
    reads = [timed(lambda: gradscore.read_epoch(a.path, **kw)) for _ in range(a.repeat)]
    ep, read_wall, read_cpu = min(reads, key=lambda r: r[1])
    out = {"gradscore": os.path.dirname(gradscore.__file__), "read_kwargs": kw,
           "read_wall_s": round(read_wall, 2), "read_cpu_s": round(read_cpu, 2),
           "read_walls": [round(r[1], 2) for r in reads]}
    if not a.no_score:
        params = check_params(num_classes=ep.num_classes)
        _, sw, sc = timed(lambda: score_checked(ep.labels, ep.logits, None, params, n_jobs=a.jobs))
        out.update(score_wall_s=round(sw, 2), score_cpu_s=round(sc, 2), jobs=a.jobs)
    out["load"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
