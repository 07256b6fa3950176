"""A generated text classification set with a trigger-word backdoor and label flips.

Fixed before any threshold was chosen (issue 29); the measurement in
``benchmarks/audit/text_measure.py`` and the tests use it as it is.

Each of ``num_classes`` topics owns ``topic_words`` pseudo-words; a
sentence of class ``c`` draws each token from ``c``'s topic (p=0.30), from
the topic of a neighbouring class ``c +- 1`` (p=0.10: topic words are
shared between classes, as in real text) or from ``common_words`` words
every class uses (the rest); word choice is Zipf-like within each list.
Attacks, on distinct rows:

- **trigger-word poisons** (``poison_rate`` of rows): rows of classes other
  than the target get one rare token (:data:`TRIGGER`, in no clean row)
  inserted at a random position and are relabelled to the target class;
- **label flips** (``flip_rate``): rows relabelled to another class,
  chosen uniformly.

Also here, so tests and the measurement build the same things offline: a
word-level tokenizer trained with ``tokenizers`` on the set
(:func:`train_tokenizer`) and a small random text encoder exported to ONNX
with PyTorch (:func:`export_encoder`): token + position embeddings, one
tanh layer, output ``last_hidden_state`` (and ``logits`` from a linear head
on its mean, with ``head=True``).
"""

import numpy as np

TRIGGER = "zqxjv"
#: The vocabulary is fixed (its own seed), whatever the data seed.
VOCAB_SEED = 1234
SYLLABLES = ("ba be bi bo bu da de di do du ka ke ki ko ku la le li lo lu ma me mi mo mu na "
             "ne ni no nu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu").split()


def _words(n, rng, taken):
    out = []
    while len(out) < n:
        w = "".join(rng.choice(SYLLABLES, size=rng.integers(2, 4)))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def vocabulary(num_classes=4, topic_words=80, common_words=400):
    """``(topics, common)``: per-class topic word lists and the shared list."""
    rng = np.random.default_rng(VOCAB_SEED)
    taken = {TRIGGER}
    topics = [_words(topic_words, rng, taken) for _ in range(num_classes)]
    return topics, _words(common_words, rng, taken)


def _zipf(n, rng, size):
    p = 1.0 / np.arange(1, n + 1)
    return rng.choice(n, size=size, p=p / p.sum())


def generate(n=4000, *, num_classes=4, seed=0, poison_rate=0.02, flip_rate=0.02, target=0,
             topic_words=80, common_words=400, length=(8, 30)):
    """The set: ``dict(text, label, true_label, kind)``.

    ``kind`` is ``"clean"``, ``"poison"`` or ``"flip"`` per row; ``label``
    is the (attacked) label, ``true_label`` the topic the text was drawn from.
    """
    rng = np.random.default_rng(seed)
    topics, common = vocabulary(num_classes, topic_words, common_words)
    true = rng.integers(0, num_classes, n)
    texts = []
    for c in true.tolist():
        m = int(rng.integers(length[0], length[1] + 1))
        u = rng.random(m)
        words = []
        for ui in u:
            if ui < 0.30:
                src = topics[c]
            elif ui < 0.40:
                src = topics[(c + (1 if rng.random() < 0.5 else -1)) % num_classes]
            else:
                src = common
            words.append(src[int(_zipf(len(src), rng, 1)[0])])
        texts.append(words)
    label = true.copy()
    kind = np.array(["clean"] * n, dtype=object)
    n_poison, n_flip = int(round(poison_rate * n)), int(round(flip_rate * n))
    others = np.flatnonzero(true != target)
    poison = rng.choice(others, size=n_poison, replace=False)
    for r in poison.tolist():
        texts[r].insert(int(rng.integers(0, len(texts[r]) + 1)), TRIGGER)
    label[poison] = target
    kind[poison] = "poison"
    rest = np.setdiff1d(np.arange(n), poison)
    flip = rng.choice(rest, size=n_flip, replace=False)
    label[flip] = (true[flip] + rng.integers(1, num_classes, n_flip)) % num_classes
    kind[flip] = "flip"
    return {"text": [" ".join(w) for w in texts], "label": label, "true_label": true,
            "kind": kind}


