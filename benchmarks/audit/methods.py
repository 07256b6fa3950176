"""Every candidate drop rule of the audit regime, on the same features and probabilities.

The audit regime: one scoring, no schedule, logits from a cross-fitted probe
(each row's from a head that never saw it). Each method takes a
:class:`Case` (labels, out-of-fold logits, encoder features) and returns a
bool drop mask. gradscore's own methods go through :func:`gradscore.score`;
the peers are cleanlab (``find_label_issues``, Datalab's label and outlier
issues) and ART's ActivationDefence and SpectralSignatureDefense, given the
same features (as the activations of the layer they read) and the same
labels.
"""

from dataclasses import dataclass
import warnings

import numpy as np


@dataclass
class Case:
    labels: np.ndarray
    logits: np.ndarray          # out of fold
    features: np.ndarray
    seed: int = 0

    def __post_init__(self):
        self._masks = {}

    def mask(self, name):
        """The drop mask of method ``name`` on this case, computed once."""
        if name not in self._masks:
            self._masks[name] = np.asarray(METHODS[name](self), dtype=bool)
        return self._masks[name]

    @property
    def probs(self):
        z = self.logits.astype(np.float64)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    @property
    def num_classes(self):
        return self.logits.shape[1]


def gradscore_method(**params):
    def run(case):
        import gradscore
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = gradscore.score(case.labels, case.logits, case.features,
                                  random_state=case.seed, **params)
        return ~res.keep
    return run


def cleanlab_issues(filter_by):
    def run(case):
        from cleanlab.filter import find_label_issues
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(find_label_issues(case.labels, case.probs, filter_by=filter_by))
    return run


def datalab(kinds):
    def run(case):
        from cleanlab import Datalab
        import pandas as pd
        lab = Datalab(data=pd.DataFrame({"label": case.labels}), label_name="label",
                      verbosity=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lab.find_issues(features=np.asarray(case.features, np.float32),
                            pred_probs=case.probs,
                            issue_types={k: {} for k in kinds})
        issues = lab.get_issues()
        drop = np.zeros(case.labels.size, bool)
        for k in kinds:
            drop |= issues[f"is_{k}_issue"].to_numpy()
        return drop
    return run


def art(kind):
    """ART's detectors on the features: a module whose 'features' layer is the input."""
    def run(case):
        import torch
        from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
        from art.estimators.classification import PyTorchClassifier

        d, c = case.features.shape[1], case.num_classes

        class OnFeatures(torch.nn.Module):
            # head registered first: ART reads the last-registered module's
            # output as "the last layer" (see benchmarks/defense/models.py).
            def __init__(self):
                super().__init__()
                self.head = torch.nn.Linear(d, c)
                self.features = torch.nn.Identity()

            def forward(self, x):
                return self.head(self.features(x))

        clf = PyTorchClassifier(model=OnFeatures(), loss=torch.nn.CrossEntropyLoss(),
                                input_shape=(d,), nb_classes=c, device_type="cpu")
        x = np.asarray(case.features, np.float32)
        y1 = np.eye(c)[case.labels]
        np.random.seed(case.seed)            # MiniBatchKMeans uses the global state
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "activation":
                det = ActivationDefence(clf, x, y1)
                _, is_clean = det.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA",
                                                cluster_analysis="smaller")
            else:
                det = SpectralSignatureDefense(clf, x, y1, batch_size=256,
                                               expected_pp_poison=0.05, eps_multiplier=1.5)
                _, is_clean = det.detect_poison()
        return ~np.asarray(is_clean).astype(bool)
    return run


def argmax_disagrees(case):
    """The out-of-fold head's argmax is not the label (cleanlab's 'predicted_neq_given')."""
    return case.logits.argmax(1) != case.labels


def both(a, b):
    return lambda case: case.mask(a) & case.mask(b)


def either(a, b):
    return lambda case: case.mask(a) | case.mask(b)


METHODS = {
    "epic-0.1": gradscore_method(method="epic", fraction=0.1),
    "epic-0.2": gradscore_method(method="epic", fraction=0.2),
    "epic-0.3": gradscore_method(method="epic", fraction=0.3),
    "epic-0.2-last-layer": gradscore_method(method="epic", fraction=0.2, gradient="last-layer"),
    "knn-density": gradscore_method(method="knn-density"),
    "spectral": gradscore_method(method="spectral"),
    "deep-knn": gradscore_method(method="deep-knn"),
    "groups": gradscore_method(method="groups"),
    "label-support": gradscore_method(method="label-support"),
    "argmax": argmax_disagrees,
    "cleanlab": cleanlab_issues("prune_by_noise_rate"),
    "cleanlab-cl": cleanlab_issues("confident_learning"),
    "cleanlab-both": cleanlab_issues("both"),
    "datalab-label": datalab(["label"]),
    "datalab-outlier": datalab(["outlier"]),
    "datalab-label+outlier": datalab(["label", "outlier"]),
    "art-activation": art("activation"),
    "art-spectral": art("spectral"),
    "deep-knn&cl": both("deep-knn", "cleanlab-cl"),
    "deep-knn|cl": either("deep-knn", "cleanlab-cl"),
    "deep-knn&argmax": both("deep-knn", "argmax"),
    "groups&cl": both("groups", "cleanlab-cl"),
    "groups|cl": either("groups", "cleanlab-cl"),
    "label-support|cl": either("label-support", "cleanlab-cl"),
}
