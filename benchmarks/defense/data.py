"""Offline data for the defence benchmark, split three ways by seed.

``pretrain`` trains the feature extractor the victim starts from (and the
attacker's proxy); ``train`` is what the victim fine-tunes on and what the
attacker poisons; ``test`` holds the targets and measures clean accuracy.
The three are disjoint, so no poison base or target was ever seen in
pre-training.

Nothing here downloads: ``load_digits`` ships with scikit-learn and
``mnist1d.data.make_dataset`` generates its signals locally.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Splits:
    name: str
    x_pre: np.ndarray
    y_pre: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    clip_values: tuple

    @property
    def input_shape(self):
        return self.x_train.shape[1:]


def _split(x, y, fractions, seed):
    """Stratified split into len(fractions) parts, deterministic by seed."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        cuts = np.round(np.cumsum(fractions)[:-1] * rows.size).astype(int)
        for i, chunk in enumerate(np.split(rows, cuts)):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def load_digits_splits(seed=0, fractions=(0.4, 0.4, 0.2)):
    """scikit-learn's 8x8 digits (1797 images), scaled to [0, 1], NCHW."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    pre, tr, te = _split(x, y, fractions, seed)
    return Splits("digits", x[pre], y[pre], x[tr], y[tr], x[te], y[te], 10, (0.0, 1.0))


def load_mnist1d_splits(seed=0, num_samples=6000, fractions=(0.4, 0.4, 0.2)):
    """mnist1d signals (40 samples each), generated offline, rescaled to [0, 1].

    Shape (n, 1, 40). Values are min-max scaled with the whole set's range so
    an L-inf budget means the same thing as for images.
    """
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = 42 + int(seed)
    d = make_dataset(args)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    lo, hi = float(x.min()), float(x.max())
    x = ((x - lo) / (hi - lo))[:, None, :].astype(np.float32)
    pre, tr, te = _split(x, y, fractions, seed)
    return Splits("mnist1d", x[pre], y[pre], x[tr], y[tr], x[te], y[te], 10, (0.0, 1.0))


def shift_augment(x, y, shifts):
    """Every image with copies shifted by each ``(dy, dx)`` in ``shifts`` (zero fill).

    Returns the originals first, then one block per shift, so row ``i`` of
    the input stays row ``i``.
    """
    out_x, out_y = [x], [y]
    h, w = x.shape[-2:]
    for dy, dx in shifts:
        z = np.zeros_like(x)
        z[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        out_x.append(z)
        out_y.append(y)
    return np.concatenate(out_x), np.concatenate(out_y)


#: One-pixel shifts in the 8 directions: with the originals, 9 copies.
SHIFTS_8 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def load_digits_aug_splits(seed=0, fractions=(0.4, 0.4, 0.2), shifts=SHIFTS_8):
    """Digits with the pre-training and victim-training splits shift-augmented.

    The same three disjoint splits of the 1797 images as ``digits``; the
    pre-training and training parts are enlarged 9x by one-pixel shifts
    (about 650 examples per class to train on, 6471 in all), so that a
    poison budget of 10% of a class is about 65 images. Test images stay
    as they are.
    """
    base = load_digits_splits(seed, fractions)
    xp, yp = shift_augment(base.x_pre, base.y_pre, shifts)
    xt, yt = shift_augment(base.x_train, base.y_train, shifts)
    return Splits("digits-aug", xp, yp, xt, yt, base.x_test, base.y_test, 10, (0.0, 1.0))


def load(name, seed=0):
    if name == "digits":
        return load_digits_splits(seed)
    if name == "digits-aug":
        return load_digits_aug_splits(seed)
    if name == "mnist1d":
        return load_mnist1d_splits(seed)
    raise ValueError(f"unknown dataset {name!r}; use 'digits', 'digits-aug' or 'mnist1d'")
