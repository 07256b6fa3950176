"""``gradscore extract``: ONNX model + dataset -> schema-v1 export.

The reference is the framework itself: a small torch network trained on
scikit-learn's digits, exported to ONNX; extracted features and logits must
match torch's own forward pass.
"""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from click.testing import CliRunner  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import gradscore  # noqa: E402
from gradscore import GradscoreError  # noqa: E402
from gradscore.onnx import extract  # noqa: E402
from gradscore.onnx.providers import choose_device, cuda_status  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402
from onnx_models import build_digits_model, linear_model, save  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return build_digits_model(str(tmp_path_factory.mktemp("digits")))


def test_matches_torch_forward(digits, tmp_path):
    before = hashlib.sha256(open(digits["model"], "rb").read()).hexdigest()
    out = str(tmp_path / "ep.h5")
    info = extract(digits["model"], digits["data"], out, batch_size=500, epoch=3)
    ep = gradscore.read_epoch(out)
    np.testing.assert_allclose(ep.features, digits["features"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ep.logits, digits["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ep.labels, digits["y"])
    np.testing.assert_array_equal(ep.ids, np.arange(len(digits["y"])))
    assert ep.epoch == 3
    assert info["device"] in ("cpu", "cuda") and info["providers"]
    assert info["n_features"] == 32 and info["num_classes"] == 10
    assert info["logits_output"] == "logits"
    # The model file itself is not changed by exposing the features.
    assert hashlib.sha256(open(digits["model"], "rb").read()).hexdigest() == before


def test_batch_size_does_not_change_output(digits, tmp_path):
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    extract(digits["model"], digits["data"], a, batch_size=7)
    extract(digits["model"], digits["data"], b, batch_size=4096)
    ea, eb = gradscore.read_epoch(a), gradscore.read_epoch(b)
    np.testing.assert_array_equal(ea.logits, eb.logits)
    np.testing.assert_array_equal(ea.features, eb.features)


def test_npz_with_str_ids_and_matmul_add_model(tmp_path):
    model, w, b = linear_model(tmp_path)
    path = save(model, str(tmp_path / "lin.onnx"))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 64)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    ids = np.array([f"img-{i:03d}" for i in range(50)][::-1])
    np.savez(tmp_path / "d.npz", inputs=x, labels=y, ids=ids)
    info = extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"), batch_size=16)
    assert info["features_output"] == "h"
    ep = gradscore.read_epoch(str(tmp_path / "e.h5"))
    order = np.argsort(ids)  # the reader sorts rows by id
    np.testing.assert_array_equal(ep.ids, ids[order])
    h = np.tanh(x.astype(np.float64))
    np.testing.assert_allclose(ep.features, h[order], atol=1e-5)
    np.testing.assert_allclose(ep.logits, (h @ w + b)[order], atol=1e-4)


def test_named_outputs(tmp_path):
    extra = [helper.make_node("Softmax", ["z"], ["p"], axis=1)]
    model, _, _ = linear_model(tmp_path, extra=extra)
    model.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, None))
    path = save(model, str(tmp_path / "two.onnx"))
    x = np.random.default_rng(0).normal(size=(20, 64)).astype(np.float32)
    np.savez(tmp_path / "d.npz", inputs=x, labels=np.arange(20) % 10)
    data = str(tmp_path / "d.npz")
    with pytest.raises(GradscoreError, match=r"has 2 outputs \(z, p\).*--logits-output"):
        extract(path, data, str(tmp_path / "e.h5"))
    info = extract(path, data, str(tmp_path / "e.h5"), logits_output="z",
                   features_output="mm")
    ep = gradscore.read_epoch(str(tmp_path / "e.h5"))
    assert info["features_output"] == "mm" and ep.n_features == 10
    with pytest.raises(GradscoreError, match="'features_output' 'nope' is not a tensor"):
        extract(path, data, str(tmp_path / "e.h5"), logits_output="z",
                features_output="nope")


def test_logits_not_from_linear_layer(tmp_path):
    extra = [helper.make_node("Softmax", ["z"], ["p"], axis=1)]
    model, _, _ = linear_model(tmp_path, extra=extra)
    model.graph.output[0].name = "p"
    path = save(model, str(tmp_path / "soft.onnx"))
    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 64), np.float32), labels=np.arange(4))
    with pytest.raises(GradscoreError, match=r"produced by a Softmax node .*--features-output"):
        extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"))
    # Naming the tensor, or leaving features out, works.
    extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"), features_output="h")
    extract(path, str(tmp_path / "d.npz"), str(tmp_path / "f.h5"), features=False)
    assert gradscore.read_epoch(str(tmp_path / "f.h5")).features is None


def test_not_onnx(tmp_path, digits):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x89HDF\r\n this is not a model" * 10)
    with pytest.raises(GradscoreError, match="not an ONNX model"):
        extract(str(bad), digits["data"], str(tmp_path / "e.h5"))
    with pytest.raises(GradscoreError, match="no such model file"):
        extract(str(tmp_path / "missing.onnx"), digits["data"], str(tmp_path / "e.h5"))


