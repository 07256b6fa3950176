"""Poisons crafted by ART's attacks (not re-implemented here).

Each ``craft_*`` returns ``(x_poisoned_train, y_poisoned_train, poison_idx)``:
the whole victim training set with the poisons in place, and the row numbers
of the poisons. ART's ``poison()`` methods return either the whole training
set (GradientMatchingAttack: no indices, rows drawn with NumPy's *global*
random state) or only the poison rows (FeatureCollision, BullseyePolytope,
PoisoningAttackBackdoor); both cases are normalised here, and the indices of
a returned whole set are recovered by diffing against the clean set.

ART 1.20.1 bug worked around (not re-implemented): ``BullseyePolytopeAttackPyTorch
.poison`` computes the polytope centre from the *base* images ``x`` instead of
``self.target`` (bullseye_polytope_attack.py lines 189/196/209), and for a
single feature layer pairs poison rows one by one with that centre, so the
attack optimises nothing useful. :class:`BullseyeTargetFix` is a
PyTorchClassifier whose ``get_activations`` (a) answers the attack's one
set-up call on the bases with the target's features and (b) adds a leading
axis to the poisons' features so ART's own loss loop computes
``||mean_j f(p_j) - f(t)|| / ||f(t)||``, the Bullseye objective. ART's
optimiser, projection and clipping are used unchanged.
"""

import numpy as np

from . import models as M


def _diff_indices(x_clean, x_pois):
    changed = np.any(np.abs(x_pois.reshape(len(x_pois), -1) - x_clean.reshape(len(x_clean), -1)) > 0,
                     axis=1)
    return np.flatnonzero(changed)


def craft_gradient_matching(proxy, splits, target_x, adv_class, *, n_poisons, epsilon,
                            max_epochs, max_trials, seed, device, lr_schedule=None, verbose=0,
                            head_only=False):
    """Witches' Brew (ART GradientMatchingAttack) against the pre-trained proxy.

    ``head_only=True`` matches gradients of the final layer only, the
    parameters a transfer-learning victim trains (see :func:`_HeadOnly`).
    """
    import torch
    from art.attacks.poisoning import GradientMatchingAttack
    net = M.clone(proxy)
    if head_only:
        # A transfer victim starts from a freshly initialised head; so does the proxy
        # (the attacker's own draw, not the victim's).
        torch.manual_seed(seed + 7919)
        net.head.reset_parameters()
        net = _HeadOnly(net)
    clf = M.art_classifier(net, splits, device)
    n = len(splits.x_train)
    pct = n_poisons / n   # ART: a fraction of the *whole* training set
    if lr_schedule is None:
        # ART's default milestones (100/150/200/220 of 250) scaled to max_epochs.
        e = max_epochs
        lr_schedule = ([1e-1, 1e-2, 1e-3, 1e-4], [int(e * .4), int(e * .6), int(e * .8), int(e * .88)])
    attack = GradientMatchingAttack(clf, percent_poison=pct, epsilon=epsilon, max_trials=max_trials,
                                    max_epochs=max_epochs, learning_rate_schedule=lr_schedule,
                                    batch_size=256, clip_values=splits.clip_values, verbose=verbose)
    # ART draws the poison rows with np.random.permutation (global state): seed it.
    np.random.seed(seed)
    torch.manual_seed(seed)
    x_p, y_p = attack.poison(target_x, np.array([adv_class]), splits.x_train.copy(),
                             splits.y_train.copy())
    idx = _diff_indices(splits.x_train, x_p)
    return x_p.astype(np.float32), np.asarray(y_p, dtype=np.int64), idx


def _HeadOnly(net):
    """The proxy as ART sees it in transfer learning: only ``head`` is a parameter.

    ART's GradientMatchingAttack differentiates the loss with respect to
    every ``model.parameters()``; a transfer victim trains only the final
    layer, so the frozen feature extractor is kept out of the parameter list
    (held in a plain attribute) while inputs still get gradients through it.
    """
    import torch

    class HeadOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = net.head
            for p in net.features.parameters():
                p.requires_grad_(False)
            object.__setattr__(self, "frozen", net.features)

        def forward(self, x):
            return self.head(self.frozen(x))

    return HeadOnly()


def _base_indices(y_train, adv_class, n_poisons, seed):
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(y_train == adv_class)
    return np.sort(rng.choice(rows, size=min(n_poisons, rows.size), replace=False))


