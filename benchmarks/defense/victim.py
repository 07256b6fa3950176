"""Train one victim per defence on one poisoned set, and measure it.

The gradscore defences follow the paper's schedule through gradscore's public
file API, as a user's training loop would: train ``drop_after`` epochs on
everything; then at every ``freq``-th epoch (until ``stop_after``) export the
epoch with :func:`gradscore.write_epoch`, run :func:`gradscore.score_files`
with ``previous=`` the last keep-list (cumulative drops, as in the authors'
code: every example is scored again and kept only if kept now and before),
read the keep-list back
with :func:`gradscore.read_keeplist` and train the next epochs on it only.

All gradscore variants share the warm-up: they branch from one snapshot of
model and optimizer taken after ``drop_after`` epochs, so they differ only by
what they drop. The shuffle of each epoch is seeded by (seed, epoch), so the
branch sees the batches the undefended run would have seen.

ART's detectors (ActivationDefence, SpectralSignatureDefense) are used as
designed: fit on the poisoned set (the finished undefended victim), detect
once, then train a fresh victim from the same start on what they call clean.
"""

import copy
from dataclasses import dataclass, field
import os
import time

import numpy as np

import gradscore
from . import models as M


@dataclass
class VictimConfig:
    # "finetune": all layers from the pre-trained net; "transfer": frozen
    # features, new head; "scratch": the whole net from random initialisation.
    mode: str = "finetune"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    drop_after: int = 4         # warm-up epochs before the first drop
    freq: int = 2               # drop every freq epochs ...
    stop_after: int = 16        # ... while epoch < stop_after
    # Transfer victims: train the head on features computed once (same
    # updates, much faster); used by the larger realistic settings.
    cache_features: bool = False

    def drop_epochs(self):
        return [e for e in range(self.drop_after, min(self.stop_after, self.epochs))
                if (e - self.drop_after) % self.freq == 0]


@dataclass
class Defence:
    name: str
    kind: str                   # "none", "gradscore", "random", "art-ac", "art-ss"
    params: dict = field(default_factory=dict)
    paper: bool = False         # the paper's EPIC rule (method epic, logit gradients)


UNCAPPED = dict(max_drop_fraction=1.0, max_total_drop_fraction=1.0)


def default_defences(expected_poison_fraction=0.05):
    gs = "gradscore"
    return [
        Defence("none", "none"),
        # The paper's rule: no caps (gradscore's defaults cap a round and the
        # whole schedule at half a class).
        Defence("epic-0.1", gs, dict(method="epic", fraction=0.1, **UNCAPPED), paper=True),
        Defence("epic-0.2", gs, dict(method="epic", fraction=0.2, **UNCAPPED), paper=True),
        Defence("epic-0.3", gs, dict(method="epic", fraction=0.3, **UNCAPPED), paper=True),
        Defence("knn-density", gs, dict(method="knn-density", z_threshold=3.0)),
        Defence("epic-0.2-last-layer", gs, dict(method="epic", fraction=0.2, gradient="last-layer")),
        Defence("deep-knn", gs, dict(method="deep-knn")),
        Defence("groups", gs, dict(method="groups")),
        # groups plus the groups training pulled far since the victim's start
        # (issue 19); its history is the export of the victim before training.
        Defence("trajectory", gs, dict(method="trajectory")),
        Defence("spectral", gs, dict(method="spectral", z_threshold=3.0)),
        # Control: drop a random 30% at the first drop epoch (about what the
        # EPIC rules end up dropping here), to tell removal of poisons from
        # a mere change of the training set.
        Defence("random-30%", "random", dict(fraction=0.3)),
        Defence("art-activation", "art-ac", dict(nb_clusters=2, nb_dims=10, reduce="PCA",
                                                 cluster_analysis="smaller")),
        Defence("art-spectral", "art-ss", dict(expected_pp_poison=expected_poison_fraction,
                                               eps_multiplier=1.5)),
    ]


def make_victim(pretrained, num_classes, cfg, seed):
    """The victim's starting point: the pre-trained net, fine-tuned whole or as a
    new linear head, or a fresh net trained from scratch."""
    import torch
    if cfg.mode == "scratch":
        torch.manual_seed(seed)
        return M.make_model(pretrained.input_shape, num_classes)
    model = M.clone(pretrained)
    if cfg.mode == "transfer":
        for p in model.features.parameters():
            p.requires_grad_(False)
        torch.manual_seed(seed)
        model.head.reset_parameters()
    elif cfg.mode != "finetune":
        raise ValueError(f"unknown victim mode {cfg.mode!r}")
    return model


