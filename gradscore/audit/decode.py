"""Decode images with Pillow into the model's input, refusing hostile files.

:class:`ImageSpec` says what the model takes: layout (``nchw`` or ``nhwc``),
channels (1: Pillow's ``L``; 3: ``RGB``), spatial size, and an optional
per-channel ``mean``/``std``. :func:`image_spec` reads it from the ONNX
model's input shape. Each image is decoded to float32 in [0, 1], resized
to the model's size (Pillow's bilinear filter, which antialiases when it
shrinks, as torchvision's ``Resize`` does on PIL images), normalised and
laid out as the model declares.

A file that cannot be used raises :class:`BadImage` with the rule it broke:

- an empty file;
- not an image (Pillow cannot identify it);
- a decompression bomb: an image that declares more than ``max_pixels``
  pixels (default Pillow's own limit, 89,478,485), refused from its header
  before any pixel is decoded (a 300-byte PNG can declare 30,000 x 30,000);
- truncated or damaged data (Pillow fails while decoding).

The caller decides: stop with an error naming the file, or skip it and list
it (``skip_bad``). Pillow's global settings are never changed; a process
that sets ``ImageFile.LOAD_TRUNCATED_IMAGES`` itself gets truncated files
padded by Pillow instead of refused.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import io
import os
import warnings

import numpy as np

from ..errors import GradscoreError

LAYOUTS = ("nchw", "nhwc")
#: Pillow's default ``Image.MAX_IMAGE_PIXELS`` (about 0.25 GB at 24 bits per pixel).
MAX_PIXELS = 89_478_485


class BadImage(Exception):
    """One payload that is not a usable image; ``str()`` is the rule it broke."""


@dataclass(frozen=True)
class ImageSpec:
    """What one decoded example must look like.

    Attributes
    ----------
    layout : {"nchw", "nhwc"}
    channels : {1, 3}
    size : tuple of int
        ``(height, width)``.
    mean, std : tuple of float or None
        Per channel, applied after scaling to [0, 1]: ``(x - mean) / std``.
    dtype : numpy dtype
        The model input's float dtype.
    max_pixels : int
    """

    layout: str
    channels: int
    size: tuple
    mean: tuple = None
    std: tuple = None
    dtype: np.dtype = np.dtype(np.float32)
    max_pixels: int = MAX_PIXELS

    @property
    def shape(self):
        """Shape of one decoded example."""
        h, w = self.size
        return (self.channels, h, w) if self.layout == "nchw" else (h, w, self.channels)

    def describe(self):
        mode = "L (grey)" if self.channels == 1 else "RGB"
        norm = "" if self.mean is None else f", normalised with mean {list(self.mean)} std " \
            f"{list(self.std)}"
        return (f"{mode}, resized to {self.size[0]}x{self.size[1]}, {self.layout.upper()}, "
                f"float in [0, 1]{norm}")


def _per_channel(name, value, channels):
    if value is None:
        return None
    v = tuple(float(x) for x in value)
    if len(v) == 1:
        v = v * channels
    if len(v) != channels:
        raise GradscoreError(f"--{name} must give 1 or {channels} values (the model takes "
                             f"{channels} channel(s)); got {len(v)}")
    if name == "std" and min(v) <= 0:
        raise GradscoreError(f"--std values must be > 0; got {list(v)}")
    return v


def image_spec(dims, dtype=np.float32, *, size=None, layout=None, mean=None, std=None,
               max_pixels=MAX_PIXELS, where="model"):
    """The :class:`ImageSpec` for a model input of shape ``dims``.

    Parameters
    ----------
    dims : list of int or None
        The input's shape, ``None`` for symbolic dimensions (batch first).
    dtype : numpy dtype
        The input's element type (must be floating point).
    size : tuple of int, default=None
        ``(height, width)``; needed when the model leaves them symbolic,
        and must match where it fixes them.
    layout : {"nchw", "nhwc"}, default=None
        Default: NCHW when the second dimension is 1 or 3, else NHWC when
        the last one is.
    mean, std : sequence of float, default=None
        One value, or one per channel; give both or neither.
    max_pixels : int, default=89,478,485
    where : str
        The model's path, for messages.

    Returns
    -------
    spec : ImageSpec
    """
    if dims is None or len(dims) != 4:
        shown = "unknown" if dims is None else "(" + ", ".join(
            "?" if d is None else str(d) for d in dims) + ")"
        raise GradscoreError(f"{where}: image folders need a model whose input is a batch of "
                             f"images, (N, C, H, W) or (N, H, W, C); its input has shape "
                             f"{shown}")
    if np.dtype(dtype).kind != "f":
        raise GradscoreError(f"{where}: the model's input is {np.dtype(dtype)}; images are "
                             "decoded to floats in [0, 1], so the input must be a float type")
    if layout is None:
        if dims[1] in (1, 3):
            layout = "nchw"
        elif dims[3] in (1, 3):
            layout = "nhwc"
        else:
            raise GradscoreError(
                f"{where}: cannot tell the input's layout from its shape ({', '.join('?' if d is None else str(d) for d in dims)}): neither "
                "dimension 1 (NCHW) nor dimension 3 (NHWC) is 1 or 3 channels; give --layout")
    if layout not in LAYOUTS:
        raise GradscoreError(f"'layout' must be 'nchw' or 'nhwc'; got {layout!r}")
    c, h, w = (dims[1], dims[2], dims[3]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    if c not in (1, 3):
        raise GradscoreError(f"{where}: the input ({layout.upper()}) has {c} channels; images "
                             "are decoded as L (1 channel) or RGB (3)")
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise GradscoreError(f"'size' must be (height, width) >= 1; got {size}")
        if (h is not None and h != size[0]) or (w is not None and w != size[1]):
            raise GradscoreError(f"{where}: the model fixes its input to {h}x{w} but --size "
                                 f"is {size[0]}x{size[1]}")
    else:
        if h is None or w is None:
            raise GradscoreError(f"{where}: the model leaves its input's height and width "
                                 "open; give the size to resize images to with --size HxW")
        size = (int(h), int(w))
    if (mean is None) != (std is None):
        raise GradscoreError("give both --mean and --std, or neither")
    return ImageSpec(layout, int(c), size, _per_channel("mean", mean, c),
                     _per_channel("std", std, c), np.dtype(dtype), int(max_pixels))


def _read(payload):
    """Bytes of a payload (bytes or a file path); empty files refused here."""
    if payload is None:
        raise BadImage("no image (the image field is empty)")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)
    else:
        try:
            with open(payload, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise BadImage(f"cannot be read: {exc.strerror or exc}") from None
    if not data:
        raise BadImage("empty file (0 bytes)")
    return data


def open_image(payload, *, max_pixels=MAX_PIXELS):
    """A fully decoded ``PIL.Image`` (first frame), or :class:`BadImage`.

    The size is checked from the header, before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    data = _read(payload)
    with warnings.catch_warnings():
        # Pillow warns between its limit and twice it, and raises beyond.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise BadImage("not an image (Pillow cannot identify its format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(f"decompression bomb, refused before decoding (Pillow: "
                           f"{str(exc).rstrip('.')})") from None
        except Exception as exc:  # a damaged header: SyntaxError, ValueError, OSError ...
            raise BadImage(f"damaged image header ({type(exc).__name__}: {exc})") from None
        w, h = img.size
        if w * h > max_pixels:
            raise BadImage(f"decompression bomb: declares {w} x {h} = {w * h:,} pixels, more "
                           f"than max_pixels={max_pixels:,} (refused before decoding)")
        if w < 1 or h < 1:
            raise BadImage(f"declares an empty image ({w} x {h})")
        try:
            img.load()
        except Exception as exc:  # OSError "image file is truncated", SyntaxError, ...
            raise BadImage(f"truncated or damaged: Pillow failed while decoding it "
                           f"({type(exc).__name__}: {exc})") from None
    return img


