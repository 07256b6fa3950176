"""Choose the ONNX Runtime execution provider: CUDA when it really works, else CPU.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available whether or not
the machine can run it. Asking for it where the CUDA libraries are missing
makes onnxruntime log two lines on stderr (``[E] ... Failed to load library
libonnxruntime_providers_cuda.so ... libcublasLt.so...`` and ``[W] ...
Failed to create CUDAExecutionProvider``) before it falls back to the CPU.
So CUDA is probed first, without onnxruntime's help, and only requested when
the probe passes:

1. the installed build offers ``CUDAExecutionProvider`` at all;
2. the NVIDIA driver library loads and ``cuInit`` finds at least one device;
3. onnxruntime's own CUDA provider library loads with ``ctypes``, which
   succeeds only when every CUDA library it links to (cuBLAS, cuBLASLt,
   cuRAND, the CUDA runtime) can be found. When it cannot and CUDA libraries
   were pip-installed (``nvidia-*`` wheels), onnxruntime's ``preload_dlls``
   is tried once with its output captured, then the load again.

After the session is made, :func:`make_session` checks which provider it
really got and reports that.
"""

import contextlib
import ctypes
import functools
import importlib.util
import io
import os
import sys

from ..errors import GradscoreError

#: Values of the ``device`` argument.
DEVICES = ("auto", "cpu", "cuda")

_INSTALL_HINT = ("install it with: pip install 'gradscore[onnx]' (this installs "
                 "onnxruntime-gpu, which runs on the CPU too; never install plain "
                 "'onnxruntime' beside it: they share one package folder)")


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise GradscoreError(f"ONNX support needs the {name} package ({exc}); "
                             f"{_INSTALL_HINT}") from None


def import_onnxruntime():
    """``import onnxruntime``, or a :class:`GradscoreError` that says how to install it."""
    return _import("onnxruntime")


def import_onnx():
    """``import onnx``, or a :class:`GradscoreError` that says how to install it."""
    return _import("onnx")


def _names():
    if sys.platform == "win32":
        return "nvcuda.dll", "onnxruntime_providers_shared.dll", "onnxruntime_providers_cuda.dll"
    return "libcuda.so.1", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"


def _load_provider_library(capi):
    shared_name, cuda_name = _names()[1:]
    # The CUDA provider imports one symbol (Provider_GetHost) from the shared
    # provider library; onnxruntime itself loads that one globally too.
    ctypes.CDLL(os.path.join(capi, shared_name), mode=getattr(os, "RTLD_GLOBAL", 0))
    ctypes.CDLL(os.path.join(capi, cuda_name))


@functools.lru_cache(maxsize=1)
def cuda_status():
    """Whether onnxruntime can run on CUDA here, and why (not).

    The probe loads libraries but never asks onnxruntime for the CUDA
    provider, so it prints nothing. Its answer is cached per process.

    Returns
    -------
    usable : bool
    reason : str
        One line for humans, e.g. ``"libcublasLt.so.13: cannot open shared
        object file"``.
    """
    ort = import_onnxruntime()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, (f"onnxruntime {ort.__version__} offers no CUDAExecutionProvider "
                       "(is plain 'onnxruntime' installed instead of 'onnxruntime-gpu'?)")
    driver_name = _names()[0]
    try:
        driver = ctypes.CDLL(driver_name)
    except OSError:
        return False, f"no NVIDIA driver ({driver_name} not found)"
    rc = driver.cuInit(0)
    if rc != 0:
        return False, f"the NVIDIA driver found no usable GPU (cuInit returned {rc})"
    count = ctypes.c_int(0)
    rc = driver.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value < 1:
        return False, "the NVIDIA driver reports no GPU"
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    try:
        _load_provider_library(capi)
    except OSError as first:
        if importlib.util.find_spec("nvidia") is None or not hasattr(ort, "preload_dlls"):
            return False, f"CUDA libraries missing: {first}"
        # CUDA from pip wheels: onnxruntime knows where they live. It prints
        # what it cannot load; keep that out of the user's terminal.
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            try:
                ort.preload_dlls(msvc=False)
            except Exception:  # noqa: BLE001 - any failure means "not usable"
                pass
        try:
            _load_provider_library(capi)
        except OSError as second:
            return False, f"CUDA libraries missing: {second}"
    return True, f"{count.value} GPU(s) found"


def choose_device(device="auto"):
    """Resolve ``device`` to the provider list to ask onnxruntime for.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}, default="auto"
        ``"auto"``: CUDA when :func:`cuda_status` says it is usable, else CPU.
        ``"cuda"``: CUDA or a :class:`GradscoreError` saying why not.

    Returns
    -------
    device : {"cpu", "cuda"}
    providers : list of str
    reason : str
        Why this device was chosen, for the user.
    """
    if device not in DEVICES:
        raise GradscoreError(f"'device' must be one of {', '.join(map(repr, DEVICES))}; "
                             f"got {device!r}")
    if device == "cpu":
        import_onnxruntime()
        return "cpu", ["CPUExecutionProvider"], "CPU asked for"
    usable, why = cuda_status()
    if usable:
        return "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], f"CUDA usable: {why}"
    if device == "cuda":
        raise GradscoreError(f"'device' is 'cuda' but CUDA is not usable here: {why}; "
                             "use device 'cpu' or 'auto'")
    return "cpu", ["CPUExecutionProvider"], f"CUDA not usable: {why}"


def session_options():
    """SessionOptions for untrusted models: ONNX format only, warnings off."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    # Only errors: the provider-placement notes onnxruntime logs as warnings
    # mean nothing to a user, and real failures still raise.
    so.log_severity_level = 3
    so.add_session_config_entry("session.load_model_format", "ONNX")
    return so


def make_session(model_bytes, device="auto"):
    """An InferenceSession on the chosen device, and what it really runs on.

    Parameters
    ----------
    model_bytes : bytes
        Serialised, already checked ModelProto.
    device : {"auto", "cpu", "cuda"}, default="auto"

    Returns
    -------
    session : onnxruntime.InferenceSession
    info : dict
        ``device`` ("cpu" or "cuda"), ``providers`` (the session's, in
        order) and ``reason``.
    """
    ort = import_onnxruntime()
    used, providers, reason = choose_device(device)
    try:
        sess = ort.InferenceSession(model_bytes, sess_options=session_options(),
                                    providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise GradscoreError(f"onnxruntime could not load the model: {exc}") from None
    got = sess.get_providers()
    if used == "cuda" and "CUDAExecutionProvider" not in got:
        if device == "cuda":
            raise GradscoreError("'device' is 'cuda' but onnxruntime could not start its "
                                 f"CUDA provider (session providers: {got})")
        used, reason = "cpu", "CUDA provider failed to start; fell back to CPU"
    return sess, {"device": used, "providers": list(got), "reason": reason}