class _Run:
    """A model with its optimizer, cloneable for branching."""

    def __init__(self, model, cfg):
        self.model = model
        self.cfg = cfg
        self.opt = M.make_optimizer(model, cfg.lr)

    def clone(self):
        r = _Run.__new__(_Run)
        r.model = M.clone(self.model)
        r.cfg = self.cfg
        r.opt = M.make_optimizer(r.model, self.cfg.lr)
        r.opt.load_state_dict(copy.deepcopy(self.opt.state_dict()))
        return r

    def train(self, x, y, rows, first_epoch, epochs, seed, device):
        if epochs > 0:
            M.train_epochs(self.model, x, y, epochs=epochs, lr=self.cfg.lr,
                           batch_size=self.cfg.batch_size, device=device, seed=seed,
                           optimizer=self.opt, rows=rows, first_epoch=first_epoch,
                           frozen_features=self.cfg.mode == "transfer" and self.cfg.cache_features)


def evaluate(model, splits, target, device):
    """Clean test accuracy and attack success for one victim.

    ``target`` is a dict: ``kind`` "targeted" (``x``: one input, ``adv``:
    class) or "backdoor" (``x``: triggered test inputs of other classes).
    """
    pred = M.predict(model, splits.x_test, device)
    acc = float(np.mean(pred == splits.y_test))
    logits = M.outputs(model, target["x"], device)[1].astype(np.float64)
    success = float(np.mean(logits.argmax(1) == target["adv"]))
    # How far from success: the adversarial class's logit minus the largest other
    # (positive = success), the median over the target inputs.
    other = logits.copy()
    other[:, target["adv"]] = -np.inf
    margin = float(np.median(logits[:, target["adv"]] - other.max(1)))
    return acc, success, margin


def _scores_kwargs(params, seed):
    kw = dict(params)
    kw.setdefault("random_state", seed)
    return kw


def run_gradscore(run, x, y, cfg, defence, seed, device, workdir, num_classes, reference=None):
    """Continue ``run`` (after the warm-up) under gradscore's schedule; return kept mask and time.

    ``reference``: the export of the victim before training, the history of
    ``method="trajectory"`` (as a ``DropSchedule(reference=...)`` passes it).
    """
    n = len(x)
    ids = np.arange(n)
    keep = np.ones(n, dtype=bool)
    prev = None
    t_def = 0.0
    drops = cfg.drop_epochs()
    e = cfg.drop_after
    os.makedirs(workdir, exist_ok=True)
    while e < cfg.epochs:
        if e in drops:
            t0 = time.perf_counter()
            feats, logits = M.outputs(run.model, x, device)
            h5 = os.path.join(workdir, f"epoch_{e:03d}.h5")
            gradscore.write_epoch(h5, labels=y, logits=logits, features=feats, ids=ids,
                                  epoch=e, num_classes=num_classes)
            out = os.path.join(workdir, f"epoch_{e:03d}.keep.txt")
            history = [reference] if defence.params.get("method") == "trajectory" else None
            gradscore.score_files(h5, output=out, previous=prev, history=history,
                                  **_scores_kwargs(defence.params, seed))
            kept_ids = gradscore.read_keeplist(out)
            keep = gradscore.keep_mask(ids, kept_ids)
            prev = out
            t_def += time.perf_counter() - t0
        nxt = min([d for d in drops if d > e] + [cfg.epochs])
        run.train(x, y, np.flatnonzero(keep), e, nxt - e, seed, device)
        e = nxt
    return keep, t_def


