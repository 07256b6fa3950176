"""TensorFlow/Keras: export epochs from a callback; filter ``tf.data`` by a keep-list.

Export
    :func:`export_epoch` reads the input of the final ``Dense`` layer
    through a sub-model and computes the logits from that layer's kernel and
    bias (so a softmax activation on the layer does not matter), streaming
    labels, logits, features and ids through :class:`gradscore.EpochWriter`.
Callback
    :class:`GradscoreCallback` exports every ``freq`` epochs, or drives a
    :class:`gradscore.schedule.DropSchedule`: on its epochs it exports,
    scores and updates a :class:`KeepFilter` in place, so the next epoch of
    the same ``model.fit`` call trains only on the kept examples.
Consume
    :func:`filter_dataset` keeps the elements of a ``tf.data.Dataset`` whose
    id is in a keep-list (a static hash table); :class:`KeepFilter` is the
    mutable form whose contents can be swapped between epochs.

Batches for export are ``(ids, inputs, labels)``; int or str ids. Importing
this module imports TensorFlow and Keras; ``import gradscore`` does not.
"""

import os
import warnings

import numpy as np

try:
    import tensorflow as tf
    import keras
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gradscore.integrations.keras needs TensorFlow: "
                      "pip install 'gradscore[tensorflow]'") from exc

from .._validation import check_int
from ..errors import GradscoreError
from ..io.keeplist import read_keeplist
from ..io.writer import EpochWriter

__all__ = ["export_epoch", "find_last_dense", "features_model", "filter_dataset",
           "KeepFilter", "GradscoreCallback"]


# -- export -------------------------------------------------------------------

def find_last_dense(model):
    """The last ``Dense`` layer of ``model``, searching nested models too.

    Returns
    -------
    layer : keras.layers.Dense
    """
    found = None
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                found = find_last_dense(layer)
            except GradscoreError:
                pass
        elif isinstance(layer, keras.layers.Dense):
            found = layer
    if found is None:
        raise GradscoreError(f"model {model.name!r} has no Dense layer; name the final "
                             "layer with 'layer='")
    return found


def _resolve_layer(model, layer):
    if layer is None:
        layer = find_last_dense(model)
    elif isinstance(layer, str):
        try:
            layer = model.get_layer(layer)
        except ValueError:
            names = [ly.name for ly in model.layers]
            raise GradscoreError(f"layer {layer!r} is not in model {model.name!r} "
                                 f"(its layers: {names})") from None
    if not isinstance(layer, keras.layers.Dense):
        raise GradscoreError(f"layer {layer.name!r} is a {type(layer).__name__}, not Dense")
    return layer


def features_model(model, layer=None):
    """A model from ``model``'s inputs to the input of its final ``Dense`` layer.

    Parameters
    ----------
    model : keras.Model
        Built (functional, or ``Sequential`` starting with ``keras.Input``).
    layer : str or keras.layers.Dense, default=None
        The final layer; default :func:`find_last_dense`.

    Returns
    -------
    sub : keras.Model
    layer : keras.layers.Dense
    """
    layer = _resolve_layer(model, layer)
    try:
        inputs = model.inputs
        sub = keras.Model(inputs[0] if len(inputs) == 1 else inputs, layer.input)
    except (AttributeError, ValueError) as exc:
        raise GradscoreError(
            f"cannot read the input of layer {layer.name!r} from model {model.name!r}: "
            f"{exc}. Build the model first (functional, or Sequential starting with "
            "keras.Input)") from None
    return sub, layer


def _as_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _numpy_ids(ids):
    ids = _as_numpy(ids)
    if ids.dtype.kind in "SO":
        ids = np.array([v.decode("utf-8") if isinstance(v, bytes) else v
                        for v in ids.tolist()], dtype=object)
    return ids


