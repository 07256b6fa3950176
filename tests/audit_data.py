"""Small image datasets and ONNX encoders for the audit tests (no downloads).

Images are drawn procedurally: class ``c`` is noise with channel ``c`` lifted,
so a random-feature encoder separates the classes and a probe fits them.
Encoders are built with ``onnx.helper`` (no torch): Flatten -> MatMul ->
Relu (the features) -> MatMul + Add (the logits).
"""

import os
import struct
import zlib

import numpy as np


def draw(c, rng, size=(20, 24)):
    """One RGB uint8 image of class ``c`` (0, 1 or 2)."""
    a = rng.integers(0, 80, size=size + (3,)).astype(np.uint8)
    a[..., c % 3] += 150
    return a


def image_folder(root, names=("blue", "green", "red"), per_class=12, seed=0):
    """``root/<name>/img_XXX.png``; returns the ids in torchvision's order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ids = []
    for c, name in enumerate(names):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw(c, rng)).save(os.path.join(root, name, f"img_{i:03d}.png"))
            ids.append(f"{name}/img_{i:03d}.png")
    return ids


def encoder(path, *, n_out=3, size=(16, 16), channels=3, layout="nchw", hidden=24, seed=0,
            head=True):
    """Save a small ONNX model; ``head=False`` makes the features the output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    d = channels * size[0] * size[1]
    w1 = (rng.normal(size=(d, hidden)) / np.sqrt(d)).astype(np.float32)
    w2 = rng.normal(size=(hidden, n_out)).astype(np.float32)
    b2 = np.zeros(n_out, np.float32)
    shape = ["n", channels, *size] if layout == "nchw" else ["n", *size, channels]
    nodes = [helper.make_node("Flatten", ["image"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w1"], ["hid"]),
             helper.make_node("Relu", ["hid"], ["feat"])]
    inits = [numpy_helper.from_array(w1, "w1")]
    out = "feat"
    if head:
        nodes += [helper.make_node("MatMul", ["feat", "w2"], ["mm"]),
                  helper.make_node("Add", ["mm", "b2"], ["logits"])]
        inits += [numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")]
        out = "logits"
    width = n_out if head else hidden
    graph = helper.make_graph(
        nodes, "encoder", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", width])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def bomb_png(path, width=30000, height=30000):
    """A valid ~100-byte PNG that declares ``width`` x ``height`` RGB pixels."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                 chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path