def test_shape_mismatch_names_both_shapes(digits, tmp_path):
    np.savez(tmp_path / "flat.npz", inputs=digits["x"].reshape(-1, 64)[:10],
             labels=digits["y"][:10])
    with pytest.raises(GradscoreError, match=r"expects shape \(N, 1, 8, 8\).*has shape "
                                             r"\(10, 64\)"):
        extract(digits["model"], str(tmp_path / "flat.npz"), str(tmp_path / "e.h5"))
    assert not os.path.exists(tmp_path / "e.h5")


def test_nonfinite_outputs_name_rows(tmp_path):
    # log(x) is NaN for negative inputs: rows 3 and 7 of the dataset.
    model, _, _ = linear_model(tmp_path)
    model.graph.node[0].op_type = "Log"
    path = save(model, str(tmp_path / "log.onnx"))
    x = np.ones((12, 64), np.float32)
    x[3, 5] = -1.0
    x[7, 0] = -2.0
    np.savez(tmp_path / "d.npz", inputs=x, labels=np.zeros(12, int))
    with pytest.raises(GradscoreError, match=r"'z' \(logits\) contains NaN in 2 rows "
                                             r"\(first: 3, 7\)"):
        extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"), batch_size=8)
    with pytest.raises(GradscoreError, match=r"NaN in 1 row \(first: 3\) .* rows 0\.\.4;"):
        extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"), batch_size=5)
    assert not os.path.exists(tmp_path / "e.h5")


def _external(tmp_path, location):
    model, w, _ = linear_model(tmp_path)
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value=location)
    return model, w


def test_external_data_outside_folder_refused(tmp_path):
    (tmp_path / "m").mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(640, np.float32).tobytes())
    np.savez(tmp_path / "d.npz", inputs=np.ones((4, 64), np.float32), labels=np.arange(4))
    for loc in ("../secret.bin", str(secret)):
        model, _ = _external(tmp_path, loc)
        path = save(model, str(tmp_path / "m" / "ext.onnx"))
        with pytest.raises(GradscoreError, match="external"):
            extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"))
    # A link inside the folder that leads out is refused too.
    os.symlink(secret, tmp_path / "m" / "link.bin")
    model, _ = _external(tmp_path, "link.bin")
    path = save(model, str(tmp_path / "m" / "ext.onnx"))
    with pytest.raises(GradscoreError, match="outside the model's folder"):
        extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"))
    # Data beside the model is fine.
    model, w = _external(tmp_path, "weights.bin")
    (tmp_path / "m" / "weights.bin").write_bytes(w.tobytes())
    path = save(model, str(tmp_path / "m" / "ext.onnx"))
    extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"))
    assert gradscore.read_epoch(str(tmp_path / "e.h5")).n_features == 64


def test_custom_op_domain_refused(tmp_path):
    model, _, _ = linear_model(tmp_path)
    model.graph.node[0].domain = "evil.ops"
    model.graph.node[0].op_type = "Backdoor"
    model.opset_import.append(helper.make_opsetid("evil.ops", 1))
    path = save(model, str(tmp_path / "custom.onnx"))
    np.savez(tmp_path / "d.npz", inputs=np.ones((4, 64), np.float32), labels=np.arange(4))
    with pytest.raises(GradscoreError, match=r"custom operators \(evil\.ops::Backdoor"):
        extract(path, str(tmp_path / "d.npz"), str(tmp_path / "e.h5"))


def test_dataset_errors(digits, tmp_path):
    np.savez(tmp_path / "nolab.npz", inputs=digits["x"][:5])
    with pytest.raises(GradscoreError, match="no dataset 'labels'"):
        extract(digits["model"], str(tmp_path / "nolab.npz"), str(tmp_path / "e.h5"))
    np.savez(tmp_path / "short.npz", inputs=digits["x"][:5], labels=digits["y"][:4])
    with pytest.raises(GradscoreError, match=r"'labels' must have shape \(5,\)"):
        extract(digits["model"], str(tmp_path / "short.npz"), str(tmp_path / "e.h5"))


