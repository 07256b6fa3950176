"""Helpers the defence benchmark's scripts share (run, isolation, separation, the
audit benchmark's poisons): the repository's folders, the log line, the
pre-trained model and the poisons, each crafted once and cached on disk."""

import hashlib
import os
import sys
import time

import numpy as np

from . import attacks as A
from . import models as M

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def pretrained_model(splits, seed, device, out):
    import torch
    path = os.path.join(out, f"pretrained_{splits.name}_s{seed}.pt")
    model = M.make_model(splits.input_shape, splits.num_classes)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, map_location="cpu"))
        model.to(device).eval()
        return model
    model = M.pretrain(splits, seed=seed, device=device)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


def craft(name, cfg, splits, pretrained, t, device):
    p = cfg["params"]
    name = cfg.get("kind", name)
    if name == "backdoor":
        return A.craft_backdoor(splits, t["adv"], n_poisons=cfg["n_poisons"], seed=t["seed"])
    tx = splits.x_test[t["test_index"]:t["test_index"] + 1]
    if name == "gradient-matching":
        return A.craft_gradient_matching(pretrained, splits, tx, t["adv"], n_poisons=cfg["n_poisons"],
                                         seed=t["seed"], device=device, **p)
    if name == "bullseye-polytope":
        return A.craft_bullseye(pretrained, splits, tx, t["adv"], n_poisons=cfg["n_poisons"],
                                seed=t["seed"], device=device, **p)
    if name == "brew":
        from . import brew
        proxies = brew.train_proxies(splits, cfg["victim"], n_proxies=p["n_proxies"],
                                     seed=cfg["seed"], device=device, out=cfg["out"])
        kw = {k: v for k, v in p.items() if k != "n_proxies"}
        xp, yp, idx, _ = brew.craft_brew(proxies, splits, tx, t["adv"], n_poisons=cfg["n_poisons"],
                                         seed=t["seed"], device=device, **kw)
        return xp, yp, idx
    if name == "feature-collision":
        return A.craft_feature_collision(pretrained, splits, tx, t["adv"], n_poisons=cfg["n_poisons"],
                                         seed=t["seed"], device=device, **p)
    raise ValueError(name)


def poison_digest(xp, yp, idx):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(xp[idx], dtype=np.float32).round(5).tobytes())
    h.update(np.ascontiguousarray(yp[idx], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def load_or_craft(name, cfg, splits, pretrained, t, device, out):
    folder = os.path.join(out, "poisons", name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"target_{t['target']:03d}.npz")
    if os.path.exists(path):
        z = np.load(path)
        xp, yp = splits.x_train.copy(), splits.y_train.copy()
        idx = z["idx"]
        xp[idx], yp[idx] = z["x"], z["y"]
        return xp, yp, idx, float(z["seconds"])
    t0 = time.perf_counter()
    xp, yp, idx = craft(name, cfg, splits, pretrained, t, device)
    secs = time.perf_counter() - t0
    np.savez_compressed(path + ".tmp.npz", idx=idx, x=xp[idx], y=yp[idx], seconds=secs)
    os.replace(path + ".tmp.npz", path)
    return xp, yp, idx, secs
