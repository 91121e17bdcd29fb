"""perfopt: fast start-up and fast inference for PyTorch models.

A thin ctypes layer over libperfopt's C ABI::

    import perfopt
    with perfopt.Optimizer(device="auto") as opt:
        print(opt.report()["device"]["name"], opt.optimal_batch_size())
        model = opt.load("vad.pt")           # TorchScript, or an AOTInductor .pt2
        model.compile("max-autotune", [chunk, 16000])
        speech = model.run(chunk, 16000)     # arrays in, arrays out
        model.call("reset_states")

Running models needs no torch in Python; `perfopt.export` (making .pt2
packages) does. After a model ran, a fork()ed child's calls raise
PerfoptError(FORKED_CHILD): use multiprocessing's "spawn" start method.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any, Dict, Optional

from . import _native
from ._checks import INT32, c_int, c_string
from . import _model as _model_module
from ._model import Model
from ._owner import Owner
from ._specs import example_inputs, input_specs
from ._status import PerfoptError, Status, check
from ._status import read_json as _read_json
from ._tensors import DLPackOutput

__all__ = [
    "Status",
    "PerfoptError",
    "Optimizer",
    "InferenceScope",
    "Model",
    "DLPackOutput",
    "version",
    "abi_version",
    "status_message",
    "set_log_level",
    "REPORT_WARMUP",
    "REPORT_RECOMMEND_BATCH",
    "input_specs",
    "example_inputs",
]

__version__ = "0.1.0"

REPORT_WARMUP = _native.PERFOPT_REPORT_WARMUP
REPORT_RECOMMEND_BATCH = _native.PERFOPT_REPORT_RECOMMEND_BATCH

_logger = logging.getLogger("perfopt")


def version() -> str:
    """'perfopt 0.1.0 (libtorch 2.11.0, cuda 13.0)'."""
    return str(_native.lib().perfopt_version().decode())


def abi_version() -> int:
    return int(_native.lib().perfopt_abi_version())


def status_message(status: int) -> str:
    """What a status code means, in a sentence."""
    return str(_native.lib().perfopt_status_message(c_int(status, "status", INT32)).decode())


def _tri_state(value: Optional[bool]) -> int:
    return _native.PERFOPT_AUTO if value is None else int(bool(value))


class Optimizer(Owner):
    """Detects the device and applies its settings (perfopt_optimizer_new).

    Every argument left as None is decided by the TRANSLATOR_* environment
    variables (unless read_environment is False), then by the defaults.
    Thread counts are bounded (4 per core).
    """

    _kind = "optimizer"

    def __init__(
        self,
        device: Optional[str] = None,
        *,
        cudnn_benchmark: Optional[bool] = None,
        tf32: Optional[bool] = None,
        cpu_optimization: Optional[bool] = None,
        torch_compile: Optional[bool] = None,
        compile_mode: Optional[str] = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        malloc_tuning: Optional[bool] = None,
        onnxruntime_library: Optional[str] = None,
        tuning_cache_dir: Optional[str] = None,
        read_environment: bool = True,
    ):
        """tuning_cache_dir: where max-autotune remembers its choices for
        every model whose own option names no folder; a model loaded under
        it is built the way its tuning last chose where that is the form it
        loads anyway (ONNX Runtime's session settings and thread count, which
        it runs at until compiled otherwise; a frozen TorchScript module the
        cache saved, loaded in the stead of the model's file), so its next
        start builds nothing twice."""
        lib = _native.lib()
        config = _native.perfopt_config()
        check(lib.perfopt_config_init(ctypes.byref(config), ctypes.sizeof(config)))
        config.device = c_string(device, "device")
        config.cudnn_benchmark = _tri_state(cudnn_benchmark)
        config.tf32 = _tri_state(tf32)
        config.cpu_optimization = _tri_state(cpu_optimization)
        config.torch_compile = _tri_state(torch_compile)
        config.compile_mode = c_string(compile_mode, "compile_mode")
        config.intra_op_threads = c_int(intra_op_threads, "intra_op_threads", INT32)
        config.inter_op_threads = c_int(inter_op_threads, "inter_op_threads", INT32)
        config.malloc_tuning = _tri_state(malloc_tuning)
        config.onnxruntime_library = c_string(onnxruntime_library, "onnxruntime_library")
        config.tuning_cache_dir = c_string(tuning_cache_dir, "tuning_cache_dir")
        config.read_environment = int(bool(read_environment))
        handle = ctypes.c_void_p()
        check(lib.perfopt_optimizer_new(ctypes.byref(config), ctypes.byref(handle)))
        self._handle: Optional[ctypes.c_void_p] = handle

    @staticmethod
    def _free(handle: ctypes.c_void_p) -> None:
        _native.lib().perfopt_optimizer_free(handle)

    def report(self) -> Dict[str, Any]:
        """The optimizer's report (device, settings read back, sources, skipped)."""
        ptr = self._ptr
        return _read_json(lambda buf, n, needed: _native.lib().perfopt_optimizer_report(ptr, buf, n, needed))

    def optimal_batch_size(self) -> int:
        """The service's rule: CUDA >16 GiB: 4, >8 GiB: 2, else 1; MPS 2; CPU 1."""
        out = ctypes.c_int32(0)
        check(_native.lib().perfopt_optimal_batch_size(self._ptr, ctypes.byref(out)))
        return out.value

    def load(self, path: str, name: Optional[str] = None) -> Model:
        """Loads a TorchScript file, an AOTInductor package (.pt2), an ONNX
        model (.onnx), an ExecuTorch program (.pte) or a bundle (.perfopt)
        onto this optimizer's device; the format is told from
        the file's contents."""
        return Model(self, path, name)

    def inference(self) -> "InferenceScope":
        """A context manager that holds libtorch's inference mode on this thread."""
        return InferenceScope(self)


class InferenceScope:
    """`with optimizer.inference():` enters c10::InferenceMode on entry and
    exits it on exit, on the same thread (perfopt refuses any other)."""

    def __init__(self, optimizer: Optimizer):
        self._optimizer = optimizer
        self._handle: Optional[ctypes.c_void_p] = None

    def __enter__(self) -> "InferenceScope":
        if self._handle is not None:
            raise PerfoptError(Status.INVALID_ARGUMENT, "this scope is already entered")
        handle = ctypes.c_void_p()
        check(_native.lib().perfopt_inference_enter(self._optimizer._ptr, ctypes.byref(handle)))
        self._handle = handle
        return self

    def __exit__(self, *exc: Any) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            status = _native.lib().perfopt_inference_exit(handle)
            if status != Status.OK:
                self._handle = handle  # still open; the caller may exit it correctly
                check(status)

    def __del__(self) -> None:
        # A scope abandoned open (its thread gone): released without
        # restoring anything, from whatever thread the collector runs on.
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                _native.lib().perfopt_scope_free(handle)
            except Exception:
                pass


# Log records go to the `perfopt` logger. The callback object is kept at
# module level: ctypes callbacks must outlive every call that may use them
# (perfopt_set_log_callback is a barrier, so once it returns the replaced
# callback is never entered again).
_PY_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: logging.DEBUG}
_log_lock = threading.Lock()


def _on_log(level: int, message: bytes, _user_data: Any) -> None:
    _logger.log(_PY_LEVELS.get(level, logging.INFO), message.decode("utf-8", "replace"))


_LOG_CALLBACK = _native.LOG_CALLBACK(_on_log)


def set_log_level(level: Optional[int]) -> None:
    """Routes perfopt's records up to `level` (0 off .. 5 trace) into the
    `perfopt` logger; None restores perfopt's default (stderr, warnings)."""
    with _log_lock:
        if level is None:
            check(_native.lib().perfopt_set_log_callback(_native.LOG_CALLBACK(), None, 0))
        else:
            check(_native.lib().perfopt_set_log_callback(_LOG_CALLBACK, None, c_int(level, "level", INT32)))


# _model names Optimizer in its annotations but cannot import it (this module
# imports _model): give it the name, so that typing.get_type_hints on Model's
# methods resolves it (it raised NameError: name 'Optimizer' is not defined).
setattr(_model_module, "Optimizer", Optimizer)
