"""End-to-end ``gradscore score`` as a whole process: wall time and peak RSS.

Each configuration's export is generated once (benchmarks/data/, git-ignored),
then ``gradscore score FILE -q --json`` runs ``--repeat`` times in fresh
processes; the table reports medians. Results go to stdout and, with
``--write-docs``, into docs/benchmarks.md between this script's markers.

    python benchmarks/bench_score.py --configs cifar cifar-dense cifar-lastlayer million imagenet scaling --write-docs
    python benchmarks/bench_score.py --quick        # small smoke run (used by the tests)
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import synth  # noqa: E402

# name: (n, classes, features, dtype, extra CLI args, target)
CONFIGS = {
    "cifar": (50_000, 10, 512, "float32", [], "<= 3 s, <= 1 GiB"),
    "cifar-graph": (50_000, 10, 512, "float32", ["--dense-max", "0"],
                    "EPIC on the k-NN graph for every class, for comparison"),
    "cifar-dense": (50_000, 10, 512, "float32", ["--dense-max", "10000"],
                    "reference semantics (dense kernel), for comparison"),
    "cifar-lastlayer": (50_000, 10, 512, "float32", ["--gradient", "last-layer"], "report"),
    "million": (1_000_000, 10, 512, "float16", [], "<= 90 s, <= 4 GiB"),
    "imagenet": (1_281_167, 1000, 0, "float16", [], "<= 75 s, <= 1 GiB"),
    "imagenet-inmemory": (1_281_167, 1000, 0, "float16", ["--spill", "never"],
                          "before the spilled data path: the whole export in memory"),
    "million-spill": (1_000_000, 10, 512, "float16", ["--spill", "always"],
                      "the spill where it is not needed"),
    # Issue 20: the methods that look across classes, at scale.
    "s120k-groups": (120_000, 10, 512, "float16", ["--method", "groups"], "report"),
    "s120k-deepknn": (120_000, 10, 512, "float16", ["--method", "deep-knn"], "report"),
    "million-groups": (1_000_000, 10, 512, "float16", ["--method", "groups"],
                       "<= 60 s, <= 2 GiB"),
    "million-deepknn": (1_000_000, 10, 512, "float16", ["--method", "deep-knn"], "report"),
    "wide-groups": (1_000_000, 10, 2048, "float16", ["--method", "groups"],
                    "<= 4 GiB"),
    "wide-deepknn": (1_000_000, 10, 2048, "float16", ["--method", "deep-knn"], "report"),
}
SCALING = [(62_500, "float32"), (125_000, "float32"), (250_000, "float16"),
           (500_000, "float16"), (1_000_000, "float16")]
QUICK = {"quick": (5_000, 5, 16, "float32", [], "smoke"),
         "quick-lastlayer": (2_000, 5, 16, "float32", ["--gradient", "last-layer"], "smoke")}


def data_path(name, n, c, d, dtype):
    folder = os.path.join(HERE, "data")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{name}-{n}x{c}x{d}-{dtype}.h5")


def ensure(name, n, c, d, dtype):
    path = data_path(name, n, c, d, dtype)
    if not os.path.exists(path):
        t = time.perf_counter()
        synth.make(path, n=n, classes=c, features=d, dtype=dtype)
        print(f"  generated {os.path.basename(path)} in {time.perf_counter() - t:.0f}s",
              file=sys.stderr)
    return path


def run_measured(path, extra, out_dir):
    keep = os.path.join(out_dir, "bench.keep.txt")
    cmd = ["/usr/bin/time", "-f", "%e %M %U %S", sys.executable, "-m", "gradscore_cli.main",
           "score", path, "-o", keep, "-q", "--json"] + extra
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    wall, rss_kb, user, system = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) / 1024, float(user) + float(system), json.loads(proc.stdout)


def bench(name, n, c, d, dtype, extra, repeat, out_dir):
    path = ensure(name.split("-")[0] if name != "scaling" else "scaling", n, c, d, dtype)
    walls, rsss, cpus = [], [], []
    summary = None
    for _ in range(repeat):
        wall, rss, cpu, summary = run_measured(path, extra, out_dir)
        walls.append(wall)
        rsss.append(rss)
        cpus.append(cpu)
    used = sorted({cl["neighbors"] for cl in summary["classes"]})
    modes = sorted({str(cl["epic_mode"]) for cl in summary["classes"]})
    return {"config": name, "n": n, "classes": c, "features": d, "dtype": dtype,
            "args": " ".join(extra), "wall_median_s": statistics.median(walls),
            "wall_all_s": walls, "rss_median_mib": statistics.median(rsss),
            "cpu_median_s": statistics.median(cpus), "load_before": os.getloadavg()[0],
            "neighbors": used, "epic_mode": modes, "dropped": summary["dropped"],
            "file_mib": os.path.getsize(path) / 2**20}


def table(rows, targets):
    lines = ["| config | N | C | D | dtype | args | wall (median) | CPU user+sys (median) | "
             "peak RSS (median) | neighbours (auto) | EPIC mode | dropped | load avg | target |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['n']:,} | {r['classes']} | {r['features']} | {r['dtype']} | "
            f"{r['args'] or '-'} | {r['wall_median_s']:.2f} s | {r['cpu_median_s']:.1f} s | "
            f"{r['rss_median_mib']:.0f} MiB | "
            f"{', '.join(r['neighbors'])} | {', '.join(r['epic_mode'])} | {r['dropped']:,} | "
            f"{r['load_before']:.1f} | {targets.get(r['config'], '')} |")
    return "\n".join(lines)


def machine():
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def publish(about, lines, *, key, write):
    """Print a table headed by the machine, the date, ``about`` and this run's
    command line; with ``write``, also into docs/benchmarks.md under ``key``."""
    script = os.path.basename(sys.argv[0])
    text = (f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. {about}\n"
            f"Command: `python benchmarks/{script} {' '.join(sys.argv[1:])}`\n\n"
            + "\n".join(lines))
    print(text)
    if write:
        write_docs(text, key=key)


def write_docs(text, key="bench_score"):
    """Replace this script's section of docs/benchmarks.md (between markers)."""
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    old = open(doc).read() if os.path.exists(doc) else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in old:
        old += f"\n{start}\n{end}\n"
    head, rest = old.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(doc + ".tmp", "w") as fh:
        fh.write(head + start + "\n" + text + "\n" + end + tail)
    os.replace(doc + ".tmp", doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["cifar"],
                    choices=list(CONFIGS) + ["scaling"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny smoke configs only")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--section", default="bench_score",
                    help="marker name of the docs/benchmarks.md section to replace")
    a = ap.parse_args()
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    configs = QUICK if a.quick else {k: CONFIGS[k] for k in a.configs if k in CONFIGS}
    targets = {k: v[5] for k, v in {**CONFIGS, **QUICK}.items()}
    rows = []
    for name, (n, c, d, dtype, extra, _) in configs.items():
        print(f"{name} ...", file=sys.stderr)
        rows.append(bench(name, n, c, d, dtype, extra, 1 if a.quick else a.repeat, out_dir))
    if "scaling" in a.configs and not a.quick:
        for n, dtype in SCALING:
            name = f"scaling-{n}"
            print(f"{name} ...", file=sys.stderr)
            rows.append(bench("scaling", n, 10, 512, dtype, [], a.repeat, out_dir))
            rows[-1]["config"] = name
    text = (f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. 'load avg' is the "
            f"1-minute load average when the row's first run began (2 cores: above 1, "
            f"other work shared them).\n"
            f"Command: `python benchmarks/bench_score.py {' '.join(sys.argv[1:])}`\n\n"
            + table(rows, targets))
    print(text)
    with open(os.path.join(out_dir, "bench_score.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    if a.write_docs:
        write_docs(text, key=a.section)


if __name__ == "__main__":
    main()