def export_epoch(model, data, path, *, layer=None, epoch=None, dtype=np.float32,
                 sub_model=None):
    """Export one epoch: labels, logits and final-layer features of every example.

    Parameters
    ----------
    model : keras.Model
    data : tf.data.Dataset or iterable of batches
        ``(ids, inputs, labels)`` batches over the whole training set (not
        only kept examples), in inference form (no augmentation).
    path : str or path-like
        Output file, written atomically.
    layer : str or keras.layers.Dense, default=None
        The final layer; default the last ``Dense`` in the model. Its input
        must be 2-D ``(batch, n_features)``.
    epoch : int, default=None
        Stored in the file.
    dtype : numpy dtype, default=numpy.float32
        Storage dtype of logits and features.
    sub_model : keras.Model, default=None
        A :func:`features_model` result to reuse (built from ``model`` and
        ``layer`` when None).

    Returns
    -------
    path : str
    """
    if sub_model is None:
        sub_model, layer = features_model(model, layer)
    else:
        layer = _resolve_layer(model, layer)
    kernel = np.asarray(_as_numpy(layer.kernel), dtype=np.float64)
    bias = np.asarray(_as_numpy(layer.bias), dtype=np.float64) if layer.use_bias else 0.0
    out = os.fspath(path)
    # The writer takes its layout from the first batch and publishes the file
    # only if the whole epoch went through.
    with EpochWriter(out, epoch=epoch, dtype=dtype) as writer:
        for batch in data:
            if not isinstance(batch, (list, tuple)) or len(batch) != 3:
                raise GradscoreError("export_epoch expects batches (ids, inputs, labels); got "
                                     f"{type(batch).__name__}")
            ids, inputs, labels = batch
            feats = np.asarray(_as_numpy(sub_model(inputs, training=False)))
            if feats.ndim != 2:
                raise GradscoreError(f"layer {layer.name!r} gets input of shape {feats.shape}; "
                                     "export needs 2-D (batch, n_features)")
            feats = feats.astype(np.float64)
            logits = feats @ kernel + bias
            labels = _as_numpy(labels)
            if labels.ndim == 2 and labels.shape[1] == kernel.shape[1]:
                raise GradscoreError("labels must be integer class indices, not one-hot")
            writer.append(labels, logits, feats, _numpy_ids(ids))
    return out


# -- tf.data filters ----------------------------------------------------------

def _keep_ids(keep):
    if isinstance(keep, (str, os.PathLike)):
        return read_keeplist(keep)
    return np.asarray(keep)


def _keys(keep_ids, id_kind):
    """Keep ids as a key tensor of the filter's kind (int64 or string)."""
    keep_ids = np.asarray(keep_ids)
    if keep_ids.size == 0:
        return tf.constant([], dtype=tf.int64 if id_kind == "int" else tf.string)
    if id_kind == "int":
        if keep_ids.dtype.kind not in "iu":
            raise GradscoreError("the keep-list holds string ids but the filter's ids are "
                                 "integers (id_kind='int')")
        return tf.constant(keep_ids.astype(np.int64))
    # Int keep ids match str ids by their decimal text, as keep_mask does.
    return tf.constant([str(v) for v in keep_ids.tolist()], dtype=tf.string)


def _pick(element, id_key):
    el = element[0] if len(element) == 1 else element
    if id_key is None:
        return el
    return el[id_key]


def _id_kind_of(dataset, id_key):
    """'int' or 'str': the type of the ids in ``dataset``'s elements."""
    spec = dataset.element_spec
    try:
        spec = spec if id_key is None else spec[id_key]
    except (KeyError, IndexError, TypeError):
        raise GradscoreError(f"id_key={id_key!r} does not select a component of the dataset's "
                             f"elements ({dataset.element_spec})") from None
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 0:
        raise GradscoreError(f"id_key={id_key!r} selects {spec}, not a scalar id; filter "
                             "unbatched elements (filter first, then batch)")
    if spec.dtype == tf.string:
        return "str"
    if spec.dtype.is_integer:
        return "int"
    raise GradscoreError(f"ids must be integers or strings; the dataset's are {spec.dtype.name}")


def _id_tensor(ident, id_kind):
    return tf.cast(ident, tf.int64) if id_kind == "int" else ident