def craft_feature_collision(proxy, splits, target_x, adv_class, *, n_poisons, max_iter,
                            similarity_coeff, learning_rate, watermark, seed, device,
                            batched=False):
    """Poison Frogs (ART FeatureCollisionAttack): bases from the adversarial class.

    ``batched=True`` runs ART's algorithm on all poisons at once
    (:mod:`.frogs`, each poison with its own learning rate).
    """
    idx = _base_indices(splits.y_train, adv_class, n_poisons, seed)
    if batched:
        from .frogs import craft_frogs
        x_p = splits.x_train.copy()
        x_p[idx] = craft_frogs(M.clone(proxy), splits.x_train[idx], target_x, max_iter=max_iter,
                               similarity_coeff=similarity_coeff, learning_rate=learning_rate,
                               watermark=watermark, clip_values=splits.clip_values,
                               device=device)
        return x_p.astype(np.float32), splits.y_train.copy(), idx   # clean label
    from art.attacks.poisoning import FeatureCollisionAttack
    clf = M.art_classifier(M.clone(proxy), splits, device)
    attack = FeatureCollisionAttack(clf, target_x, "features", learning_rate=learning_rate,
                                    max_iter=max_iter, similarity_coeff=similarity_coeff,
                                    watermark=watermark, verbose=False)
    np.random.seed(seed)
    poisons, _ = attack.poison(splits.x_train[idx].copy())
    x_p = splits.x_train.copy()
    x_p[idx] = poisons.reshape((len(idx),) + splits.x_train.shape[1:])
    return x_p.astype(np.float32), splits.y_train.copy(), idx   # clean label


def _bullseye_classifier(model, splits, device, target_x):
    import torch
    from art.estimators.classification import PyTorchClassifier

    class BullseyeTargetFix(PyTorchClassifier):
        """See the module docstring: routes the target into ART's BP centre."""

        def get_activations(self, x, layer=None, batch_size=128, framework=False):
            if framework and isinstance(x, np.ndarray):
                # The attack's set-up call (on the bases): give it the target's features.
                return super().get_activations(target_x, layer, batch_size, framework)
            acts = super().get_activations(x, layer, batch_size, framework)
            if framework and isinstance(x, torch.Tensor):
                return acts.unsqueeze(0)
            return acts

    return BullseyeTargetFix(
        model=model, loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        input_shape=tuple(splits.input_shape), nb_classes=splits.num_classes,
        clip_values=splits.clip_values, device_type="gpu" if device == "cuda" else "cpu")


def craft_bullseye(proxy, splits, target_x, adv_class, *, n_poisons, epsilon, max_iter,
                   learning_rate, seed, device):
    """Bullseye Polytope (ART BullseyePolytopeAttackPyTorch, target-feature bug worked around)."""
    import torch
    from art.attacks.poisoning import BullseyePolytopeAttackPyTorch
    clf = _bullseye_classifier(M.clone(proxy), splits, device, target_x)
    idx = _base_indices(splits.y_train, adv_class, n_poisons, seed)
    attack = BullseyePolytopeAttackPyTorch(clf, target_x, "features", max_iter=max_iter,
                                           learning_rate=learning_rate, epsilon=epsilon,
                                           decay_iter=max(1, max_iter // 3), endtoend=True,
                                           verbose=False)
    np.random.seed(seed)
    torch.manual_seed(seed)
    poisons, _ = attack.poison(splits.x_train[idx].copy(), y=np.full(len(idx), adv_class))
    x_p = splits.x_train.copy()
    x_p[idx] = poisons.reshape((len(idx),) + splits.x_train.shape[1:])
    return x_p.astype(np.float32), splits.y_train.copy(), idx


def trigger_fn(splits):
    """ART's checkerboard trigger (add_pattern_bd) for images; the same idea for signals."""
    from art.attacks.poisoning.perturbations import add_pattern_bd
    if len(splits.input_shape) == 3:
        def fn(x):
            # (N, 1, H, W) -> ART's NHW layout and back.
            return add_pattern_bd(x[:, 0], distance=1, pixel_value=1.0)[:, None].astype(np.float32)
    else:
        def fn(x):
            # Signals (N, 1, L): ART's pattern applied to the last 3x3 of a (N, L/8, 8) view.
            n, c, L = x.shape
            out = add_pattern_bd(x.reshape(n, L // 8, 8), distance=1, pixel_value=1.0)
            return out.reshape(n, c, L).astype(np.float32)
    return fn


def craft_backdoor(splits, adv_class, *, n_poisons, seed):
    """Dirty-label backdoor (ART PoisoningAttackBackdoor, checkerboard trigger), all-to-one."""
    from art.attacks.poisoning import PoisoningAttackBackdoor
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(splits.y_train != adv_class)
    idx = np.sort(rng.choice(rows, size=n_poisons, replace=False))
    attack = PoisoningAttackBackdoor(trigger_fn(splits))
    y_onehot = np.eye(splits.num_classes)[np.full(len(idx), adv_class)]
    x_bd, y_bd = attack.poison(splits.x_train[idx].copy(), y=y_onehot)
    x_p = splits.x_train.copy()
    y_p = splits.y_train.copy()
    x_p[idx] = x_bd
    y_p[idx] = np.argmax(y_bd, axis=1)
    return x_p.astype(np.float32), y_p, idx
