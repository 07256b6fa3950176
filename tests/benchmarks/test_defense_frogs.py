"""The batched Feature Collision (benchmarks/defense/frogs.py) against ART's own.

ART crafts poisons one at a time and carries its learning-rate decays over
from one poison to the next; frogs.py gives each poison its own rate. So
each poison of the batch must equal what a fresh ART attack makes of that
base alone.
"""


import numpy as np
import pytest


torch = pytest.importorskip("torch")
pytest.importorskip("art")
pytest.importorskip("sklearn")

from benchmarks.defense import frogs, models as M  # noqa: E402
from benchmarks.defense.data import load_digits_splits  # noqa: E402


def test_batched_poisons_equal_art_one_base_at_a_time():
    from art.attacks.poisoning import FeatureCollisionAttack
    s = load_digits_splits(0)
    torch.manual_seed(0)
    net = M.make_model(s.input_shape, 10).eval()
    bases = s.x_train[s.y_train == 3][:3]
    target = s.x_test[s.y_test == 5][:1]
    # learning_rate 60 makes the first objective check (step 0) reject and
    # halve the rate for some bases, so both branches are compared.
    kw = dict(max_iter=42, similarity_coeff=2.0, learning_rate=60.0, watermark=0.3)
    ours = frogs.craft_frogs(net, bases, target, clip_values=(0.0, 1.0), **kw)
    for i, b in enumerate(bases):
        clf = M.art_classifier(M.clone(net), s, "cpu")
        art = FeatureCollisionAttack(clf, target, "features", verbose=False, **kw)
        theirs, _ = art.poison(b[None].copy())
        np.testing.assert_allclose(ours[i], theirs[0], atol=2e-5)
    # The poisons moved: the comparison is not between unchanged bases.
    assert np.abs(ours - np.clip(bases + 0.3 * target, 0, 1)).max() > 0.01