def filter_dataset(dataset, keep, *, id_key=0):
    """Keep the elements of ``dataset`` whose id is in a keep-list (fixed).

    Parameters
    ----------
    dataset : tf.data.Dataset
        Unbatched elements carrying a scalar id (int or str): a tuple, a
        dict, or the id alone.
    keep : str, path-like or array-like
        A keep-list file, or the kept ids. Int keep ids match str dataset
        ids by their decimal text.
    id_key : int, str or None, default=0
        Where the id is in each element: a tuple index, a dict key, or
        None when the element is the id.

    Returns
    -------
    dataset : tf.data.Dataset
        Looks ids up in a ``tf.lookup.StaticHashTable``; to change the kept
        ids between epochs use :class:`KeepFilter`.

    Examples
    --------
    >>> import numpy as np, tensorflow as tf
    >>> from gradscore.integrations.keras import filter_dataset
    >>> ds = tf.data.Dataset.from_tensor_slices((np.arange(5), np.arange(5) * 10))
    >>> [int(x) for _, x in filter_dataset(ds, np.array([1, 3]))]
    [10, 30]
    """
    id_kind = _id_kind_of(dataset, id_key)
    keys = _keys(_keep_ids(keep), id_kind)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, dtype=tf.int64)),
        default_value=0)

    @tf.autograph.experimental.do_not_convert
    def predicate(*element):
        return table.lookup(_id_tensor(_pick(element, id_key), id_kind)) > 0

    return dataset.filter(predicate)


class KeepFilter:
    """A ``tf.data`` filter over kept ids whose contents can change between epochs.

    The filter's table is read each time the dataset is iterated, so a
    dataset built once with :meth:`apply` and passed to ``model.fit`` trains
    on the new keep-list from the epoch after :meth:`update`.

    Parameters
    ----------
    keep : str, path-like, array-like or None, default=None
        A keep-list file or the kept ids; None keeps everything.
    id_kind : {"int", "str"}, default=None
        Type of the dataset's ids; default from ``keep`` (``"int"`` when
        ``keep`` is None).

    Examples
    --------
    >>> import numpy as np, tensorflow as tf
    >>> from gradscore.integrations.keras import KeepFilter
    >>> kf = KeepFilter()
    >>> ds = kf.apply(tf.data.Dataset.from_tensor_slices(np.arange(4)), id_key=None)
    >>> [int(i) for i in ds]
    [0, 1, 2, 3]
    >>> kf.update(np.array([2, 0])); [int(i) for i in ds]
    [0, 2]
    """

    def __init__(self, keep=None, *, id_kind=None):
        keep_ids = None if keep is None else _keep_ids(keep)
        if id_kind is None:
            id_kind = "str" if keep_ids is not None and keep_ids.size and \
                keep_ids.dtype.kind not in "iu" else "int"
        if id_kind not in ("int", "str"):
            raise GradscoreError(f"'id_kind' must be 'int' or 'str'; got {id_kind!r}")
        self.id_kind = id_kind
        key_dtype = tf.int64 if id_kind == "int" else tf.string
        self._table = tf.lookup.experimental.MutableHashTable(key_dtype, tf.int64,
                                                              default_value=0)
        self._all = tf.Variable(True, trainable=False, dtype=tf.bool)
        self.n_kept = None
        self.update(keep_ids)

    def update(self, keep):
        """Replace the kept ids (a keep-list path, ids, or None for all)."""
        keys, _ = self._table.export()
        self._table.remove(keys)
        if keep is None:
            self._all.assign(True)
            self.n_kept = None
            return
        ids = _keep_ids(keep)
        new = _keys(ids, self.id_kind)
        self._table.insert(new, tf.ones_like(new, dtype=tf.int64))
        self._all.assign(False)
        self.n_kept = int(ids.size)

    def __call__(self, ident):
        """True (a scalar bool tensor) when ``ident`` is kept."""
        ident = tf.convert_to_tensor(ident)
        if (ident.dtype == tf.string) != (self.id_kind == "str"):
            raise GradscoreError(f"the ids are {ident.dtype.name} but the filter was made "
                                 f"with id_kind={self.id_kind!r}")
        return tf.logical_or(self._all, self._table.lookup(_id_tensor(ident, self.id_kind)) > 0)

    def apply(self, dataset, *, id_key=0):
        """``dataset.filter`` by this filter; ``id_key`` as in :func:`filter_dataset`."""
        kind = _id_kind_of(dataset, id_key)
        if kind != self.id_kind:
            raise GradscoreError(f"the dataset's ids are {kind} but the filter was made with "
                                 f"id_kind={self.id_kind!r}")

        @tf.autograph.experimental.do_not_convert
        def predicate(*element):
            return self(_pick(element, id_key))

        return dataset.filter(predicate)


# -- callback -----------------------------------------------------------------

#: Keras 3 warns so at the end of each epoch over a dataset of unknown length.
_RAN_OUT = "Your input ran out of data"