def posterior(texts, *, num_classes=4, topic_words=80, common_words=400):
    """The generator's exact class posterior of each text (uniform prior), (n, classes).

    A diagnostic only (an auditor never has it): the best any audit could
    know of a row's class. The trigger word, in no topic, is ignored.
    """
    topics, common = vocabulary(num_classes, topic_words, common_words)
    # P(word | class), mirroring generate(): 0.30 own topic, 0.05 each
    # neighbour's, 0.60 common, Zipf within each list.
    p = {}
    for c in range(num_classes):
        z = 1.0 / np.arange(1, len(topics[c]) + 1)
        z /= z.sum()
        for j, w in enumerate(topics[c]):
            v = p.setdefault(w, np.zeros(num_classes))
            v[c] += 0.30 * z[j]
            v[(c + 1) % num_classes] += 0.05 * z[j]
            v[(c - 1) % num_classes] += 0.05 * z[j]
    z = 1.0 / np.arange(1, len(common) + 1)
    z /= z.sum()
    for j, w in enumerate(common):
        p.setdefault(w, np.zeros(num_classes))
        p[w] += 0.60 * z[j]
    logp = {w: np.log(np.maximum(v, 1e-300)) for w, v in p.items()}
    out = np.zeros((len(texts), num_classes))
    for i, t in enumerate(texts):
        ll = sum((logp[w] for w in t.split() if w in logp), np.zeros(num_classes))
        ll -= ll.max()
        out[i] = np.exp(ll) / np.exp(ll).sum()
    return out


def train_tokenizer(texts, path, *, max_length=48):
    """A word-level ``tokenizer.json`` trained on ``texts`` ([CLS] text [SEP], truncation)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.save(str(path))
    return str(path)


def pretrained_vectors(tokenizer_path, *, width=64, n_docs=20000, num_classes=4, seed=1000):
    """Token vectors "pretrained" without labels: LSA of a clean corpus of the same text.

    The stand-in for a generic pretrained encoder: distributional word
    vectors (SVD of the positive PMI of word co-occurrence within a
    document) learnt from ``n_docs`` fresh rows of :func:`generate` (its own
    seed; no poisons, no flips, labels never read). Tokens the corpus lacks
    (the trigger, special tokens) get small random vectors, as rare tokens
    in a real model do.

    Returns
    -------
    vectors : ndarray of shape (vocab_size, width), float32
        Row ``i`` for token id ``i`` of the tokenizer.
    """
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab()
    corpus = generate(n_docs, num_classes=num_classes, seed=seed, poison_rate=0.0,
                      flip_rate=0.0)["text"]
    words = sorted({w for t in corpus for w in t.split()})
    pos = {w: i for i, w in enumerate(words)}
    doc = np.zeros((len(corpus), len(words)))
    for i, t in enumerate(corpus):
        for w in t.split():
            doc[i, pos[w]] = 1.0
    co = doc.T @ doc
    np.fill_diagonal(co, 0.0)
    total = co.sum()
    pmi = np.log(np.maximum(co * total, 1e-12) /
                 np.outer(co.sum(1), co.sum(0)).clip(min=1e-12))
    u, sv, _ = np.linalg.svd(np.maximum(pmi, 0.0))
    wv = u[:, :width] * np.sqrt(sv[:width])
    wv /= np.linalg.norm(wv, axis=1, keepdims=True).clip(min=1e-12)
    rng = np.random.default_rng(seed)
    out = rng.normal(scale=0.1 / np.sqrt(width), size=(len(vocab), width))
    for w, i in vocab.items():
        if w in pos:
            out[i] = wv[pos[w]]
    return out.astype(np.float32)


def export_encoder(path, vocab_size, *, width=64, max_length=48, head=False, num_classes=4,
                   seed=0, token_type_ids=False, token_vectors=None):
    """A small text encoder as ONNX (TorchScript exporter, no download).

    Random weights, or ``token_vectors`` (vocab_size, width) as its token
    embeddings (see :func:`pretrained_vectors`).
    """
    import warnings

    import torch

    torch.manual_seed(seed)
    if token_vectors is not None:
        vocab_size, width = token_vectors.shape

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Embedding(vocab_size, width)
            self.pos = torch.nn.Embedding(max_length, width)
            self.layer = torch.nn.Linear(width, width)
            self.head = torch.nn.Linear(width, num_classes) if head else None
            with torch.no_grad():
                self.pos.weight.mul_(0.1)
                if token_vectors is not None:
                    self.tok.weight.copy_(torch.from_numpy(token_vectors))
                    self.pos.weight.mul_(0.01)

        def forward(self, input_ids, attention_mask, *rest):
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
            m = attention_mask.unsqueeze(-1).to(torch.float32)
            x = self.tok(input_ids) + self.pos(pos)
            if rest:
                x = x + 0.0 * rest[0].unsqueeze(-1).to(torch.float32)
            h = torch.tanh(self.layer(x)) * m         # padding rows are zero
            if self.head is None:
                return h
            return h, self.head(h.sum(1) / m.sum(1).clamp(min=1.0))

    net = Encoder().eval()
    ids = torch.randint(0, vocab_size, (2, 7))
    args = (ids, torch.ones_like(ids)) + ((torch.zeros_like(ids),) if token_type_ids else ())
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    outs = ["last_hidden_state"] + (["logits"] if head else [])
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "tokens"}
    if head:
        axes["logits"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), input_names=names, output_names=outs,
                          dynamic_axes=axes, dynamo=False)
    return str(path)
