"""``gradscore extract`` and ``gradscore audit``: ONNX models in (thin click layer).

Registered on the main group by :func:`register`; the ONNX and report code
is imported inside the commands, so ``gradscore --help`` never loads
onnxruntime or matplotlib.
"""

import json

import click

from gradscore.audit.decode import MAX_PIXELS
from gradscore.audit.run import DEFAULT_METHOD
from gradscore.gradients import GRADIENTS
from gradscore.scoring.methods import METHODS

from gradscore.errors import GradscoreError

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


def _parse_size(value):
    if value is None:
        return None
    message = f"--size must look like 224 or 224x224 (height x width); got {value!r}"
    try:
        size = tuple(int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(message) from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise click.BadParameter(message)
    return size


def _parse_floats(value, name):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        raise click.BadParameter(f"--{name} must be numbers separated by commas, e.g. "
                                 f"0.485,0.456,0.406; got {value!r}") from None


def _dataset_options(f):
    """Options for image folders, Hugging Face datasets and Parquet (and --probe)."""
    options = [
        click.option("--probe", is_flag=True,
                     help="MODEL is an encoder: fit a cross-fitted logistic head on its "
                          "features (each example's logits from a head that never saw it)."),
        click.option("--folds", "n_folds", type=int, default=5, show_default=True,
                     help="--probe: cross-fitting folds."),
        click.option("--image-column", default="image", show_default=True,
                     help="Hugging Face / Parquet: column holding the images."),
        click.option("--label-column", default="label", show_default=True,
                     help="Hugging Face / Parquet: column holding integer labels."),
        click.option("--id-column", default=None,
                     help="Hugging Face / Parquet: column of unique ids (default: row "
                          "numbers)."),
        click.option("--split", default=None, help="Split of a Hugging Face DatasetDict."),
        click.option("--size", metavar="HxW", default=None,
                     help="Resize images to this size (default: the model input's)."),
        click.option("--layout", type=click.Choice(("nchw", "nhwc")), default=None,
                     help="Image layout of the model input (default: from its shape)."),
        click.option("--mean", metavar="M[,M,M]", default=None,
                     help="Per-channel mean subtracted after scaling to [0, 1]."),
        click.option("--std", metavar="S[,S,S]", default=None,
                     help="Per-channel std divided by after --mean."),
        click.option("--max-pixels", type=int, default=MAX_PIXELS, show_default=True,
                     help="Refuse images declaring more pixels (decompression bombs)."),
        click.option("--max-cell-bytes", metavar="SIZE", default=None,
                     help="Refuse cells (an encoded image, a string) larger than this, "
                          "e.g. 32MiB; Parquet is checked from its metadata before reading. "
                          "Default: 8MiB (gradscore.limits.MAX_CELL_BYTES)."),
        click.option("--skip-bad", is_flag=True,
                     help="Skip unusable files (truncated, not an image, empty, too large, "
                          "repeated ids, empty class folders) and list them, instead of "
                          "stopping at the first."),
        click.option("--workers", type=int, default=None,
                     help="Image decoding threads (default: up to 4)."),
        click.option("--text-column", default=None,
                     help="Audit text: the column holding it (Hugging Face dataset, Parquet, "
                          "CSV, JSON Lines); MODEL is an ONNX text encoder or classifier."),
        click.option("--tokenizer", type=click.Path(dir_okay=False), default=None,
                     help="Text: tokenizer.json (default: the one beside MODEL)."),
        click.option("--pooling", type=click.Choice(("mean", "cls", "output")), default=None,
                     help="Text: features = mean of the last hidden state over the attention "
                          "mask, its first token, or the model's 2-D output (default: mean "
                          "when the model outputs a hidden state, else output)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _dataset_kwargs(p):
    return dict(probe=p["probe"], n_folds=p["n_folds"], image_column=p["image_column"],
                label_column=p["label_column"], id_column=p["id_column"], split=p["split"],
                size=_parse_size(p["size"]), layout=p["layout"],
                mean=_parse_floats(p["mean"], "mean"), std=_parse_floats(p["std"], "std"),
                max_pixels=p["max_pixels"], skip_bad=p["skip_bad"], workers=p["workers"],
                max_cell_bytes=p["max_cell_bytes"], text_column=p["text_column"],
                tokenizer=p["tokenizer"], pooling=p["pooling"])


def _skipped_lines(info):
    for s in info.get("skipped") or []:
        click.echo(f"skipped: {s['id']}: {s['reason']}", err=True)


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
    @click.argument("data", type=click.Path())
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                  help="Export to write (HDF5, schema v1).")
    @_model_options
    @_dataset_options
    @click.option("--no-features", is_flag=True, help="Store logits only (.h5/.npz DATA).")
    @click.option("--epoch", type=int, default=None, help="Epoch number to store.")
    @click.option("--seed", type=int, default=0, show_default=True,
                  help="--probe: seed of the folds.")
    @click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar or device line.")
    def extract(model, data, output, logits_output, features_output, batch_size, device,
                no_features, epoch, seed, as_json, quiet, **dataset):
        """Run ONNX MODEL over DATA and write a schema-v1 export.

        DATA is an image folder (DATA/<class>/<image>), a Hugging Face
        dataset (save_to_disk) or Parquet file(s), or a .h5/.npz holding
        'inputs' (N, ...) in the model's layout, integer 'labels' (N,) and
        optionally unique 'ids' (N,). With --probe, MODEL is an encoder and
        the logits come from a cross-fitted head on its features.

        \b
        Example:
          gradscore extract model.onnx train.h5 -o epoch_05.h5
          gradscore extract encoder.onnx images/ --probe -o export.h5
          gradscore score epoch_05.h5
        """
        from gradscore.audit.export import extract_dataset
        from gradscore.audit.sources import ARRAY_FORMATS
        from gradscore.onnx import extract as run_extract

        kw = _dataset_kwargs(dataset)
        plain = (str(data).lower().endswith(ARRAY_FORMATS) and not kw["probe"]
                 and not kw["skip_bad"])
        _show_warnings(quiet)
        with _Errors():
            if plain:
                info = run_extract(model, data, output, logits_output=logits_output,
                                   features_output=features_output, features=not no_features,
                                   batch_size=batch_size, device=device, epoch=epoch,
                                   progress=not quiet)
            else:
                if no_features:
                    raise GradscoreError("--no-features applies to .h5/.npz DATA without "
                                         "--probe; the audit's export keeps the features")
                info = extract_dataset(model, data, output, logits_output=logits_output,
                                       features_output=features_output,
                                       batch_size=batch_size, device=device, epoch=epoch,
                                       random_state=seed, progress=not quiet, **kw)
                info.pop("rows")
        if not quiet:
            _device_line(info)
            _skipped_lines(info)
        if as_json:
            click.echo(json.dumps(info, indent=1, sort_keys=True, default=list))
        elif not quiet:
            feats = (f"features '{info['features_output']}' ({info['n_features']} columns)"
                     if info["features_output"] else "no features")
            probe = info.get("probe")
            head = (f"out-of-fold logits of a {probe['n_folds']}-fold probe (accuracy "
                    f"{probe['accuracy']:.1%})" if probe else f"logits "
                    f"'{info['logits_output']}'")
            click.echo(f"wrote {info['n']} rows: {head} ({info['num_classes']} classes), "
                       f"{feats} -> {info['output']}")

    @main.command()
    @click.argument("model", type=click.Path(dir_okay=False), required=False)
    @click.argument("data", type=click.Path(), required=False)
    @click.option("--features", "features_file", type=click.Path(dir_okay=False),
                  default=None, help="Audit precomputed embeddings instead (no MODEL): "
                  "Parquet, .npy, .npz or HDF5 holding them with labels (and ids).")
    @click.option("--features-column", default=None,
                  help="--features: column/array of embeddings (default: features, "
                       "embedding or embeddings).")
    @click.option("--labels", "labels_path", type=click.Path(dir_okay=False), default=None,
                  help="--features with a .npy: the labels, an .npy of integers.")
    @click.option("-o", "--output", "report_dir", required=True,
                  type=click.Path(file_okay=False),
                  help="Folder for report.html, keep.txt, keep.json, scores.csv, export.h5.")
    @_model_options
    @_dataset_options
    @click.option("--method", type=click.Choice(list(METHODS)), default=DEFAULT_METHOD,
                  show_default=True, help="Scoring method (see docs/audit.md).")
    @click.option("--gradient", type=click.Choice(GRADIENTS), default="logits",
                  show_default=True, help="Gradient to compare examples by.")
    @click.option("-k", "--k", "k", type=int, default=20, show_default=True,
                  help="Neighbours per example.")
    @click.option("--drop-fraction", type=float, default=None,
                  help="knn-density: drop this fraction of each class.")
    @click.option("--max-drop-fraction", type=float, default=0.5, show_default=True,
                  help="Never drop more than this fraction of a class.")
    @click.option("--image-shape", metavar="HxW[xC]",
                  help="Show flat .h5/.npz inputs as images of this shape, e.g. 8x8.")
    @click.option("--per-class", type=int, default=8, show_default=True,
                  help="Most suspicious examples listed per class.")
    @click.option("--seed", type=int, default=0, show_default=True,
                  help="Seed of the probe's folds and randomised neighbour search.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Print the summary (counts, probe, skipped files) as JSON.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar, warnings or summary.")
    def audit(model, data, features_file, features_column, labels_path, report_dir,
              logits_output, features_output, batch_size, device,
              method, gradient, k, drop_fraction, max_drop_fraction, image_shape,
              per_class, seed, as_json, quiet, **dataset):
        """Audit DATA with ONNX MODEL: export, score, keep-list and HTML report.

        DATA is an image folder (DATA/<class>/<image>), a Hugging Face
        dataset (save_to_disk) or Parquet file(s), or a .h5/.npz holding
        'inputs' and 'labels'; with --text-column, a text dataset (also CSV
        or JSON Lines) and MODEL an ONNX text model. Without --probe, MODEL
        must be a classifier over DATA's classes; with --probe, any encoder.
        With --features FILE, no MODEL or DATA: the embeddings in FILE are
        audited (the cross-fitted probe gives the logits).

        \b
        Example:
          gradscore audit encoder.onnx images/ --probe -o audit/
          gradscore audit text.onnx reviews.csv --text-column text --probe -o audit/
          gradscore audit --features emb.parquet -o audit/
          # then open audit/report.html; audit/keep.txt lists the ids to keep
        """
        from gradscore.audit import audit as run_audit

        shape = _parse_image_shape(image_shape)
        kw = _dataset_kwargs(dataset)
        _show_warnings(quiet)
        if features_file is not None:
            if model is not None:
                raise click.UsageError("--features FILE audits embeddings without a model; "
                                       "give no MODEL or DATA with it")
            data = features_file
            kw.update(features_column=features_column, labels_path=labels_path)
        elif model is None or data is None:
            raise click.UsageError("give MODEL and DATA, or --features FILE")
        elif features_column is not None or labels_path is not None:
            raise click.UsageError("--features-column and --labels apply to --features FILE")
        with _Errors():
            out = run_audit(model, data, report_dir, device=device, batch_size=batch_size,
                            logits_output=logits_output, features_output=features_output,
                            image_shape=shape, per_class=per_class, progress=not quiet,
                            method=method, gradient=gradient, k=k,
                            drop_fraction=drop_fraction, max_drop_fraction=max_drop_fraction,
                            random_state=seed, **kw)
        s = out["summary"]
        if as_json:
            click.echo(json.dumps(s, indent=1, sort_keys=True))
        if quiet:
            return
        if out["extract"].get("device"):
            _device_line(out["extract"])
        _skipped_lines(s)
        if s.get("text"):
            t = s["text"]
            click.echo(f"text: {t['truncated']} of {s['n']} examples truncated at "
                       f"{t['max_length']} tokens", err=True)
        probe = (f"; probe accuracy (out of fold) {s['probe']['accuracy']:.1%}"
                 if s.get("probe") else "")
        skipped = f"; skipped {len(s['skipped'])}" if s["skipped"] else ""
        click.echo(f"kept {s['kept']} of {s['n']} (dropped {s['dropped']}){skipped}{probe}; "
                   f"report: {out['report']}; keep-list: {out['keep']}", err=as_json)
