"""A second image set, generated offline: 32x32 RGB shapes and textures in 10 classes.

Each image is drawn with Pillow from a seed: a class's shape or texture
(circle, square, triangle, cross, ring, horizontal/vertical/diagonal stripes,
checkerboard, dots) at a random position, size and pair of colours, over a
noisy background. The encoder is a small CNN trained on images drawn from
other seeds (never the audited ones), exported to ONNX, so the audit runs
exactly as a user's would: image folder -> ``gradscore extract --probe``.

Poisons, per variant (the seed picks the rows and the target class):

- a **dirty-label backdoor**: images of other classes with a small trigger
  (a 4x4 black-and-white checker in the bottom-right corner) filed under the
  target class;
- **label flips**: images filed under a random other class, unchanged.
"""

import json
import os

import numpy as np

CLASSES = ("circle", "square", "triangle", "cross", "ring", "hstripes", "vstripes",
           "dstripes", "checker", "dots")
SIZE = 32


def draw(c, rng):
    """One RGB uint8 image of class ``c``."""
    from PIL import Image, ImageDraw

    bg = rng.integers(0, 256, 3)
    fg = rng.integers(0, 256, 3)
    while np.abs(fg - bg).sum() < 150:           # keep the shape visible
        fg = rng.integers(0, 256, 3)
    img = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in bg))
    d = ImageDraw.Draw(img)
    col = tuple(int(v) for v in fg)
    r = int(rng.integers(5, 13))
    cx, cy = (int(v) for v in rng.integers(r, SIZE - r, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    w = int(rng.integers(2, 5))                  # stripe / line width
    name = CLASSES[c]
    if name == "circle":
        d.ellipse(box, fill=col)
    elif name == "square":
        d.rectangle(box, fill=col)
    elif name == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    elif name == "cross":
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=col)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=col)
    elif name == "ring":
        d.ellipse(box, outline=col, width=w)
    elif name == "hstripes":
        for y in range(int(rng.integers(0, 2 * w)), SIZE, 2 * w):
            d.rectangle((0, y, SIZE, y + w - 1), fill=col)
    elif name == "vstripes":
        for x in range(int(rng.integers(0, 2 * w)), SIZE, 2 * w):
            d.rectangle((x, 0, x + w - 1, SIZE), fill=col)
    elif name == "dstripes":
        for k in range(-SIZE, 2 * SIZE, 2 * w + 2):
            d.line([(k, 0), (k + SIZE, SIZE)], fill=col, width=w)
    elif name == "checker":
        s = w + 2
        for y in range(0, SIZE, s):
            for x in range(0, SIZE, s):
                if (x // s + y // s) % 2 == 0:
                    d.rectangle((x, y, x + s - 1, y + s - 1), fill=col)
    else:                                        # dots
        for _ in range(int(rng.integers(5, 10))):
            x, y = (int(v) for v in rng.integers(2, SIZE - 2, 2))
            d.ellipse((x - w, y - w, x + w, y + w), fill=col)
    a = np.asarray(img, dtype=np.int16)
    a = a + rng.normal(0, 18, a.shape).round().astype(np.int16)
    return np.clip(a, 0, 255).astype(np.uint8)


def add_trigger(a):
    """The backdoor trigger: a 4x4 black/white checker in the bottom-right corner."""
    a = a.copy()
    t = (np.indices((4, 4)).sum(0) % 2 * 255).astype(np.uint8)
    a[-5:-1, -5:-1, :] = t[:, :, None]
    return a


def make(n_per_class, seed):
    """``(images, labels)``: ``n_per_class`` images of each class, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    images = np.stack([draw(int(c), rng) for c in labels])
    return images, labels


def train_encoder(path, *, n_per_class=1000, seed=1000, epochs=8, threads=1):
    """Train a small CNN on its own generated images and export it to ONNX.

    Features: 128-d (global average pool of the last conv block). Returns the
    clean accuracy on 2,000 further generated images.
    """
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x, y = make(n_per_class, seed)
    xt = torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / 255
    yt = torch.tensor(y)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, len(CLASSES)))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for b in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()
    xv, yv = make(200, seed + 1)
    with torch.no_grad():
        xv = torch.tensor(xv, dtype=torch.float32).permute(0, 3, 1, 2) / 255
        acc = float((net(xv).argmax(1).numpy() == yv).mean())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.onnx.export(net, (xt[:2],), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return acc


def write_variant(folder, *, n_per_class=600, seed=0, n_backdoor=60, n_flips=30):
    """An image folder with a backdoor and label flips; returns what was planted.

    The clean images are the same for every variant (seed 0 of the audit
    set); ``seed`` picks the target class and the poisoned rows.
    """
    from PIL import Image

    x, y = make(n_per_class, 7)
    rng = np.random.default_rng(seed)
    target = int(seed % len(CLASSES))
    rows = rng.permutation(np.flatnonzero(y != target))
    backdoor, flips = np.sort(rows[:n_backdoor]), np.sort(rows[n_backdoor:n_backdoor + n_flips])
    labels = y.copy()
    labels[backdoor] = target
    for r in flips:
        labels[r] = int(rng.choice([c for c in range(len(CLASSES)) if c != y[r]]))
    ids = []
    for c in CLASSES:
        os.makedirs(os.path.join(folder, c), exist_ok=True)
    poisoned = set(backdoor.tolist())
    for i in range(len(y)):
        a = add_trigger(x[i]) if i in poisoned else x[i]
        rel = f"{CLASSES[labels[i]]}/img_{i:05d}.png"
        Image.fromarray(a).save(os.path.join(folder, rel))
        ids.append(rel)
    planted = {"target": target, "backdoor": [ids[i] for i in backdoor],
               "flips": [ids[i] for i in flips], "n": len(ids)}
    with open(os.path.join(folder, "..", f"planted_{seed}.json"), "w") as fh:
        json.dump(planted, fh)
    return planted