class GradscoreCallback(keras.callbacks.Callback):
    """Export (and score, on a schedule) during ``model.fit``.

    Epochs are counted as epochs completed: Keras's epoch index plus one,
    so with ``fit(initial_epoch=k)`` a resumed run keeps its numbering.

    Parameters
    ----------
    data : tf.data.Dataset or iterable of batches
        ``(ids, inputs, labels)`` batches over the whole training set, for
        export (see :func:`export_epoch`).
    directory : str or path-like
        Where exports (and keep-lists) go; must exist.
    freq : int, default=None
        Export every ``freq`` epochs, without scoring (score elsewhere,
        e.g. ``gradscore score``). Give this or ``schedule``.
    schedule : DropSchedule, default=None
        Export and score on the schedule's epochs
        (:meth:`~gradscore.schedule.DropSchedule.step_files`), cumulatively.
    keep_filter : KeepFilter, default=None
        With ``schedule``: updated to the running keep-list after every
        scoring, and at the start of training (a resumed schedule). While
        ``fit`` runs, Keras's "Your input ran out of data" warning is
        silenced: Keras 3 raises it at the end of every epoch over a
        dataset of unknown length (any ``filter``), although the epoch
        went over every kept example.
    layer : str or keras.layers.Dense, default=None
        The final layer; default the last ``Dense``.
    filename : str, default="epoch_{epoch:03d}.h5"
        Export name, formatted with ``epoch``.
    dtype : numpy dtype, default=numpy.float32

    Attributes
    ----------
    exports : list of str
        Files exported, in order.
    keeplists : list of str
        Keep-lists written (with ``schedule``).
    """

    def __init__(self, data, directory, *, freq=None, schedule=None, keep_filter=None,
                 layer=None, filename="epoch_{epoch:03d}.h5", dtype=np.float32):
        super().__init__()
        if (freq is None) == (schedule is None):
            raise GradscoreError("give exactly one of 'freq' (export only) and 'schedule' "
                                 f"(export and score); got freq={freq!r}, schedule={schedule!r}")
        if keep_filter is not None and schedule is None:
            raise GradscoreError("'keep_filter' needs 'schedule' (the callback only updates "
                                 "the filter after scoring)")
        self.data = data
        self.directory = os.fspath(directory)
        if not os.path.isdir(self.directory):
            raise GradscoreError(f"directory {self.directory} does not exist")
        self.freq = None if freq is None else check_int("freq", freq, minimum=1)
        self.schedule = schedule
        self.keep_filter = keep_filter
        self.layer = layer
        self.filename = filename
        self.dtype = dtype
        self.exports = []
        self.keeplists = []
        self._sub = None

    def on_train_begin(self, logs=None):
        self._sub = None  # the model may have changed between fit() calls
        if self.schedule is not None and self.schedule.needs_reference:
            # method="trajectory": the model before training is the reference.
            self.schedule.set_reference(self.export(0))
        if self.keep_filter is not None:
            self._quiet_ran_out()
            if self.schedule.keep_ids is not None:
                self.keep_filter.update(self.schedule.keep_ids)

    def on_train_end(self, logs=None):
        self._loud_again()

    def _quiet_ran_out(self):
        self._loud_again()
        self._quiet = warnings.catch_warnings()
        self._quiet.__enter__()
        warnings.filterwarnings("ignore", message=_RAN_OUT, category=UserWarning)

    def _loud_again(self):
        quiet, self._quiet = getattr(self, "_quiet", None), None
        if quiet is not None:
            quiet.__exit__(None, None, None)

    def export(self, epoch):
        """Export now, as epoch ``epoch``; returns the path."""
        if self._sub is None:
            self._sub = features_model(self.model, self.layer)
        sub, layer = self._sub
        path = os.path.join(self.directory, self.filename.format(epoch=epoch))
        export_epoch(self.model, self.data, path, layer=layer, epoch=epoch,
                     dtype=self.dtype, sub_model=sub)
        self.exports.append(path)
        return path

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if self.schedule is None:
            if done % self.freq == 0:
                self.export(done)
            return
        if not self.schedule.due(done):
            return
        path = self.export(done)
        self.keeplists.append(self.schedule.step_files(done, path))
        if self.keep_filter is not None:
            self.keep_filter.update(self.schedule.keep_ids)