def run_art_detector(model, splits, x, y, defence, device):
    """Detect once with an ART poison detector; returns (kept mask, seconds)."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    clf = M.art_classifier(model, splits, device)
    y1 = np.eye(splits.num_classes)[y]
    t0 = time.perf_counter()
    # MiniBatchKMeans inside ActivationDefence uses NumPy's global state.
    np.random.seed(0)
    if defence.kind == "art-ac":
        det = ActivationDefence(clf, x, y1)
        _, is_clean = det.detect_poison(**defence.params)
    else:
        det = SpectralSignatureDefense(clf, x, y1, batch_size=256, **defence.params)
        _, is_clean = det.detect_poison()
    dt = time.perf_counter() - t0
    return np.asarray(is_clean).astype(bool), dt


def run_target(pretrained, splits, xp, yp, poison_idx, target, cfg, defences, *, seed,
               device, workdir, on_result=None, trajectory=None):
    """All defences on one poisoned set; returns one result dict per defence.

    ``trajectory``: an ``.npz`` path to save the undefended victim's logits
    at every epoch (0 = before training) and its features at epoch 0, the
    drop epochs and the end, with the labels and the poison mask (for
    ``separation.py``'s training-dynamics tables).
    """
    n = len(xp)
    is_poison = np.zeros(n, dtype=bool)
    is_poison[poison_idx] = True
    results = []

    def record(defence, model, keep, t_def, t_total):
        acc, success, margin = evaluate(model, splits, target, device)
        dropped = ~keep
        r = dict(defence=defence.name, paper=defence.paper, clean_acc=acc, success=success,
                 adv_margin=margin,
                 poison_recall=float(dropped[is_poison].mean()) if is_poison.any() else float("nan"),
                 clean_dropped=float(dropped[~is_poison].mean()),
                 n_poisons=int(is_poison.sum()), n_dropped=int(dropped.sum()),
                 defence_seconds=t_def, total_seconds=t_total)
        results.append(r)
        if on_result is not None:
            on_result(r)

    by_kind = {}
    for d in defences:
        by_kind.setdefault(d.kind, []).append(d)
    all_rows = np.arange(n)

    # Undefended, with a snapshot after the warm-up for the gradscore branches.
    t0 = time.perf_counter()
    base = _Run(make_victim(pretrained, splits.num_classes, cfg, seed), cfg)
    reference, t_ref = None, 0.0
    if any(d.params.get("method") == "trajectory" for d in by_kind.get("gradscore", [])):
        # The victim before training: the reference a DropSchedule user exports.
        t1 = time.perf_counter()
        feats, logits = M.outputs(base.model, xp, device)
        os.makedirs(workdir, exist_ok=True)
        reference = os.path.join(workdir, "reference_epoch_000.h5")
        gradscore.write_epoch(reference, labels=yp, logits=logits, features=feats,
                              ids=np.arange(n), epoch=0, num_classes=splits.num_classes)
        t_ref = time.perf_counter() - t1
        t0 += t_ref      # not part of the victim's training time
    if trajectory is None:
        base.train(xp, yp, all_rows, 0, cfg.drop_after, seed, device)
        warm = base.clone()
        t_warm = time.perf_counter() - t0
        # The finished undefended victim is needed for its own row and for ART's
        # detectors; a run adding gradscore defences only needs the warm-up.
        if set(by_kind) & {"none", "art-ac", "art-ss"}:
            base.train(xp, yp, all_rows, cfg.drop_after, cfg.epochs - cfg.drop_after, seed,
                       device)
        t_none = time.perf_counter() - t0
    else:
        # The same training one epoch at a time (the shuffle of an epoch
        # depends on (seed, epoch) only), recording what every epoch's export
        # would hold; evaluation changes nothing in training (no dropout or
        # batch norm). The timings then include the recording.
        logits, feats = [], {}
        for e in range(cfg.epochs + 1):
            f, lg = M.outputs(base.model, xp, device)
            logits.append(lg)
            if e == 0 or e in cfg.drop_epochs() or e == cfg.epochs:
                feats[e] = f.astype(np.float16)
            if e == cfg.drop_after:
                warm = base.clone()
                t_warm = time.perf_counter() - t0
            if e < cfg.epochs:
                base.train(xp, yp, all_rows, e, 1, seed, device)
        t_none = time.perf_counter() - t0
        fe = sorted(feats)
        tmp = trajectory + ".tmp.npz"
        np.savez_compressed(tmp, labels=yp.astype(np.int16), is_poison=is_poison,
                            logits=np.stack(logits).astype(np.float32),
                            feature_epochs=np.array(fe), features=np.stack([feats[e] for e in fe]),
                            drop_epochs=np.array(cfg.drop_epochs()), mode=cfg.mode)
        os.replace(tmp, trajectory)
    if "none" in by_kind:
        record(by_kind["none"][0], base.model, np.ones(n, bool), 0.0, t_none)

    for d in by_kind.get("gradscore", []):
        t0 = time.perf_counter()
        run = warm.clone()
        keep, t_def = run_gradscore(run, xp, yp, cfg, d, seed, device,
                                    os.path.join(workdir, d.name), splits.num_classes,
                                    reference=reference)
        # The reference's export is part of the method's cost.
        t_def += t_ref if d.params.get("method") == "trajectory" else 0.0
        record(d, run.model, keep, t_def, t_warm + time.perf_counter() - t0)

    for d in by_kind.get("random", []):
        t0 = time.perf_counter()
        run = warm.clone()
        rng = np.random.default_rng(seed + 104729)
        keep = np.ones(n, dtype=bool)
        keep[rng.choice(n, size=int(d.params["fraction"] * n), replace=False)] = False
        run.train(xp, yp, np.flatnonzero(keep), cfg.drop_after, cfg.epochs - cfg.drop_after,
                  seed, device)
        record(d, run.model, keep, 0.0, t_warm + time.perf_counter() - t0)

    for kind in ("art-ac", "art-ss"):
        for d in by_kind.get(kind, []):
            t0 = time.perf_counter()
            keep, t_def = run_art_detector(M.clone(base.model), splits, xp, yp, d, device)
            run = _Run(make_victim(pretrained, splits.num_classes, cfg, seed), cfg)
            run.train(xp, yp, np.flatnonzero(keep), 0, cfg.epochs, seed, device)
            record(d, run.model, keep, t_def, t_none + time.perf_counter() - t0)
    return results
