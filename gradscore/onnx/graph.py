"""ONNX graphs: load untrusted models safely, find the features, build the k-NN graph.

A model file is treated as untrusted. :func:`load_model` refuses

- files that do not parse as an ONNX ModelProto, or parse to no graph;
- tensors whose external data lives outside the model's folder (an absolute
  path, ``..``, or a symbolic link leading out), which would let a model read
  any file the user can;
- operators from domains other than the standard ones and the model's own
  local functions: custom operators need a native library, and gradscore
  never loads one;
- ``Loop`` nodes, whose trip count and condition the model itself sets (a
  run could go on for ever);
- graph outputs that no node, input or initializer produces;
- tensors (initializers, constants, and intermediate tensors whose shape
  shape inference can tell, counting each symbolic dimension as 1) that
  declare more than ``max_tensor_bytes``, and initializers whose data does
  not match their declared shape, so that a few-KB model cannot make
  onnxruntime allocate gigabytes.

The user's file is never changed: extra outputs are added to the in-memory
copy only.
"""

import math
import os

import numpy as np

from ..errors import GradscoreError
from .providers import import_onnx

#: Operator domains any onnxruntime build implements without custom libraries.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")

#: Nodes that pass a tensor through unchanged, looked through when tracing
#: the logits back to the final linear layer.
_PASS_THROUGH = ("Identity",)

#: Largest tensor an untrusted model may declare (bytes): initializers,
#: constants, and intermediate tensors for one example.
MAX_TENSOR_BYTES = 2**31

#: Control-flow operators refused in untrusted models (unbounded iteration).
REFUSED_OPS = ("Loop",)

#: Protobuf refuses messages above 2 GiB; models with more external data
#: cannot be handed to onnxruntime from memory.
_MAX_PROTO_BYTES = 2**31 - 1


def _subgraphs(graph):
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and attr.HasField("g"):
                yield attr.g
                yield from _subgraphs(attr.g)
            for g in attr.graphs:
                yield g
                yield from _subgraphs(g)


def _tensors(model):
    """Every TensorProto in the model: initializers, attribute tensors, subgraphs."""
    graphs = [model.graph] + list(_subgraphs(model.graph))
    for g in graphs:
        yield from g.initializer
        for sp in g.sparse_initializer:
            yield sp.values
            yield sp.indices
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors


def _check_external_data(model, path):
    onnx = import_onnx()
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    total = 0
    for t in _tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        where = f"{path}: tensor '{t.name}' stores its data in external file {loc!r}"
        if not loc or os.path.isabs(loc) or loc.startswith(("\\", "/")) or ":" in loc:
            raise GradscoreError(f"{where}; external data paths must be relative to the "
                                 f"model's folder {base}")
        target = os.path.realpath(os.path.join(base, loc))
        if os.path.commonpath([base, target]) != base:
            raise GradscoreError(f"{where}, which resolves to {target}, outside the "
                                 f"model's folder {base}; refused")
        if not os.path.isfile(target):
            raise GradscoreError(f"{where}, which does not exist")
        total += int(info.get("length", 0) or os.path.getsize(target))
    return total


def _check_domains(model, path):
    local = {(f.domain, f.name) for f in model.functions}
    graphs = [model.graph] + list(_subgraphs(model.graph))
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    bad = [n for n in nodes
           if n.domain not in STANDARD_DOMAINS and (n.domain, n.op_type) not in local]
    if bad:
        first = bad[0]
        kinds = sorted({f"{n.domain}::{n.op_type}" for n in bad})
        raise GradscoreError(
            f"{path}: {len(bad)} node(s) use custom operators ({', '.join(kinds[:10])}; first: "
            f"node '{first.name}'); custom-op domains and their native libraries are "
            f"refused for untrusted models. Allowed domains: "
            f"{', '.join(repr(d) for d in STANDARD_DOMAINS)} and the model's local functions")


