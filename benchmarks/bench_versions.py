"""Time one ``score_files`` run of whichever gradscore is first on the path.

For side-by-side comparisons of two versions on one machine state::

    git worktree add /tmp/gs-before f917672
    PYTHONPATH=/tmp/gs-before python benchmarks/bench_versions.py EXPORT.h5
    python benchmarks/bench_versions.py EXPORT.h5
    python benchmarks/bench_versions.py EXPORT.h5 '{"dense_max": 0}'

Prints one JSON line: the code's folder, wall time (numba warmed), rows
dropped, EPIC modes, peak RSS and the load average.
"""

import json
import os
import resource
import sys
import time

import numpy as np

import gradscore


def main():
    path = sys.argv[1]
    extra = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    gradscore.score(np.repeat([0, 1], 30), np.random.default_rng(0).normal(size=(60, 2)))
    out = os.path.join(os.path.dirname(os.path.abspath(path)), "bench_versions.keep.txt")
    t = time.perf_counter()
    r, _, _ = gradscore.score_files(path, output=out, **extra)
    print(json.dumps(dict(
        code=os.path.dirname(gradscore.__file__), wall=round(time.perf_counter() - t, 2),
        dropped=int((~r.keep).sum()), modes=sorted({str(c.epic_mode) for c in r.classes}),
        maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        load=round(os.getloadavg()[0], 1))))


if __name__ == "__main__":
    main()
