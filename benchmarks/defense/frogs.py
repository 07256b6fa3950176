"""Feature Collision (Poison Frogs), ART's algorithm run on every poison at once.

ART's ``FeatureCollisionAttack.poison`` crafts one poison after the other,
each with ``max_iter`` forward-backward splitting steps and several
``get_activations`` calls per step: on the 2-core machine 60 poisons took
344 s per target. :func:`craft_frogs` runs the same steps on the whole batch
of bases at once (one forward and one backward pass per step), with early
stopping per poison:

- forward step: ``x <- x - lr * grad_x ||f(x) - f(t)||`` (``f``: the
  penultimate features; the norm, not its square, as in ART);
- backward (proximal) step towards the base ``b``:
  ``x <- clip((x + lr * beta * b) / (1 + lr * beta))`` with
  ``beta = similarity_coeff * (dim f / dim x)^2``;
- every ``num_old_obj / 2`` steps, a step whose objective
  ``||f(x) - f(t)|| + beta ||x - b||`` is not below the mean of the last
  ``num_old_obj`` halves the poison's learning rate and keeps only the
  forward step (as ART does: its forward step updates the poison in place);
- a poison stops when its relative change falls below ``stopping_tol``;
- at the end, the target watermarked in at opacity ``watermark``, clipped.

One departure from ART, on purpose: each poison has its own learning rate.
ART keeps a single ``self.learning_rate`` and carries its decays over from
one poison to the next, so a poison's steps depend on the poisons crafted
before it. For the first poison the two are the same computation
(``tests/benchmarks/test_defense_frogs.py`` checks it against ART).
"""

import numpy as np


def craft_frogs(model, x_bases, target_x, *, max_iter, similarity_coeff, learning_rate,
                watermark, clip_values, decay_coeff=0.5, stopping_tol=1e-10, num_old_obj=40,
                device="cpu"):
    """Poisons for the bases ``x_bases`` (N, ...) against one target (1, ...)."""
    import torch
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    base = torch.as_tensor(x_bases, dtype=torch.float32, device=device)
    tgt = torch.as_tensor(target_x, dtype=torch.float32, device=device)
    lo, hi = clip_values
    n = base.shape[0]
    shape = (n,) + (1,) * (base.dim() - 1)
    with torch.no_grad():
        ft = model.features(tgt)
        beta = similarity_coeff * (ft.shape[-1] / base[0].numel()) ** 2

    def objective(x):
        with torch.no_grad():
            return ((model.features(x) - ft).flatten(1).norm(dim=1)
                    + beta * (x - base).flatten(1).norm(dim=1))

    lr = torch.full((n,), float(learning_rate), dtype=torch.float32, device=device)
    x = base.clone()
    last = [objective(x)]
    active = torch.ones(n, dtype=torch.bool, device=device)
    for i in range(max_iter):
        if not bool(active.any()):
            break
        xa = x.clone().requires_grad_(True)
        loss = (model.features(xa) - ft).flatten(1).norm(dim=1).sum()
        (grad,) = torch.autograd.grad(loss, [xa])
        with torch.no_grad():
            fwd = x - lr.view(shape) * grad
            lb = (lr * beta).view(shape)
            new = torch.clamp((fwd + lb * base) / (1 + lb), lo, hi)
            # ART's forward step updates the poison in place: a stopped or
            # rejected step leaves the forward step behind.
            stop = active & ((new - fwd).flatten(1).norm(dim=1) / new.flatten(1).norm(dim=1)
                             < stopping_tol)
            obj = objective(new)
            avg = torch.stack(last).sum(0) / float(min(num_old_obj, i + 1))
            reject = (obj >= avg) & (i % num_old_obj / 2 == 0)
            run = active & ~stop
            lr = torch.where(run & reject, lr * decay_coeff, lr)
            step = torch.where((run & ~reject).view(shape), new, fwd)
            x = torch.where((active).view(shape), step, x)
            active = run
            last.append(obj)
            if len(last) > num_old_obj:
                del last[0]
    w = watermark * tgt if watermark else 0.0
    with torch.no_grad():
        out = torch.clamp(x + w, lo, hi)
    return out.cpu().numpy().astype(np.float32)
