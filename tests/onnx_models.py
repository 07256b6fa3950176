"""Small ONNX models for the tests (onnx, onnxruntime and torch needed):
a tiny MLP trained on scikit-learn's digits and exported, and hand-built graphs."""

import os
import warnings

import h5py
import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits


def build_digits_model(folder):
    """Train a tiny MLP on digits (inputs (N, 1, 8, 8)), export it to ONNX.

    Returns a dict: model, data (HDF5 with str-free int data), x, y,
    features and logits from torch's forward pass.
    """
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU())
    head = torch.nn.Linear(32, 10)
    net = torch.nn.Sequential(body, head)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        feats = body(xt).numpy()
        logits = net(xt).numpy()
    path = os.path.join(folder, "digits.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: the dynamo one needs onnxscript.
            torch.onnx.export(net, (xt[:2],), path, input_names=["image"],
                              output_names=["logits"],
                              dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
                              dynamo=False)
    except Exception:  # exporter unavailable: same network from its weights
        w1, b1 = body[1].weight.detach().numpy(), body[1].bias.detach().numpy()
        w2, b2 = head.weight.detach().numpy(), head.bias.detach().numpy()
        nodes = [helper.make_node("Flatten", ["image"], ["flat"]),
                 helper.make_node("Gemm", ["flat", "w1", "b1"], ["hid"], transB=1),
                 helper.make_node("Relu", ["hid"], ["feat"]),
                 helper.make_node("Gemm", ["feat", "w2", "b2"], ["logits"], transB=1)]
        inits = [numpy_helper.from_array(a, n) for a, n in
                 ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
        save(make_model(nodes, inits, "image", ["n", 1, 8, 8], ["logits"]), path)
    data = os.path.join(folder, "digits.h5")
    with h5py.File(data, "w") as f:
        f["inputs"] = x
        f["labels"] = y
    return dict(model=path, data=data, x=x, y=y, features=feats, logits=logits)


def make_model(nodes, inits, in_name, in_shape, outs, *, opset=17, domains=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT,
                                                                     in_shape)],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in outs], initializer=inits)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = 8
    return m


def save(model, path):
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return path


def linear_model(folder, name="lin.onnx", d=64, c=10, *, seed=0, extra=None):
    """Flat input (N, d) -> Tanh -> MatMul + Add (the MatMul/Add form of a layer)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, c)).astype(np.float32) * 0.3
    b = rng.normal(size=c).astype(np.float32)
    nodes = [helper.make_node("Tanh", ["x"], ["h"]),
             helper.make_node("MatMul", ["h", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["z"])] + (extra or [])
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    return make_model(nodes, inits, "x", ["n", d], ["z"]), w, b
