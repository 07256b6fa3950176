"""An ONNX text encoder or classifier, run on tokenised batches: logits and/or features.

The model takes ``input_ids`` and ``attention_mask`` (and optionally
``token_type_ids``), as Hugging Face models exported by ``optimum`` or
``torch.onnx.export`` do. Its outputs are a last hidden state
``(batch, tokens, width)`` and/or 2-D outputs (a pooled embedding, logits).

Features (``pooling``):

- ``mean``: the mean of the last hidden state over the attention mask
  (sentence-transformers' mean pooling; padding never counts);
- ``cls``: the hidden state of the first token;
- ``output``: a 2-D output as it is (a pooled output or an embedding).

Without a probe the model is a classifier: its logits are a 2-D output
(``logits_output``, or the only 2-D output), its features the input of
the final linear layer that makes them, or else the pooled hidden state.
"""

import numpy as np

from ..errors import GradscoreError
from . import graph as G
from .encoder import check_output, run_session
from .providers import make_session

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS = ("mean", "cls", "output")


def _rank(v):
    tt = v.type.tensor_type
    return len(tt.shape.dim) if tt.HasField("shape") else None


def _vocab_size(model):
    """Rows of the token embedding table (a Gather of an initializer by input_ids), or None."""
    inits = {t.name: t for t in model.graph.initializer}
    feeds = {"input_ids"}
    # Follow input_ids through type casts to the Gather that reads the table.
    for node in model.graph.node:
        if node.op_type in ("Cast", "Identity") and node.input and node.input[0] in feeds:
            feeds.update(node.output)
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in feeds \
                and node.input[0] in inits:
            dims = list(inits[node.input[0]].dims)
            if len(dims) == 2:
                return int(dims[0])
    return None


class TextEncoder:
    """An untrusted ONNX text model prepared to give logits and/or features.

    Parameters
    ----------
    model_path : str
    logits_output, features_output : str, default=None
        Output holding the logits (classifier); tensor to take the features from.
    probe : bool, default=False
        Encoder mode: features only.
    pooling : {"mean", "cls", "output"}, default=None
        Default ``mean`` when the model outputs a last hidden state (rank
        3), else ``output``.
    device : {"auto", "cpu", "cuda"}, default="auto"

    Attributes
    ----------
    inputs : dict of str to numpy dtype
        The model's inputs among :data:`TEXT_INPUTS`.
    max_length : int or None
        The token dimension of ``input_ids`` when the model fixes it.
    vocab_size : int or None
        Rows of the token embedding table, when found.
    pooling, logits_name, features_name, features_from, num_outputs, info
    """

    def __init__(self, model_path, *, logits_output=None, features_output=None, probe=False,
                 pooling=None, device="auto"):
        onnx = G.import_onnx()
        self.model_path = model_path
        model = G.load_model(model_path)
        ins = G.graph_inputs(model)
        names = [v.name for v in ins]
        extra = [n for n in names if n not in TEXT_INPUTS]
        if extra or "input_ids" not in names or "attention_mask" not in names:
            raise GradscoreError(
                f"{model_path}: a text model takes input_ids and attention_mask (and "
                f"optionally token_type_ids); this one takes {', '.join(names) or 'nothing'}")
        self.inputs = {v.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
            v.type.tensor_type.elem_type)) for v in ins}
        for n, dt in self.inputs.items():
            if dt.kind not in "iu":
                raise GradscoreError(f"{model_path}: input {n!r} must be integer (int64 or "
                                     f"int32); got {dt}")
        ids_v = next(v for v in ins if v.name == "input_ids")
        dims = ids_v.type.tensor_type.shape.dim if _rank(ids_v) else []
        self.max_length = int(dims[1].dim_value) if len(dims) == 2 and \
            dims[1].HasField("dim_value") and dims[1].dim_value > 0 else None
        self.vocab_size = _vocab_size(model)
        outs = {o.name: _rank(o) for o in model.graph.output}
        hidden = [n for n, r in outs.items() if r == 3]
        flat = [n for n, r in outs.items() if r == 2]
        if pooling is not None and pooling not in POOLINGS:
            raise GradscoreError(f"'pooling' must be one of {', '.join(POOLINGS)}; got "
                                 f"{pooling!r}")
        self.logits_name = None
        if not probe:
            if logits_output is None and len(flat) == 1 and len(outs) > 1:
                logits_output = flat[0]
            self.logits_name = G.choose_logits(model, logits_output, path=model_path)
        self.features_name, self.pooling, self.features_from = self._features(
            model, model_path, hidden, flat, outs, features_output, pooling)
        run_names = [n for n in (self.logits_name, self.features_name) if n is not None]
        self.names = run_names
        self.num_outputs = None if self.logits_name is None else \
            G.output_width(model, self.logits_name)
        self.session, info = make_session(G.with_outputs(model, run_names).SerializeToString(),
                                          device)
        info.update(logits_output=self.logits_name, features_output=self.features_name,
                    features_from=self.features_from, input_name="input_ids")
        self.info = info
        self.dims = None

    def _features(self, model, path, hidden, flat, outs, features_output, pooling):
        """``(tensor, pooling, description)`` of the features."""
        if features_output is not None:
            rank = outs.get(features_output)
            pool = pooling or ("mean" if rank == 3 else "output")
            return features_output, pool, f"tensor {features_output!r}, {pool} pooling"
        if self.logits_name is not None and pooling is None:
            try:
                name = G.find_features(model, self.logits_name, path=path)
                return name, "output", "input of the final linear layer"
            except GradscoreError:
                pass
        pool = pooling or ("mean" if hidden else "output")
        if pool in ("mean", "cls"):
            if len(hidden) != 1:
                raise GradscoreError(
                    f"{path}: --pooling {pool} needs one last-hidden-state output (batch, "
                    f"tokens, width); the model has {len(hidden)} "
                    f"({', '.join(hidden) or 'none'}); name one with --features-output")
            return hidden[0], pool, (f"{pool} of output {hidden[0]!r} over the attention mask"
                                     if pool == "mean" else
                                     f"first token ([CLS]) of output {hidden[0]!r}")
        cands = [n for n in flat if n != self.logits_name]
        if len(cands) != 1:
            raise GradscoreError(
                f"{path}: --pooling output needs one 2-D output (a pooled embedding); the model "
                f"has {len(cands)} ({', '.join(cands) or 'none'}); name it with "
                "--features-output, or use --pooling mean")
        return cands[0], "output", f"the model's output {cands[0]!r}"

    def run(self, x, *, row_offset=0, rows=None):
        """``(logits, features)`` of one tokenised batch (dict of 2-D int arrays)."""
        n = x["input_ids"].shape[0]
        feeds = {k: np.ascontiguousarray(x[k], dtype=dt) for k, dt in self.inputs.items()}
        logits, rest = run_session(self.session, self.names, feeds, n, row_offset=row_offset,
                                   rows=rows, logits=self.logits_name is not None)
        feats = None
        if self.features_name is not None:
            h = np.asarray(rest[0], dtype=np.float32)
            if h.ndim == 3 and self.pooling in ("mean", "cls"):
                if self.pooling == "cls":
                    h = h[:, 0]
                else:
                    m = x["attention_mask"].astype(np.float32)[:, :h.shape[1], None]
                    h = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
            elif h.ndim == 3:
                raise GradscoreError(f"model output {self.features_name!r} has shape "
                                     f"{h.shape}: a hidden state; use --pooling mean or cls")
            check_output(self.features_name, h, n, row_offset, "features", rows)
            feats = np.ascontiguousarray(h, dtype=np.float32)
        return logits, feats
