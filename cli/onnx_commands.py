"""``gradscore extract`` and ``gradscore audit``: ONNX models in (thin click layer).

Registered on the main group by :func:`register`; the ONNX and report code
is imported inside the commands, so ``gradscore --help`` never loads
onnxruntime or matplotlib.
"""

import json

import click

from gradscore.gradients import GRADIENTS
from gradscore.pipeline import METHODS

from ._common import _Errors, _show_warnings

_DEVICES = ("auto", "cpu", "cuda")


def _parse_image_shape(value):
    if value is None:
        return None
    message = f"--image-shape must look like 8x8 or 32x32x3; got {value!r}"
    try:
        shape = tuple(int(v) for v in value.lower().replace(",", "x").split("x"))
    except ValueError:
        raise click.BadParameter(message) from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise click.BadParameter(message)
    return shape


def _device_line(info):
    click.echo(f"onnxruntime: running on {info['device'].upper()} "
               f"(providers: {', '.join(info['providers'])}; {info['reason']})", err=True)


def _model_options(f):
    options = [
        click.option("--logits-output", metavar="NAME",
                     help="Model output holding the logits (needed when there are several)."),
        click.option("--features-output", metavar="NAME",
                     help="Tensor to store as features. Default: the input of the final "
                          "linear layer (MatMul/Gemm, + Add), found automatically."),
        click.option("--batch-size", type=int, default=256, show_default=True,
                     help="Rows per model call (memory stays bounded by this)."),
        click.option("--device", type=click.Choice(_DEVICES), default="auto",
                     show_default=True,
                     help="auto: CUDA when onnxruntime can really use it, else CPU."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def register(main):
    """Add the ``extract`` and ``audit`` commands to the ``main`` click group."""
    @main.command()
    @click.argument("model", type=click.Path(dir_okay=False))
    @click.argument("data", type=click.Path(dir_okay=False))
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                  help="Export to write (HDF5, schema v1).")
    @_model_options
    @click.option("--no-features", is_flag=True, help="Store logits only.")
    @click.option("--epoch", type=int, default=None, help="Epoch number to store.")
    @click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar or device line.")
    def extract(model, data, output, logits_output, features_output, batch_size, device,
                no_features, epoch, as_json, quiet):
        """Run ONNX MODEL over DATA and write a schema-v1 export.

        DATA (.h5 or .npz) holds 'inputs' (N, ...) in the model's input
        layout, integer 'labels' (N,) and optionally unique 'ids' (N,).

        \b
        Example:
          gradscore extract model.onnx train.h5 -o epoch_05.h5
          gradscore score epoch_05.h5
        """
        from gradscore.onnx import extract as run_extract

        with _Errors():
            info = run_extract(model, data, output, logits_output=logits_output,
                               features_output=features_output, features=not no_features,
                               batch_size=batch_size, device=device, epoch=epoch,
                               progress=not quiet)
        if not quiet:
            _device_line(info)
        if as_json:
            click.echo(json.dumps(info, indent=1, sort_keys=True, default=list))
        elif not quiet:
            feats = (f"features '{info['features_output']}' ({info['n_features']} columns)"
                     if info["features_output"] else "no features")
            click.echo(f"wrote {info['n']} rows: logits '{info['logits_output']}' "
                       f"({info['num_classes']} classes), {feats} -> {info['output']}")

    @main.command()
    @click.argument("model", type=click.Path(dir_okay=False))
    @click.argument("data", type=click.Path(dir_okay=False))
    @click.option("-o", "--output", "report_dir", required=True,
                  type=click.Path(file_okay=False),
                  help="Folder for report.html, keep.txt, scores.csv and export.h5.")
    @_model_options
    @click.option("--method", type=click.Choice(METHODS), default="epic", show_default=True,
                  help="Scoring method (see gradscore score --help).")
    @click.option("--gradient", type=click.Choice(GRADIENTS), default="logits",
                  show_default=True, help="Gradient to compare examples by.")
    @click.option("-k", "--k", "k", type=int, default=20, show_default=True,
                  help="Neighbours per example.")
    @click.option("--drop-fraction", type=float, default=None,
                  help="knn-density: drop this fraction of each class.")
    @click.option("--max-drop-fraction", type=float, default=0.5, show_default=True,
                  help="Never drop more than this fraction of a class.")
    @click.option("--image-shape", metavar="HxW[xC]",
                  help="Show flat inputs as images of this shape, e.g. 8x8.")
    @click.option("--per-class", type=int, default=8, show_default=True,
                  help="Most suspicious examples listed per class.")
    @click.option("--seed", type=int, default=0, show_default=True,
                  help="Seed for randomised neighbour search.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar, warnings or summary.")
    def audit(model, data, report_dir, logits_output, features_output, batch_size, device,
              method, gradient, k, drop_fraction, max_drop_fraction, image_shape,
              per_class, seed, quiet):
        """Extract from ONNX MODEL on DATA, score, and write an HTML report.

        \b
        Example:
          gradscore audit model.onnx train.h5 -o audit/
          # then open audit/report.html; audit/keep.txt lists the ids to keep
        """
        from gradscore.report import audit as run_audit

        shape = _parse_image_shape(image_shape)
        _show_warnings(quiet)
        with _Errors():
            out = run_audit(model, data, report_dir, device=device, batch_size=batch_size,
                            logits_output=logits_output, features_output=features_output,
                            image_shape=shape, per_class=per_class, progress=not quiet,
                            method=method, gradient=gradient, k=k,
                            drop_fraction=drop_fraction, max_drop_fraction=max_drop_fraction,
                            random_state=seed)
        if quiet:
            return
        _device_line(out["extract"])
        s = out["summary"]
        click.echo(f"kept {s['kept']} of {s['n']} (dropped {s['dropped']}); "
                   f"report: {out['report']}; keep-list: {out['keep']}")
