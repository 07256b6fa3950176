"""TensorFlow/Keras integration: sub-model export, callback, tf.data keep filters.

Tiny Keras MLPs train on load_digits with model.fit; a recording map in the
input pipeline notes which ids each epoch really trained on.
"""

import os
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

from click.testing import CliRunner  # noqa: E402

from gradscore.errors import GradscoreError  # noqa: E402
from gradscore.integrations.keras import (GradscoreCallback, KeepFilter,  # noqa: E402
                                          export_epoch, filter_dataset)
from gradscore.io import read_epoch, read_keeplist  # noqa: E402
from gradscore.schedule import DropSchedule  # noqa: E402
from gradscore_cli.main import main as cli  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)),
                              keras.layers.Dense(32, activation="relu", name="hidden"),
                              keras.layers.Dense(10, activation="softmax", name="out")])
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss="sparse_categorical_crossentropy")
    return model


class Recorder(keras.callbacks.Callback):
    """Collects, per epoch, the ids the input pipeline fed to training."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])

    def pipeline(self, ds):
        """Batch ``(id, x, y)`` elements and drop the id, noting it."""

        def note(ids, y):
            self.epochs[-1].extend(ids.numpy().tolist())
            return y

        def to_xy(ids, x, y):
            y = tf.py_function(note, [ids, y], tf.int64)
            y.set_shape([None])
            return x, y

        return ds.batch(64).map(to_xy)


def base_dataset(x, y, ids=None):
    ids = np.arange(len(y)) if ids is None else ids
    return tf.data.Dataset.from_tensor_slices((ids, x, y))


def export_data(x, y, ids=None):
    return base_dataset(x, y, ids).batch(512)


def test_export_matches_the_model(tmp_path, digits):
    x, y = digits
    model = make_model()
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    order = np.random.default_rng(0).permutation(len(y))
    path = export_epoch(model, export_data(x[order], y[order], order), tmp_path / "e.h5",
                        epoch=1)
    ep = read_epoch(path)
    np.testing.assert_array_equal(ep.ids, np.arange(len(y)))
    np.testing.assert_array_equal(ep.labels, y)
    # The final layer has a softmax; the export holds its pre-activation logits.
    probs = np.exp(ep.logits - ep.logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(ep.features, np.asarray(model.get_layer("hidden")(x)),
                               rtol=1e-5, atol=1e-5)
    assert ep.epoch == 1 and ep.num_classes == 10


def test_schedule_swaps_the_dataset_in_place_and_resumes(tmp_path, digits):
    x, y = digits
    n = len(y)
    state = tmp_path / "sched.json"
    model = make_model(1)
    rec = Recorder()
    sched = DropSchedule(warmup=1, freq=1, stop=3, state_path=state, fraction=0.2)
    kf = KeepFilter()
    train = rec.pipeline(kf.apply(base_dataset(x, y).shuffle(n, seed=0)))
    cb = GradscoreCallback(export_data(x, y), tmp_path, schedule=sched, keep_filter=kf)
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(train, epochs=2, shuffle=False, verbose=0, callbacks=[rec, cb])
        warnings.warn("Your input ran out of data (after fit)", UserWarning)
    # Keras's end-of-epoch warning over the filtered dataset is silenced during
    # fit() only; nothing else was warned about.
    assert [str(w.message) for w in caught] == ["Your input ran out of data (after fit)"]
    assert warnings.filters == filters
    keep1, keep2 = (read_keeplist(p) for p in cb.keeplists)
    # The filter keeps the pipeline's shuffle: the kept ids come in a new order.
    kept1 = set(keep1.tolist())
    assert [i for i in rec.epochs[0] if i in kept1] != rec.epochs[1]
    assert cb.exports == [os.fspath(tmp_path / "epoch_001.h5"),
                          os.fspath(tmp_path / "epoch_002.h5")]
    assert sorted(rec.epochs[0]) == list(range(n))
    assert sorted(rec.epochs[1]) == keep1.tolist()  # same fit() call, filter swapped
    assert set(keep2) < set(keep1) < set(range(n))
    np.testing.assert_array_equal(sched.keep_ids, keep2)

    # "Crash" and resume: fresh schedule, filter and callback from the state file.
    sched = DropSchedule(warmup=1, freq=1, stop=3, state_path=state, fraction=0.2)
    assert sched.done == [1, 2] and sched.due(3) and not sched.due(4)
    rec2 = Recorder()
    kf = KeepFilter()
    train = rec2.pipeline(kf.apply(base_dataset(x, y).shuffle(n, seed=0)))
    cb = GradscoreCallback(export_data(x, y), tmp_path, schedule=sched, keep_filter=kf)
    model.fit(train, initial_epoch=2, epochs=4, verbose=0, callbacks=[rec2, cb])
    keep3 = read_keeplist(cb.keeplists[0])
    assert cb.exports == [os.fspath(tmp_path / "epoch_003.h5")]  # epoch 4 is past stop
    assert sorted(rec2.epochs[0]) == keep2.tolist()
    assert sorted(rec2.epochs[1]) == keep3.tolist()
    assert sched.done == [1, 2, 3] and set(keep3) <= set(keep2)


def test_export_every_freq_then_cli_then_static_filter(tmp_path, digits):
    x, y = digits
    model = make_model(2)
    cb = GradscoreCallback(export_data(x, y), tmp_path, freq=2, filename="ep{epoch}.h5")
    model.fit(x, y, epochs=4, batch_size=64, verbose=0, callbacks=[cb])
    assert cb.exports == [os.fspath(tmp_path / "ep2.h5"), os.fspath(tmp_path / "ep4.h5")]
    res = CliRunner().invoke(cli, ["score", "-q", cb.exports[-1], "-o",
                                   str(tmp_path / "keep.txt")])
    assert res.exit_code == 0, res.output
    keep = read_keeplist(tmp_path / "keep.txt")
    assert 0 < keep.size < len(y)
    rec = Recorder()
    model.fit(rec.pipeline(filter_dataset(base_dataset(x, y), tmp_path / "keep.txt")),
              epochs=1, verbose=0, callbacks=[rec])
    assert sorted(rec.epochs[0]) == keep.tolist()


def test_string_ids_in_filters_and_export(tmp_path, digits):
    x, y = digits
    x, y = x[:40], y[:40]
    names = np.array([f"img-{i:03d}" for i in range(40)])
    ds = base_dataset(x, y, names)
    keep = np.array(["img-005", "img-017", "img-039"], dtype=object)
    got = [i.decode() for i, _, _ in filter_dataset(ds, keep).as_numpy_iterator()]
    assert got == keep.tolist()
    # Int keep ids match str ids by their decimal text, as keep_mask does.
    ds_num = base_dataset(x, y, np.array([str(i) for i in range(40)]))
    got = [i.decode() for i, _, _ in filter_dataset(ds_num, np.array([3, 12]))
           .as_numpy_iterator()]
    assert got == ["3", "12"]
    kf = KeepFilter(keep)
    assert kf.id_kind == "str"
    filtered = kf.apply(ds)
    assert [i.decode() for i, _, _ in filtered.as_numpy_iterator()] == keep.tolist()
    kf.update(None)
    assert len(list(filtered)) == 40
    kf.update(np.array(["img-000"]))
    assert [i.decode() for i, _, _ in filtered.as_numpy_iterator()] == ["img-000"]
    model = make_model(3)
    ep = read_epoch(export_epoch(model, export_data(x, y, names), tmp_path / "s.h5"))
    assert ep.ids.tolist() == names.tolist()


def test_dict_elements_and_mismatched_ids(digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices({"id": np.arange(10), "x": x[:10]})
    got = [int(e["id"]) for e in filter_dataset(ds, np.array([2, 4]), id_key="id")]
    assert got == [2, 4]
    names = base_dataset(x[:5], y[:5], np.array(list("abcde")))
    with pytest.raises(GradscoreError, match=r"keep-list holds string ids but the filter's "
                                             r"ids are integers"):
        filter_dataset(base_dataset(x[:5], y[:5]), np.array(["a"]))
    with pytest.raises(GradscoreError, match=r"dataset's ids are str but the filter was made "
                                             r"with id_kind='int'"):
        KeepFilter(np.array([1])).apply(names)
    with pytest.raises(GradscoreError, match=r"not a scalar id; filter unbatched"):
        filter_dataset(base_dataset(x[:5], y[:5]).batch(2), np.array([1]))
    with pytest.raises(GradscoreError, match=r"ids must be integers or strings; the "
                                             r"dataset's are float32"):
        filter_dataset(tf.data.Dataset.from_tensor_slices(x[:5, 0]), np.array([1]),
                       id_key=None)


def test_callback_and_layer_errors(tmp_path, digits):
    x, y = digits
    sched = DropSchedule(warmup=1, freq=1)
    with pytest.raises(GradscoreError, match=r"exactly one of 'freq'.*and 'schedule'"):
        GradscoreCallback(export_data(x, y), tmp_path, freq=1, schedule=sched)
    with pytest.raises(GradscoreError, match=r"'keep_filter' needs 'schedule'"):
        GradscoreCallback(export_data(x, y), tmp_path, freq=1, keep_filter=KeepFilter())
    with pytest.raises(GradscoreError, match=r"directory .*nowhere does not exist"):
        GradscoreCallback(export_data(x, y), tmp_path / "nowhere", freq=1)
    model = make_model()
    with pytest.raises(GradscoreError, match=r"layer 'fc' is not in model .*'hidden', 'out'"):
        export_epoch(model, export_data(x, y), tmp_path / "e.h5", layer="fc")
    with pytest.raises(GradscoreError, match=r"expects batches \(ids, inputs, labels\)"):
        export_epoch(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(100),
                     tmp_path / "e.h5")
    assert not (tmp_path / "e.h5").exists()


def test_trajectory_schedule_exports_epoch_0_as_its_reference(tmp_path, digits):
    x, y = digits
    model = make_model(2)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)   # a model that knows the task
    sched = DropSchedule(warmup=1, freq=1, stop=1, method="trajectory")
    cb = GradscoreCallback(export_data(x, y), tmp_path, schedule=sched)
    model.fit(base_dataset(x, y).batch(64).map(lambda i, a, b: (a, b)), epochs=1, verbose=0,
              callbacks=[cb])
    ref = os.fspath(tmp_path / "epoch_000.h5")
    assert cb.exports == [ref, os.fspath(tmp_path / "epoch_001.h5")]
    assert sched.reference == [os.path.abspath(ref)] and sched.done == [1]
    assert read_epoch(ref).epoch == 0
