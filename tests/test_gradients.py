import numpy as np
import pytest

from gradscore.gradients import (DenseGradients, OuterGradients, class_gradients,
                                 logit_gradients)


def ce_loss(z, y, eps, c):
    z = z - z.max()
    logp = z - np.log(np.exp(z).sum())
    target = np.full(c, eps / c)
    target[y] += 1 - eps
    return -(target * logp).sum()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_logit_gradient_matches_finite_differences(eps):
    rng = np.random.default_rng(1)
    c = 5
    z = rng.normal(size=(6, c)) * 3
    y = rng.integers(0, c, 6)
    g = logit_gradients(y, z, label_smoothing=eps)
    h = 1e-6
    for i in range(6):
        fd = np.array([(ce_loss(z[i] + h * e, y[i], eps, c) - ce_loss(z[i] - h * e, y[i], eps, c))
                       / (2 * h) for e in np.eye(c)])
        np.testing.assert_allclose(g[i], fd, atol=1e-7)


def test_last_layer_gradient_matches_finite_differences():
    """g (x) [h, 1] is dL/d[W, b] for z = W h + b."""
    rng = np.random.default_rng(2)
    c, d = 3, 4
    w, b = rng.normal(size=(c, d)), rng.normal(size=c)
    feats = rng.normal(size=(5, d))
    y = rng.integers(0, c, 5)
    grads = class_gradients(y, feats @ w.T + b, feats, gradient="last-layer",
                            label_smoothing=0.1)
    dense = grads.dense().reshape(5, c, d + 1)
    h = 1e-6
    for i in range(5):
        def loss(wb):
            return ce_loss(wb[:, :d] @ feats[i] + wb[:, d], y[i], 0.1, c)
        wb = np.concatenate([w, b[:, None]], axis=1)
        fd = np.zeros_like(wb)
        for idx in np.ndindex(wb.shape):
            e = np.zeros_like(wb)
            e[idx] = h
            fd[idx] = (loss(wb + e) - loss(wb - e)) / (2 * h)
        np.testing.assert_allclose(dense[i], fd, atol=1e-7)


def test_logit_gradient_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    z = rng.normal(size=(8, 6))
    y = rng.integers(0, 6, 8)
    zt = torch.tensor(z, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(zt, torch.tensor(y), reduction="sum",
                                             label_smoothing=0.2)
    loss.backward()
    np.testing.assert_allclose(logit_gradients(y, z, label_smoothing=0.2),
                               zt.grad.numpy(), atol=1e-12)


def test_outer_gradients_never_materialised_agree_with_explicit_vectors():
    rng = np.random.default_rng(4)
    a, h = rng.normal(size=(7, 3)), rng.normal(size=(7, 5))
    og = OuterGradients(a, h)
    x = og.dense()
    np.testing.assert_allclose(og.sqnorms(), (x ** 2).sum(1))
    np.testing.assert_allclose(og.inner(slice(2, 5)), x[2:5] @ x.T)
    other = og.take([0, 6])
    np.testing.assert_allclose(og.cross(slice(None), other), x @ x[[0, 6]].T)
    dg = DenseGradients(x)
    np.testing.assert_allclose(dg.sqnorms(), og.sqnorms())


def test_gradient_rows_sum_to_zero_and_target_class_is_negative():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 20)
    g = logit_gradients(y, rng.normal(size=(20, 4)))
    np.testing.assert_allclose(g.sum(1), 0, atol=1e-12)
    assert (g[np.arange(20), y] < 0).all()