def _check_ops(model, path):
    graphs = [model.graph] + list(_subgraphs(model.graph))
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    bad = [n for n in nodes if n.domain in STANDARD_DOMAINS and n.op_type in REFUSED_OPS]
    if bad:
        raise GradscoreError(
            f"{path}: {len(bad)} {bad[0].op_type} node(s) (first: {bad[0].name!r}); "
            f"{', '.join(REFUSED_OPS)} nodes are refused for untrusted models: the model "
            "sets their trip count and condition, so a run could go on for ever")


def _check_outputs(model, path):
    g = model.graph
    made = {o for n in g.node for o in n.output if o} | {v.name for v in g.input} | \
        {t.name for t in g.initializer}
    missing = [o.name for o in g.output if o.name not in made]
    if missing:
        raise GradscoreError(
            f"{path}: graph output(s) {', '.join(repr(m) for m in missing[:10])} are produced "
            "by no node, input or initializer; the model is incomplete")


def _itemsize(onnx, data_type):
    if data_type == onnx.TensorProto.STRING:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except Exception:  # an unknown or undefined element type
        return None


def _fmt_bytes(n):
    return f"{n / 2**30:.1f} GiB ({n} bytes)" if n >= 2**30 else f"{n} bytes"


def _check_tensor_sizes(model, path, limit):
    """Declared sizes of stored tensors: within ``limit`` and matching their data."""
    onnx = import_onnx()
    for t in _tensors(model):
        where = f"{path}: tensor '{t.name}' declares shape {tuple(t.dims)}"
        if any(d < 0 for d in t.dims):
            raise GradscoreError(f"{where}, with a negative dimension; refused")
        count = math.prod(t.dims)
        size = _itemsize(onnx, t.data_type)
        if size is None:
            continue
        declared = count * size
        if declared > limit:
            raise GradscoreError(f"{where} = {_fmt_bytes(declared)}, more than the "
                                 f"{_fmt_bytes(limit)} an untrusted model may declare; refused")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            length = info.get("length")
            if length is not None and int(length) != declared:
                raise GradscoreError(f"{where} = {declared} bytes but its external data "
                                     f"is {length} bytes long; refused")
            continue
        if t.HasField("raw_data"):
            have = len(t.raw_data)
            ok = have == declared
        else:
            try:
                onnx.numpy_helper.to_array(t)
                ok = True
            except Exception:  # a typed field whose length does not match
                ok = False
            have = "a different number of"
        if not ok:
            raise GradscoreError(f"{where} = {declared} bytes but holds {have} bytes of "
                                 "data; refused")


def _check_intermediates(model, path, limit):
    """Shapes shape inference can tell (symbolic dimensions as 1): within ``limit``."""
    onnx = import_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # best effort: models shape inference cannot follow still run
        return
    g = inferred.graph
    producer = {o: n for n in g.node for o in n.output}
    for v in list(g.value_info) + list(g.output):
        tt = v.type.tensor_type
        if not tt.HasField("shape"):
            continue
        size = _itemsize(onnx, tt.elem_type)
        if size is None:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        if any(d < 0 for d in dims):
            continue
        nbytes = math.prod(dims) * size
        if nbytes > limit:
            node = producer.get(v.name)
            made = f" (output of a {node.op_type} node {node.name!r})" if node else ""
            shown = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                          for d in tt.shape.dim)
            raise GradscoreError(
                f"{path}: tensor '{v.name}'{made} would have shape {shown} = "
                f"{_fmt_bytes(nbytes)} for one example, more than the {_fmt_bytes(limit)} an "
                "untrusted model may use; refused")


