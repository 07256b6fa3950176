"""A vectorisable ``exp`` for the hot loops (softmax, EPIC's kernel).

numba compiles ``np.exp`` in a loop to one libm call per element (about
10 ns here), which made the exponentials a fifth of the ImageNet-shape run.
:func:`exp_inplace` is the textbook algorithm written so that LLVM turns it
into SIMD code: ``x = k ln2 + r`` with ``|r| <= ln2 / 2`` (``ln2`` split in
two, as fdlibm does), ``e^r`` by its Taylor series to degree 13 (truncation
below 1e-17), and ``2^k`` built from its bits. Against libm it is within
one unit in the last place for every ``x <= 0``, subnormal results included
(tests/test_vexp.py), and about three times faster. The scalar
:func:`exp_one` does the same arithmetic, so both give identical bits.

Defined for ``x <= 0`` (every caller's range: ``z - max(z)`` in the softmax,
``-distance / m`` in the kernel); ``x < -1100`` gives 0.
"""

import math

import numpy as np
from numba import njit

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_MAGIC = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer in the low bits
_MAGIC_BITS = int(np.float64(_MAGIC).view(np.int64))
_BIAS = 1023 + 600  # 2^(k + 600) stays normal down to k = -1622; then times 2^-600
_TWO_M600 = 2.0 ** -600
(_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = [
    1.0 / math.factorial(i) for i in range(2, 14)]
_CHUNK = 256


@njit(cache=True, nogil=True, inline="always")
def _reduced(x):
    # (e^r, t) with x = k ln2 + r; k sits in the low bits of t.
    x = max(x, -1100.0)
    t = x * _LOG2E + _MAGIC
    kf = t - _MAGIC
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    p = p * r + 1.0
    return p, t, kf


@njit(cache=True, nogil=True)
def exp_inplace(x):
    """``x[i] = exp(x[i])`` for a 1-D float64 array of values <= 0."""
    work = np.empty(_CHUNK)
    for start in range(0, x.shape[0], _CHUNK):
        exp_chunk(x[start:start + _CHUNK], work)


@njit(cache=True, nogil=True)
def exp_chunk(x, work):
    """:func:`exp_inplace` on at most ``work.size`` values, with scratch ``work``."""
    m = x.shape[0]
    bits = work.view(np.int64)
    for i in range(m):
        p, t, _ = _reduced(x[i])
        x[i] = p
        work[i] = t
    for i in range(m):
        bits[i] = ((bits[i] - _MAGIC_BITS) + _BIAS) << 52
    for i in range(m):
        x[i] = (x[i] * work[i]) * _TWO_M600


@njit(cache=True, nogil=True)
def exp_one(x):
    """:func:`exp_inplace` for one value (the same bits)."""
    p, _, kf = _reduced(x)
    # ldexp rounds once, as the two products above do.
    return math.ldexp(p, int(kf))
