"""``gradscore``: a thin click layer over the gradscore library (no maths here)."""

import json

import click

import gradscore
from gradscore import neighbors as nb
from gradscore.gradients import GRADIENTS
from gradscore.scoring.memory import SCORE_DEFAULTS as D
from gradscore.scoring.methods import CUMULATIVE_RULES, METHODS, cli_help

from ._common import _Errors, _ManyValues, _show_warnings
from .onnx_commands import register as _register_onnx
from .report_commands import register as _register_report

#: Classes listed one per line in the human summary; beyond this, the ones
#: with most drops.
SUMMARY_CLASSES = 30


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(gradscore.__version__, prog_name="gradscore")
def main():
    """Find likely poisoned training examples by their isolation in the
    last-layer gradient space of their class, and write keep-lists.

    \b
    Example:
      gradscore inspect epoch_05.h5
      gradscore score epoch_05.h5            # writes epoch_05.keep.txt
    """


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Keep-list to write: .txt (one id per line), .npy or .json "
                   "(with provenance). Default: beside the first input, <stem>.keep.txt.")
@click.option("--scores", "scores_path", type=click.Path(dir_okay=False),
              help="Also write the per-example table (.csv or .h5): id, label, "
                   "score (higher = more typical), cluster_size, flagged, decision, "
                   "and for flagged rows suggested_label, suggestion_confidence, "
                   "signal.")
@click.option("--method", type=click.Choice(list(METHODS)), default=D["method"],
              show_default=True, help=cli_help())
@click.option("--gradient", type=click.Choice(GRADIENTS), default=D["gradient"], show_default=True,
              help="logits: softmax(z) - onehot(y). last-layer: the full final-layer "
                   "weight and bias gradient (needs 'features').")
@click.option("--fraction", type=float, default=D["fraction"], show_default=True,
              help="epic: medoids as a fraction of the scored examples, split over "
                   "classes by size (the paper uses 0.1-0.3).")
@click.option("--cluster-threshold", type=int, default=D["cluster_threshold"], show_default=True,
              help="epic: drop examples in clusters of at most this size.")
@click.option("-k", "--k", "k", type=int, default=D["k"], show_default=True,
              help="Neighbours per example (density score, deep-knn and groups votes).")
@click.option("--drop-fraction", type=float, default=D["drop_fraction"],
              help="knn-density: drop this fraction of each class, least dense first "
                   "(default: a robust threshold, see --z-threshold).")
@click.option("--z-threshold", type=float, default=D["z_threshold"], show_default=True,
              help="knn-density: drop scores below median - z * 1.4826 * MAD.")
@click.option("--max-drop-fraction", type=float, default=D["max_drop_fraction"], show_default=True,
              help="Never drop more than this fraction of a class in one run.")
@click.option("--max-total-drop-fraction", type=float, default=D["max_total_drop_fraction"],
              show_default=True,
              help="With --previous: never let a class lose more than this fraction "
                   "over all rounds together.")
@click.option("--label-smoothing", type=float, default=D["label_smoothing"], show_default=True,
              help="Label smoothing used in training (changes the gradient's target).")
@click.option("--neighbors", type=click.Choice(nb.backend_names()), default=D["neighbors"],
              show_default=True,
              help="Neighbour search backend (deep-knn and groups: auto or brute).")
@click.option("--dense-max", type=int, default=D["dense_max"], show_default=True,
              help="epic: classes up to this size keep the n x n kernel matrix "
                   "(faster, 8 n^2 bytes); larger ones recompute its values. Speed and "
                   "memory only: the decisions are the same.")
@click.option("--previous", type=click.Path(dir_okay=False),
              help="Keep-list of an earlier round: drops are cumulative.")
@click.option("--history", cls=_ManyValues, multiple=True, type=click.Path(dir_okay=False),
              metavar="REF.h5 [MORE.h5 ...]",
              help="For --method trajectory: earlier exports of the run, the reference "
                   "(the model before training, epoch 0) first; rows matched by id. Put "
                   "it after FILES (it takes every name up to the next option).")
@click.option("--cumulative", type=click.Choice(CUMULATIVE_RULES), default=D["cumulative"],
              show_default=True,
              help="With --previous. intersect (the paper's rule): score every example, "
                   "keep those kept now and before. survivors: score only the examples "
                   "the previous keep-list kept.")
@click.option("--seed", type=int, default=D["random_state"], show_default=True,
              help="Seed for randomised neighbour search and epic's budget rounding.")
@click.option("-j", "--jobs", type=int, default=-1, show_default=True,
              help="Classes scored side by side in threads; -1: one per CPU core. "
                   "Results do not depend on it.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Memory the read of the export may take, e.g. 4G or 512MiB; a larger "
                   "export is refused before anything is allocated. Default: the memory "
                   "available on the machine.")
@click.option("--spill", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True,
              help="always: read the inputs once into a class-partitioned spill on disk "
                   "and score class by class from it (memory: one block and a few "
                   "classes). never: hold the export in memory. auto: spill above "
                   "512 MiB of arrays, or on a Dask cluster.")
@click.option("--spill-dir", type=click.Path(file_okay=False),
              help="Folder for the spill (default: the output's folder). On a cluster it "
                   "must be on storage every worker sees.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on this Dask scheduler, e.g. tcp://HOST:8786 (needs "
                   "gradscore[dask]). Inputs must be on storage every worker sees.")
@click.option("--scheduler-file", type=click.Path(dir_okay=False),
              help="Run on the Dask scheduler described by this file "
                   "(dask scheduler --scheduler-file).")
@click.option("--connect-timeout", type=float, default=10, show_default=True,
              help="Seconds to wait for the Dask scheduler.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a machine-readable summary on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, warnings or summary.")