def load_model(path, *, max_tensor_bytes=MAX_TENSOR_BYTES):
    """Read an ONNX model, refusing what an untrusted file must not do.

    Parameters
    ----------
    path : str or path-like
    max_tensor_bytes : int, default=2**31
        Largest tensor the model may declare: initializers, constants and
        intermediate tensors for one example.

    Returns
    -------
    model : onnx.ModelProto
        With any (checked) external data loaded into memory.

    Raises
    ------
    GradscoreError
        File missing, not ONNX, external data outside the model's folder,
        custom operators, Loop nodes, missing outputs, or tensors larger
        than ``max_tensor_bytes`` (or whose data does not match their shape).
    """
    onnx = import_onnx()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GradscoreError(f"{path}: no such model file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise GradscoreError(f"{path}: not an ONNX model (it does not parse as an ONNX "
                             f"ModelProto: {type(exc).__name__}: {exc})") from None
    if model.ir_version < 1 or not model.HasField("graph") or not model.graph.node \
            or not model.graph.output:
        raise GradscoreError(f"{path}: not an ONNX model (no graph with nodes and outputs; "
                             f"ir_version={model.ir_version})")
    _check_domains(model, path)
    _check_ops(model, path)
    _check_outputs(model, path)
    _check_tensor_sizes(model, path, max_tensor_bytes)
    _check_intermediates(model, path, max_tensor_bytes)
    external = _check_external_data(model, path)
    if external:
        if external + model.ByteSize() > _MAX_PROTO_BYTES:
            raise GradscoreError(f"{path}: model with {external} bytes of external data is "
                                 "too large to load from memory (limit 2 GiB)")
        onnx.external_data_helper.load_external_data_for_model(
            model, os.path.dirname(os.path.abspath(path)))
    # No onnx.checker here: it rejects models onnxruntime runs fine (outputs
    # without a shape, say); onnxruntime validates the graph when loading it.
    return model


def _producers(graph):
    return {out: node for node in graph.node for out in node.output if out}


def _constants(graph):
    names = {t.name for t in graph.initializer}
    names |= {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    return names


def graph_inputs(model):
    """The model's real inputs (graph inputs that are not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def output_names(model):
    return [o.name for o in model.graph.output]


def choose_logits(model, logits_output=None, *, path="model"):
    """Name of the graph output that holds the logits."""
    names = output_names(model)
    if logits_output is not None:
        if logits_output not in names:
            raise GradscoreError(f"{path}: 'logits_output' {logits_output!r} is not an output "
                                 f"of the model; its outputs are: {', '.join(names)}")
        return logits_output
    if len(names) != 1:
        raise GradscoreError(f"{path}: the model has {len(names)} outputs "
                             f"({', '.join(names)}); name the logits with --logits-output NAME")
    return names[0]


def find_features(model, logits, *, path="model"):
    """Name of the tensor fed to the final linear layer that makes ``logits``.

    Follows ``logits`` back through Identity nodes to ``Gemm(h, W, b)``,
    ``MatMul(h, W)`` or ``Add(MatMul(h, W), b)`` with constant ``W`` (and
    ``b``), and returns ``h``.

    Raises
    ------
    GradscoreError
        When no such layer produces the logits; the message says what was
        found and how to name the tensor instead.
    """
    g = model.graph
    prod = _producers(g)
    consts = _constants(g)
    name = logits
    node = prod.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        name = node.input[0]
        node = prod.get(name)

    def fail(found):
        raise GradscoreError(
            f"{path}: cannot find the final linear layer: the logits output {logits!r} is "
            f"produced by {found}, not by Gemm, MatMul or MatMul+Add with constant weights. "
            "Name the final layer's input tensor with --features-output NAME (or leave "
            "features out of the export)")

    def describe(n):
        return f"a {n.op_type} node {n.name!r} (inputs: {', '.join(n.input)})"

    if node is None:
        fail("no node (it is a graph input or a constant)")
    if node.op_type == "Add":
        a, b = node.input[0], node.input[1]
        mm = [(x, other) for x, other in ((a, b), (b, a))
              if x in prod and prod[x].op_type == "MatMul" and other in consts]
        if not mm:
            fail(describe(node) + " whose inputs are not a MatMul and a constant bias")
        node = prod[mm[0][0]]
    if node.op_type == "Gemm":
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        if trans_a or node.input[1] not in consts:
            fail(describe(node) + " with transA=1 or non-constant weights")
        return node.input[0]
    if node.op_type == "MatMul":
        if node.input[1] in consts:
            return node.input[0]
        fail(describe(node) + " whose right-hand side is not a constant weight")
    fail(describe(node))


def with_outputs(model, names):
    """Copy of ``model`` whose outputs are exactly ``names`` (intermediate tensors allowed)."""
    onnx = import_onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name: o for o in m.graph.output}
    known = set(existing) | {v.name for v in m.graph.input} | \
        {o for n in m.graph.node for o in n.output}
    missing = [n for n in names if n not in known]
    if missing:
        raise GradscoreError(f"'features_output' {missing[0]!r} is not a tensor of the model "
                             "(not an output of any node or a graph input)")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        infos = {v.name: v for v in list(inferred.graph.value_info) +
                 list(inferred.graph.output) + list(inferred.graph.input)}
    except Exception:  # shape inference is best effort; types default to float
        infos = {}
    outs = []
    for n in names:
        if n in existing:
            outs.append(existing[n])
        elif n in infos and infos[n].type.tensor_type.elem_type:
            outs.append(infos[n])
        else:
            outs.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    del m.graph.output[:]
    m.graph.output.extend(outs)
    return m


def output_width(model, name):
    """Last dimension of graph output ``name`` when the graph fixes it, else None."""
    onnx = import_onnx()
    outs = {o.name: o for o in model.graph.output}
    v = outs.get(name)
    if v is None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # best effort
            return None
        v = {o.name: o for o in list(inferred.graph.value_info) +
             list(inferred.graph.output)}.get(name)
    if v is None or not v.type.tensor_type.HasField("shape"):
        return None
    dims = v.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[-1].HasField("dim_value"):
        return None
    return int(dims[-1].dim_value)


def input_spec(model, *, path="model"):
    """``(name, dims, numpy dtype)`` of the model's single input.

    ``dims`` holds ints for fixed sizes and None for symbolic ones.
    """
    onnx = import_onnx()
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise GradscoreError(f"{path}: the model takes {len(inputs)} inputs "
                             f"({', '.join(v.name for v in inputs)}); extraction supports "
                             "models with exactly one input")
    v = inputs[0]
    tt = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] \
        if tt.HasField("shape") else None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else \
        np.dtype(np.float32)
    return v.name, dims, np.dtype(dtype)


# ---------------------------------------------------------------- k-NN graph

def knn_graph(kind="dense", dtype=np.float64):
    """ONNX graph of one block of exact k-NN: squared distances + TopK.

    Inputs: ``X`` (n, d) all rows [``outer``: ``A`` (n, C) and ``H`` (n, D)],
    ``sq`` (n,) their squared norms, ``start``/``stop`` (1,) int64 the block
    of query rows, ``k`` (1,) int64. Outputs ``d2`` (b, k) and ``idx`` (b, k).

    .. math::

        d^2_{ij} = \\max(0, |x_i|^2 + |x_j|^2 - 2 x_i \\cdot x_j),
        \\qquad d^2_{ii} = \\infty

    For ``kind="outer"`` the Gram block is the elementwise product of the
    two factors' Gram blocks, :math:`(a_i \\cdot a_j)(h_i \\cdot h_j)`. TopK
    breaks ties by the lower index, matching the NumPy backends' order.
    """
    onnx = import_onnx()
    from onnx import TensorProto, helper

    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    zero = helper.make_tensor("zero", et, [], [0.0])
    inf = helper.make_tensor("inf", et, [], [np.inf])
    minus_two = helper.make_tensor("minus_two", et, [], [-2.0])
    axis0 = helper.make_tensor("axis0", TensorProto.INT64, [1], [0])
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    zero_i = helper.make_tensor("zero_i", TensorProto.INT64, [], [0])
    axis1 = helper.make_tensor("axis1", TensorProto.INT64, [1], [1])
    axis0u = helper.make_tensor("axis0u", TensorProto.INT64, [1], [0])
    nodes = []
    if kind == "dense":
        ins = [helper.make_tensor_value_info("X", et, ["n", "d"])]
        nodes += [helper.make_node("Slice", ["X", "start", "stop", "axis0"], ["Q"]),
                  helper.make_node("Transpose", ["X"], ["XT"], perm=[1, 0]),
                  helper.make_node("MatMul", ["Q", "XT"], ["G"])]
    elif kind == "outer":
        ins = [helper.make_tensor_value_info("A", et, ["n", "c"]),
               helper.make_tensor_value_info("H", et, ["n", "e"])]
        nodes += [helper.make_node("Slice", ["A", "start", "stop", "axis0"], ["QA"]),
                  helper.make_node("Slice", ["H", "start", "stop", "axis0"], ["QH"]),
                  helper.make_node("Transpose", ["A"], ["AT"], perm=[1, 0]),
                  helper.make_node("Transpose", ["H"], ["HT"], perm=[1, 0]),
                  helper.make_node("MatMul", ["QA", "AT"], ["GA"]),
                  helper.make_node("MatMul", ["QH", "HT"], ["GH"]),
                  helper.make_node("Mul", ["GA", "GH"], ["G"])]
    else:
        raise GradscoreError(f"'kind' must be 'dense' or 'outer'; got {kind!r}")
    ins += [helper.make_tensor_value_info("sq", et, ["n"]),
            helper.make_tensor_value_info("start", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("stop", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1])]
    nodes += [
        # Same operation order as the NumPy brute force: -2G + |q|^2 + |x|^2.
        helper.make_node("Mul", ["G", "minus_two"], ["G2"]),
        helper.make_node("Slice", ["sq", "start", "stop", "axis0"], ["sqQ"]),
        helper.make_node("Unsqueeze", ["sqQ", "axis1"], ["sqQc"]),
        helper.make_node("Unsqueeze", ["sq", "axis0u"], ["sqXr"]),
        helper.make_node("Add", ["G2", "sqQc"], ["D1"]),
        helper.make_node("Add", ["D1", "sqXr"], ["D2"]),
        helper.make_node("Max", ["D2", "zero"], ["D3"]),
        # Self by index, never by assuming it is nearest (duplicates tie at 0).
        helper.make_node("Squeeze", ["start", "axis0"], ["start_s"]),
        helper.make_node("Squeeze", ["stop", "axis0"], ["stop_s"]),
        helper.make_node("Range", ["start_s", "stop_s", "one"], ["rows"]),
        helper.make_node("Shape", ["sq"], ["n_vec"]),
        helper.make_node("Squeeze", ["n_vec", "axis0"], ["n_s"]),
        helper.make_node("Range", ["zero_i", "n_s", "one"], ["cols"]),
        helper.make_node("Unsqueeze", ["rows", "axis1"], ["rows_c"]),
        helper.make_node("Unsqueeze", ["cols", "axis0u"], ["cols_r"]),
        helper.make_node("Equal", ["rows_c", "cols_r"], ["self"]),
        helper.make_node("Where", ["self", "inf", "D3"], ["D"]),
        helper.make_node("TopK", ["D", "k"], ["d2", "idx"], axis=1, largest=0, sorted=1),
    ]
    outs = [helper.make_tensor_value_info("d2", et, ["b", "k"]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["b", "k"])]
    graph = helper.make_graph(nodes, f"gradscore_knn_{kind}", ins, outs,
                              initializer=[zero, inf, minus_two, axis0, one, zero_i,
                                           axis1, axis0u])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="gradscore")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