def decode(payload, spec):
    """One image as the model's input: array of shape ``spec.shape``, ``spec.dtype``."""
    from PIL import Image

    img = open_image(payload, max_pixels=spec.max_pixels)
    try:
        img = img.convert("L" if spec.channels == 1 else "RGB")
        h, w = spec.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
    except Exception as exc:  # conversion of an odd mode
        raise BadImage(f"cannot be converted to {'L' if spec.channels == 1 else 'RGB'} "
                       f"({type(exc).__name__}: {exc})") from None
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if x.ndim == 2:
        x = x[:, :, None]
    if spec.mean is not None:
        x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "nchw":
        x = np.moveaxis(x, -1, 0)
    return np.ascontiguousarray(x, dtype=spec.dtype)


def thumbnail(payload, *, side=64, max_pixels=MAX_PIXELS):
    """RGB uint8 array of at most ``side`` pixels a side, for reports; None if unusable."""
    try:
        img = open_image(payload, max_pixels=max_pixels).convert("RGB")
    except (BadImage, Exception):  # a report shows what it can
        return None
    img.thumbnail((side, side))
    return np.asarray(img)


def default_workers():
    """Decoding threads: Pillow releases the GIL while it decodes and resizes."""
    return max(1, min(4, os.cpu_count() or 1))


class Decoder:
    """Decode batches of payloads on a few threads, in order.

    Parameters
    ----------
    spec : ImageSpec
    workers : int, default=None
        Threads; default :func:`default_workers`.
    """

    def __init__(self, spec, workers=None):
        self.spec = spec
        self.workers = workers or default_workers()
        self._pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None

    def _one(self, payload):
        try:
            return decode(payload, self.spec), None
        except BadImage as exc:
            return None, str(exc)

    def batch(self, payloads):
        """``(x, reasons)``: stacked arrays of the good payloads, and per payload
        None (decoded) or the reason it was not."""
        if self._pool is None:
            results = [self._one(p) for p in payloads]
        else:
            results = list(self._pool.map(self._one, payloads))
        good = [x for x, why in results if why is None]
        x = np.stack(good) if good else np.zeros((0,) + self.spec.shape, self.spec.dtype)
        return x, [why for _, why in results]

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