def score(files, output, scores_path, method, gradient, fraction, cluster_threshold, k,
          drop_fraction, z_threshold, max_drop_fraction, max_total_drop_fraction,
          label_smoothing, neighbors, dense_max, previous, history, cumulative, seed, jobs,
          max_memory,
          spill, spill_dir, scheduler, scheduler_file, connect_timeout, as_json, quiet):
    """Score one epoch's export FILES (or its shards) and write a keep-list.

    \b
    Examples:
      gradscore score epoch_05.h5
      gradscore score shard-*.h5 -o epoch_05.keep.json --scores scores.csv
      gradscore score epoch_10.h5 --previous epoch_05.keep.txt
      gradscore score epoch_10.h5 --method trajectory --history epoch_00.h5
      gradscore score epoch_05.h5 --method knn-density --drop-fraction 0.05 --json
      gradscore score /shared/shard-*.h5 --scheduler tcp://10.0.0.5:8786
    """
    _show_warnings(quiet)
    with _Errors():
        client = None
        if scheduler is not None or scheduler_file is not None:
            from gradscore.scoring.dask import connect
            client = connect(scheduler, scheduler_file=scheduler_file,
                             timeout=connect_timeout)
        try:
            result, epoch, out = gradscore.score_files(
                list(files), output=output, scores_path=scores_path, previous=previous,
                history=list(history) or None,
                progress=not quiet, spill=spill, spill_dir=spill_dir, client=client,
                method=method, gradient=gradient, fraction=fraction,
                cluster_threshold=cluster_threshold, k=k, drop_fraction=drop_fraction,
                z_threshold=z_threshold, max_drop_fraction=max_drop_fraction,
                max_total_drop_fraction=max_total_drop_fraction, cumulative=cumulative,
                label_smoothing=label_smoothing, neighbors=neighbors, dense_max=dense_max,
                random_state=seed, n_jobs=jobs, max_memory=max_memory)
        finally:
            if client is not None:
                client.close()
    summary = result.summary()
    summary["output"] = out
    summary["scores"] = scores_path
    summary["inputs"] = epoch.sources
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
    elif not quiet:
        _print_summary(result, summary, out)


def _print_summary(result, summary, out):
    p = result.params
    click.echo(f"gradscore {gradscore.__version__}: method={p['method']} "
               f"gradient={p['gradient']}, {summary['n']} examples, "
               f"{len(result.classes)} classes")
    rows = result.classes
    shown = rows if len(rows) <= SUMMARY_CLASSES else \
        sorted(rows, key=lambda c: (-c.dropped, c.label))[:10]
    click.echo(f"{'class':>6} {'n':>8} {'scored':>8} {'dropped':>8} {'before':>7} "
               f"{'total':>7} {'k':>4}  {'neighbours':<10} cap")
    for c in shown:
        cap = " ".join(w for w, hit in (("HIT", c.cap_hit), ("TOTAL", c.total_cap_hit)) if hit)
        click.echo(f"{c.label:>6} {c.n:>8} {c.n_scored:>8} {c.dropped:>8} "
                   f"{c.dropped_before:>7} {c.dropped_total:>7} {c.k_used:>4}  "
                   f"{c.neighbors:<10} {cap}")
    if len(shown) < len(rows):
        click.echo(f"... {len(rows) - len(shown)} more classes (--json lists all)")
    capped = summary["cap_hit_classes"]
    if capped:
        click.echo(f"max-drop-fraction cap bit in {len(capped)} class(es): "
                   f"{', '.join(map(str, capped[:10]))}")
    capped = summary["total_cap_hit_classes"]
    if capped:
        click.echo(f"max-total-drop-fraction cap bit in {len(capped)} class(es): "
                   f"{', '.join(map(str, capped[:10]))}")
    click.echo(f"kept {summary['kept']} of {summary['n']} (dropped {summary['dropped']} now, "
               f"{summary['dropped_before']} before) -> {out}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--deep", is_flag=True,
              help="Read and check every value of every dataset, features included "
                   "(by default datasets a logits-gradient run does not use are checked "
                   "for shape, dtype and written storage only).")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Memory the read may take, e.g. 4G; default the memory available.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def inspect(files, deep, max_memory, as_json):
    """Validate export FILES and print what they hold, without scoring.

    \b
    Example:
      gradscore inspect epoch_05.h5
      gradscore inspect --deep epoch_05.h5
    """
    with _Errors():
        info = gradscore.describe(list(files), deep=deep, max_memory=max_memory)
    if as_json:
        click.echo(json.dumps(info, indent=1, sort_keys=True))
        return
    for f in info["files"]:
        click.echo(f"{f['path']}: {f['n']} rows")
    click.echo(f"examples: {info['n']}  classes: {info['num_classes']}  features: "
               f"{info['n_features'] if info['n_features'] is not None else 'none'}  "
               f"epoch: {info['epoch'] if info['epoch'] is not None else '-'}")
    click.echo("dtypes: " + ", ".join(f"{k}={v}" for k, v in info["dtypes"].items()))
    click.echo(f"ids: {info['id_kind']}")
    click.echo("checked: every value of every dataset" if deep else
               "checked: every value of the datasets scoring reads; features, weight and "
               "bias for shape, dtype and written storage (--deep reads them too)")
    sizes = info["class_sizes"]
    click.echo("class sizes: " + ", ".join(f"{c}:{n}" for c, n in enumerate(sizes[:50]))
               + (f", ... ({len(sizes) - 50} more)" if len(sizes) > 50 else ""))
    empty = [c for c, n in enumerate(sizes) if n == 0]
    if empty:
        click.echo(f"classes with no examples: {len(empty)} (first: {empty[:10]})")


_register_onnx(main)
_register_report(main)

if __name__ == "__main__":
    main()
