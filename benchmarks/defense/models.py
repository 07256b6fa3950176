"""Victim networks, training loops and the ART wrapper.

The networks register their final linear layer (``head``) *before* the
feature extractor (``features``). ART's PyTorch wrapper lists a model's
top-level modules in registration order and its poison detectors
(ActivationDefence, SpectralSignatureDefense) read "the last layer" of that
list; this order makes that the penultimate features, as those defences are
meant to use, rather than the logits. The forward pass is unaffected.
"""

import copy

import numpy as np


def _torch():
    import torch
    return torch


def make_model(input_shape, num_classes, width=64):
    """Small CNN for (1, 8, 8) images or (1, 40) signals; features of size ``width``."""
    torch = _torch()
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_shape = tuple(input_shape)   # for a fresh net of the same shape
            self.head = nn.Linear(width, num_classes)
            if len(input_shape) == 3:        # (C, H, W) images
                c, h, w = input_shape
                conv = [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
                flat = 32 * (h // 2) * (w // 2)
            else:                            # (C, L) signals
                c, L = input_shape
                conv = [nn.Conv1d(c, 32, 5, padding=2), nn.ReLU(),
                        nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2)]
                flat = 64 * (L // 2)
            self.features = nn.Sequential(*conv, nn.Flatten(), nn.Linear(flat, width), nn.ReLU())

        def forward(self, x):
            return self.head(self.features(x))

    return Net()


def set_seed(seed):
    torch = _torch()
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2 ** 32))


def make_optimizer(model, lr, weight_decay=5e-4):
    torch = _torch()
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train_epochs(model, x, y, *, epochs, lr, batch_size, device, seed, optimizer=None,
                 rows=None, first_epoch=0, frozen_features=False):
    """Minibatch training (Adam) on ``rows`` of (x, y); returns the optimizer.

    The shuffle of epoch ``e`` is seeded by ``(seed, e)`` alone, so a run that
    branches off another at some epoch sees the same batches as it would have.
    ``frozen_features=True`` (a transfer victim, whose feature extractor does
    not train) computes the features once and trains the head on them: the
    same batches and updates, without a forward pass of the extractor per
    batch (the networks have no dropout or batch norm).
    """
    torch = _torch()
    model.to(device)
    if optimizer is None:
        optimizer = make_optimizer(model, lr)
    if rows is None:
        rows = np.arange(len(x))
    xt = torch.as_tensor(x[rows], dtype=torch.float32, device=device)
    yt = torch.as_tensor(y[rows], dtype=torch.long, device=device)
    net = model
    if frozen_features:
        model.eval()
        with torch.no_grad():
            xt = torch.cat([model.features(xt[s:s + 1024]) for s in range(0, len(xt), 1024)])
        net = model.head
    loss_fn = torch.nn.CrossEntropyLoss()
    n = xt.shape[0]
    for e in range(first_epoch, first_epoch + epochs):
        model.train()
        g = torch.Generator().manual_seed(int(seed) * 1009 + e)
        perm = torch.randperm(n, generator=g).to(device)
        for s in range(0, n, batch_size):
            b = perm[s:s + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(xt[b]), yt[b]).backward()
            optimizer.step()
    return optimizer


def outputs(model, x, device, batch_size=1024):
    """(features, logits) in eval mode, as float32 NumPy arrays."""
    torch = _torch()
    model.eval()
    feats, logits = [], []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[s:s + batch_size], dtype=torch.float32, device=device)
            f = model.features(xb)
            feats.append(f.cpu().numpy())
            logits.append(model.head(f).cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def predict(model, x, device):
    return outputs(model, x, device)[1].argmax(1)


def pretrain(splits, *, seed, device, epochs=40, lr=2e-3, batch_size=64):
    """Train the feature extractor on the pre-training split (disjoint from the rest)."""
    set_seed(seed)
    model = make_model(splits.input_shape, splits.num_classes)
    train_epochs(model, splits.x_pre, splits.y_pre, epochs=epochs, lr=lr,
                 batch_size=batch_size, device=device, seed=seed)
    model.eval()
    return model


def clone(model):
    return copy.deepcopy(model)


def art_classifier(model, splits, device):
    """Wrap a model for ART (PyTorchClassifier); the optimizer is only for ART's fit()."""
    torch = _torch()
    from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        input_shape=tuple(splits.input_shape), nb_classes=splits.num_classes,
        clip_values=splits.clip_values, device_type="gpu" if device == "cuda" else "cpu")
