"""Witches' Brew (Geiping et al., ICLR 2021) against a victim trained from scratch.

ART's ``GradientMatchingAttack`` matches gradients on one proxy, without
the differentiable data augmentation and the from-scratch proxies of the
paper's setting; its ``DataLoader(num_workers=1)`` per epoch also makes it
slow on this machine. This module follows the paper's recipe instead:

- **Proxies trained like the victim**: ``n_proxies`` networks trained from
  random initialisation on the clean training set (the attacker knows the
  data and the training recipe, not the victim's initialisation), shared by
  every target of a setting.
- **Gradient matching**: for a target ``x_t`` and adversarial class ``a``,
  perturbations ``delta`` of the poison bases (clean labels kept) minimise
  ``1 - cos(grad_theta L(x_p + delta, y_p), grad_theta L(x_t, a))`` over all
  parameters, averaged over the proxies.
- **Differentiable augmentation**: every step shifts the poison batch by a
  random one-pixel offset (the augmentation the training data has), so the
  poisons keep working however a victim sees them.
- **Restarts**: ``restarts`` random starts, the one with the lowest final
  alignment loss kept.
- Signed Adam steps on ``delta``, projected on the L-inf ball of radius
  ``epsilon`` and the valid pixel range after every step; step size decayed
  by 10 at 3/8, 5/8 and 7/8 of the steps (the paper's schedule).

Bases: ``n_poisons`` examples of the adversarial class drawn at random (seeded).
"""

import os

import numpy as np

from . import models as M


def proxy_path(out, splits, seed, k):
    return os.path.join(out, f"proxy_{splits.name}_s{seed}_{k}.pt")


def train_proxies(splits, cfg, *, n_proxies, seed, device, out):
    """``n_proxies`` networks trained from scratch on the clean training set, cached in ``out``."""
    import torch
    nets = []
    for k in range(n_proxies):
        path = proxy_path(out, splits, seed, k)
        net = M.make_model(splits.input_shape, splits.num_classes)
        if os.path.exists(path):
            net.load_state_dict(torch.load(path, map_location="cpu"))
        else:
            # Seeds apart from every victim's (victims use seed * 1000 + target).
            s = 10_000_019 + 7919 * seed + k
            torch.manual_seed(s)
            net = M.make_model(splits.input_shape, splits.num_classes)
            M.train_epochs(net, splits.x_train, splits.y_train, epochs=cfg.epochs, lr=cfg.lr,
                           batch_size=cfg.batch_size, device=device, seed=s)
            tmp = f"{path}.{os.getpid()}.tmp"
            torch.save(net.state_dict(), tmp)
            os.replace(tmp, path)
        nets.append(net.to(device).eval())
    return nets


def _shift(x, dy, dx):
    """Shift a (N, C, H, W) or (N, C, L) batch by (dy, dx) with zero fill (differentiable)."""
    import torch.nn.functional as F
    if x.dim() == 4:
        h, w = x.shape[-2:]
        p = F.pad(x, (1, 1, 1, 1))
        return p[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
    L = x.shape[-1]
    p = F.pad(x, (1, 1))
    return p[..., 1 - dx:1 - dx + L]


def _flat_grad(net, x, y, create_graph):
    import torch
    params = [p for p in net.parameters()]
    loss = torch.nn.functional.cross_entropy(net(x), y)
    g = torch.autograd.grad(loss, params, create_graph=create_graph)
    return torch.cat([t.reshape(-1) for t in g])


def craft_brew(proxies, splits, target_x, adv_class, *, n_poisons, epsilon, steps, restarts,
               lr, augment, seed, device, select="random"):
    """Poisons for one target; returns ``(x_poisoned_train, y_train, poison_idx, loss)``.

    ``select``: ``"random"`` bases of the adversarial class (seeded), or
    ``"gradnorm"``: those whose parameter gradient on the proxies is largest
    (Witches' Brew's selection: they move the model most).
    """
    import torch
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(splits.y_train == adv_class)
    for net in proxies:
        for p in net.parameters():
            p.requires_grad_(True)
    if select == "gradnorm":
        norms = np.zeros(rows.size)
        for net in proxies:
            for i, r in enumerate(rows):
                x = torch.as_tensor(splits.x_train[r:r + 1], dtype=torch.float32, device=device)
                y = torch.as_tensor(splits.y_train[r:r + 1], dtype=torch.long, device=device)
                norms[i] += float(_flat_grad(net, x, y, create_graph=False).norm())
        idx = np.sort(rows[np.argsort(-norms, kind="stable")[:n_poisons]])
    elif select == "random":
        idx = np.sort(rng.choice(rows, size=min(n_poisons, rows.size), replace=False))
    else:
        raise ValueError(f"select must be 'random' or 'gradnorm'; got {select!r}")
    xb = torch.as_tensor(splits.x_train[idx], dtype=torch.float32, device=device)
    yb = torch.as_tensor(splits.y_train[idx], dtype=torch.long, device=device)
    xt = torch.as_tensor(target_x, dtype=torch.float32, device=device)
    at = torch.full((len(xt),), int(adv_class), dtype=torch.long, device=device)
    tgrads = []
    for net in proxies:
        g = _flat_grad(net, xt, at, create_graph=False).detach()
        tgrads.append(g / g.norm())
    lo, hi = splits.clip_values
    gen = torch.Generator().manual_seed(int(seed))
    milestones = [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    two_d = xb.dim() == 4

    def match_loss(x, shifts=None):
        total = 0.0
        for net, tg in zip(proxies, tgrads):
            xx = x
            if shifts is not None:
                xx = _shift(x, *shifts)
            g = _flat_grad(net, xx, yb, create_graph=True)
            total = total + 1 - (g @ tg) / g.norm()
        return total / len(proxies)

    best, best_loss = None, np.inf
    for _ in range(restarts):
        delta = ((torch.rand(xb.shape, generator=gen) * 2 - 1) * epsilon).to(device)
        delta.requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=lr * epsilon)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
        for _ in range(steps):
            shifts = None
            if augment:
                d = torch.randint(-1, 2, (2,), generator=gen).tolist()
                shifts = (d[0], d[1]) if two_d else (0, d[1])
            loss = match_loss(torch.clamp(xb + delta, lo, hi), shifts)
            (grad,) = torch.autograd.grad(loss, [delta])
            delta.grad = grad.sign()
            opt.step()
            sched.step()
            with torch.no_grad():
                delta.clamp_(-epsilon, epsilon)
                delta.copy_(torch.clamp(xb + delta, lo, hi) - xb)
        final = float(match_loss(torch.clamp(xb + delta, lo, hi)).detach())
        if final < best_loss:
            best_loss, best = final, delta.detach().clone()
    x_p = splits.x_train.copy()
    x_p[idx] = torch.clamp(xb + best, lo, hi).cpu().numpy()
    return x_p.astype(np.float32), splits.y_train.copy(), idx, best_loss