def test_device_choice_and_no_cuda_noise(digits, tmp_path):
    usable, why = cuda_status()
    dev, providers, reason = choose_device("auto")
    assert dev == ("cuda" if usable else "cpu") and providers[-1] == "CPUExecutionProvider"
    if not usable:
        with pytest.raises(GradscoreError, match="'device' is 'cuda' but CUDA is not usable"):
            choose_device("cuda")
    # A fresh process, as a user runs it: stderr must not carry onnxruntime's
    # "[E:onnxruntime ...] Failed to load library ... libcublasLt" lines.
    out = str(tmp_path / "e.h5")
    proc = subprocess.run([sys.executable, "-m", "gradscore_cli.main", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    code = ("from gradscore_cli.main import main; main(['extract', %r, %r, '-o', %r])"
            % (digits["model"], digits["data"], out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime: running on" in proc.stderr
    for noise in ("[E:onnxruntime", "[W:onnxruntime", "Failed to create CUDAExecutionProvider",
                  "Failed to load library"):
        assert noise not in proc.stderr


def test_cli_extract(digits, tmp_path):
    out = str(tmp_path / "e.h5")
    res = CliRunner().invoke(cli, ["extract", digits["model"], digits["data"], "-o", out,
                                   "--batch-size", "300", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "running on CPU" in res.output and "wrote 1797 rows" in res.output
    assert gradscore.read_epoch(out).n_features == 32
    res = CliRunner().invoke(cli, ["extract", digits["data"], digits["data"], "-o", out])
    assert res.exit_code == 1 and "Error:" in res.output and "not an ONNX model" in res.output
    assert "Traceback" not in res.output


def test_import_gradscore_needs_no_onnx():
    code = ("import sys, gradscore, gradscore.onnx, gradscore.report; "
            "from gradscore.neighbors import backend_names; "
            "assert 'onnx' in backend_names(); "
            "bad = [m for m in ('onnx', 'onnxruntime', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------- untrusted models: sizes

def _data(tmp_path, d=64):
    np.savez(tmp_path / "d.npz", inputs=np.ones((4, d), np.float32), labels=np.arange(4))
    return str(tmp_path / "d.npz")


def test_initializer_declaring_a_huge_shape_is_refused(tmp_path):
    model, _, _ = linear_model(tmp_path)
    t = model.graph.initializer[0]  # 'w': dims (64, 10), 2560 bytes of data
    del t.dims[:]
    t.dims.extend([1_000_000, 1_000_000])
    path = save(model, str(tmp_path / "huge.onnx"))
    assert os.path.getsize(path) < 10_000
    with pytest.raises(GradscoreError, match=r"tensor 'w' declares shape \(1000000, 1000000\) "
                                             r"= 3725\.3 GiB .* refused"):
        extract(path, _data(tmp_path), str(tmp_path / "e.h5"))
    # A shape that fits the limit but not the data is refused too.
    del t.dims[:]
    t.dims.extend([64, 11])
    path = save(model, str(tmp_path / "short.onnx"))
    with pytest.raises(GradscoreError, match=r"declares shape \(64, 11\) = 2816 bytes but "
                                             r"holds 2560 bytes"):
        extract(path, _data(tmp_path), str(tmp_path / "e.h5"))
    assert not os.path.exists(tmp_path / "e.h5")


def test_enormous_intermediate_tensor_is_refused_before_running(tmp_path):
    # ConstantOfShape([1e6, 1e6]) fed into the graph: 4 TB for any batch.
    shape = numpy_helper.from_array(np.array([1_000_000, 1_000_000], np.int64), "big_shape")
    model, _, _ = linear_model(tmp_path, extra=[
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="bomb"),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Add", ["z", "s"], ["out"])])
    model.graph.initializer.append(shape)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, None))
    path = save(model, str(tmp_path / "bomb.onnx"))
    with pytest.raises(GradscoreError, match=r"tensor 'big' \(output of a ConstantOfShape node "
                                             r"'bomb'\) would have shape \(1000000, 1000000\)"):
        extract(path, _data(tmp_path), str(tmp_path / "e.h5"), features=False)


def test_loop_nodes_are_refused(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    trips = numpy_helper.from_array(np.array(10**15, np.int64), "trips")
    cond = numpy_helper.from_array(np.array(True), "cond")
    model, _, _ = linear_model(tmp_path, extra=[
        helper.make_node("Loop", ["trips", "cond", "z"], ["looped"], body=body, name="forever")])
    model.graph.initializer.extend([trips, cond])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("looped", TensorProto.FLOAT, None))
    path = save(model, str(tmp_path / "loop.onnx"))
    with pytest.raises(GradscoreError, match=r"1 Loop node\(s\) \(first: 'forever'\); Loop "
                                             r"nodes are refused"):
        extract(path, _data(tmp_path), str(tmp_path / "e.h5"), features=False)


def test_model_whose_outputs_are_missing_is_refused(tmp_path):
    model, _, _ = linear_model(tmp_path)
    model.graph.output.append(helper.make_tensor_value_info("ghost", TensorProto.FLOAT, None))
    path = save(model, str(tmp_path / "ghost.onnx"))
    with pytest.raises(GradscoreError, match=r"graph output\(s\) 'ghost' are produced by no "
                                             r"node"):
        extract(path, _data(tmp_path), str(tmp_path / "e.h5"), logits_output="z")
    res = CliRunner().invoke(cli, ["extract", path, _data(tmp_path), "-o",
                                   str(tmp_path / "e.h5"), "--logits-output", "z"])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "ghost" in res.output
