"""One ONNX model, loaded once, run batch by batch: logits and/or features out.

Two ways to use a model:

- **classifier** (``probe=False``): its output is the logits; the features
  are the input of the final linear layer that makes them (or the tensor
  named by ``features_output``);
- **encoder** (``probe=True``): only features are needed. They are the
  input of the final linear layer when the output is made by one (a
  classifier used as an encoder: its head is ignored), otherwise the output
  itself (an encoder whose output is the embedding), or ``features_output``.
"""

import logging

import numpy as np

from .._validation import format_rows
from ..errors import GradscoreError
from . import graph as G
from .providers import make_session

logger = logging.getLogger(__name__)


def run_session(session, names, feeds, n, *, row_offset, rows, logits):
    """``(logits or None, the other outputs)`` of one batch of ``n`` rows.

    ``logits``: the first of ``names`` is the logits output (checked here).
    A failure of the model names the batch's rows (``rows``, or
    ``row_offset`` onwards) in a :class:`GradscoreError`.
    """
    try:
        outs = session.run(names, feeds)
    except Exception as exc:  # onnxruntime's own error types
        shown = (f"rows {row_offset}..{row_offset + n - 1}" if rows is None
                 else format_rows(rows))
        raise GradscoreError(f"the model failed on dataset {shown}: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
    if not logits:
        return None, outs
    out = np.asarray(outs[0])
    check_output(names[0], out, n, row_offset, "logits", rows)
    return out, outs[1:]


def check_output(name, arr, n_rows, row_offset, what, rows=None):
    """A model output must be (n_rows, n) and finite; errors name dataset rows."""
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise GradscoreError(f"model output {name!r} ({what}) must have shape "
                             f"({n_rows}, n) for a batch of {n_rows} rows; got {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        local = np.flatnonzero(bad.any(axis=1))
        where = (rows[local] if rows is not None else local + row_offset)
        kind = "NaN" if np.isnan(arr).any() else "Inf"
        batch = (f"rows {row_offset}..{row_offset + n_rows - 1}" if rows is None
                 else f"from row {row_offset}")
        raise GradscoreError(f"model output {name!r} ({what}) contains {kind} in "
                             f"{format_rows(where)} of the dataset (in the batch of {batch}; "
                             "later rows not run)")


class Encoder:
    """An untrusted ONNX model prepared to give logits and/or features.

    Parameters
    ----------
    model_path : str
    logits_output, features_output : str, default=None
        See :func:`gradscore.onnx.extract`.
    features : bool, default=True
        Classifier mode: also return features.
    probe : bool, default=False
        Encoder mode: return features only (see the module docstring).
    device : {"auto", "cpu", "cuda"}, default="auto"

    Attributes
    ----------
    input_name : str
    dims : list of int or None
        The input's shape (None for symbolic dimensions).
    input_dtype : numpy dtype
    logits_name, features_name : str or None
    features_from : str
        How the features tensor was chosen, for reports.
    num_outputs : int or None
        Columns of the logits, when the graph fixes them.
    info : dict
        ``device``, ``providers``, ``reason`` and the names above.
    """

    def __init__(self, model_path, *, logits_output=None, features_output=None,
                 features=True, probe=False, device="auto"):
        self.model_path = model_path
        model = G.load_model(model_path)
        self.probe = probe
        self.logits_name = None
        self.features_from = None
        if probe:
            if features_output is not None:
                self.features_name, self.features_from = features_output, "named"
            else:
                out = G.choose_logits(model, logits_output, path=model_path)
                try:
                    self.features_name = G.find_features(model, out, path=model_path)
                    self.features_from = (f"input of the final linear layer making output "
                                          f"{out!r} (that layer is not used)")
                except GradscoreError:
                    self.features_name = out
                    self.features_from = (f"the model's output {out!r} (no final linear "
                                          "layer before it)")
            names = [self.features_name]
        else:
            self.logits_name = G.choose_logits(model, logits_output, path=model_path)
            self.features_name = None
            if features:
                self.features_name = features_output or G.find_features(
                    model, self.logits_name, path=model_path)
                self.features_from = "named" if features_output else \
                    "input of the final linear layer"
                if self.features_name == self.logits_name:
                    raise GradscoreError(f"'features_output' {self.features_name!r} is the "
                                         "logits output")
            names = [self.logits_name] + ([self.features_name] if self.features_name else [])
        self.names = names
        self.input_name, self.dims, self.input_dtype = G.input_spec(model, path=model_path)
        self.num_outputs = None
        if self.logits_name is not None:
            self.num_outputs = G.output_width(model, self.logits_name)
        run_model = G.with_outputs(model, names)
        self.session, info = make_session(run_model.SerializeToString(), device)
        logger.info("onnxruntime on %s (%s)", info["device"], info["reason"])
        info.update(logits_output=self.logits_name, features_output=self.features_name,
                    features_from=self.features_from, input_name=self.input_name)
        self.info = info

    def run(self, x, *, row_offset=0, rows=None):
        """``(logits, features)`` for one batch (None where not asked for).

        ``row_offset``/``rows`` place the batch in the dataset for error messages.
        """
        n = x.shape[0]
        x = x.astype(self.input_dtype, copy=False)
        logits, rest = run_session(self.session, self.names, {self.input_name: x}, n,
                                   row_offset=row_offset, rows=rows,
                                   logits=self.logits_name is not None)
        feats = None
        if self.features_name is not None:
            feats = np.asarray(rest[0])
            if feats.ndim > 2 and feats.shape[0] == n:
                feats = feats.reshape(n, -1)
            check_output(self.features_name, feats, n, row_offset, "features", rows)
            if feats.dtype.kind != "f":
                feats = feats.astype(np.float32)
        return logits, feats
