"""perfopt: fast start-up and fast inference for PyTorch models.

A thin ctypes layer over libperfopt's C ABI::

    import perfopt
    with perfopt.Optimizer(device="auto") as opt:
        print(opt.report()["device"]["name"], opt.optimal_batch_size())
        with opt.inference():
            ...
"""
from __future__ import annotations

import ctypes
import enum
import json
import logging
import threading
from typing import Any, Dict, Optional

from . import _native
from ._tensors import DLPackOutput, InputBatch

__all__ = [
    "Status",
    "PerfoptError",
    "Optimizer",
    "InferenceScope",
    "Model",
    "DLPackOutput",
    "version",
    "abi_version",
    "set_log_level",
]

__version__ = "0.1.0"

_logger = logging.getLogger("perfopt")


class Status(enum.IntEnum):
    """perfopt_status codes (include/perfopt.h)."""

    OK = 0
    NULL_ARGUMENT = 1
    INVALID_ARGUMENT = 2
    INVALID_UTF8 = 3
    STRUCT_SIZE = 4
    INVALID_HANDLE = 5
    ENVIRONMENT = 6
    FILE_NOT_FOUND = 7
    LOAD_FAILED = 8
    UNSUPPORTED_DEVICE = 9
    DEVICE_NOT_FOUND = 10
    DEVICE = 11
    OUT_OF_MEMORY = 12
    WRONG_THREAD = 13
    SCOPE_ORDER = 14
    BUFFER_TOO_SMALL = 15
    TORCH = 16
    PANIC = 17
    INTERNAL = 18
    MODEL_CORRUPT = 19
    COMPILE_SKIPPED = 20


class PerfoptError(RuntimeError):
    """A failed perfopt call: `status` is the code, the text perfopt's message."""

    def __init__(self, status: int, message: str):
        try:
            self.status: Any = Status(status)
        except ValueError:
            self.status = status
        self.message = message
        name = self.status.name if isinstance(self.status, Status) else str(status)
        super().__init__(f"[{name}] {message}")


def _check(status: int) -> None:
    if status != Status.OK:
        raw = _native.lib().perfopt_last_error()
        raise PerfoptError(status, raw.decode("utf-8", "replace") if raw else "no message")


def version() -> str:
    """'perfopt 0.1.0 (libtorch 2.11.0, cuda 13.0)'."""
    return _native.lib().perfopt_version().decode()


def abi_version() -> int:
    return int(_native.lib().perfopt_abi_version())


def _read_json(call, size: int = 4096) -> Dict[str, Any]:
    """Runs a (buf, len, needed) report call. Reports are made fresh on each
    call (latencies, free memory), so their size can change between calls:
    retry with room to spare rather than trusting a size from an earlier call."""
    while True:
        needed = ctypes.c_size_t(0)
        buf = ctypes.create_string_buffer(size)
        status = call(buf, size, ctypes.byref(needed))
        if status == Status.BUFFER_TOO_SMALL and needed.value > size:
            size = needed.value * 2
            continue
        _check(status)
        return json.loads(buf.value.decode("utf-8"))


def _tri_state(value: Optional[bool]) -> int:
    return _native.PERFOPT_AUTO if value is None else int(bool(value))


def _encode(value: Optional[str]) -> Optional[bytes]:
    return None if value is None else value.encode("utf-8")


class _Owner:
    """An owner of one perfopt handle: `close()` frees it (again is a no-op),
    `with` closes at the end, and garbage collection closes what was left open."""

    _handle: Optional[ctypes.c_void_p] = None
    _kind = "handle"

    @staticmethod
    def _free(handle: ctypes.c_void_p) -> None:
        raise NotImplementedError

    @property
    def _ptr(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise PerfoptError(Status.INVALID_HANDLE, f"the {self._kind} is closed")
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Optimizer(_Owner):
    """Detects the device and applies its settings (perfopt_optimizer_new).

    Every argument left as None is decided by the TRANSLATOR_* environment
    variables (unless read_environment is False), then by the defaults.
    """

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
        read_environment: bool = True,
    ):
        lib = _native.lib()
        config = _native.perfopt_config()
        _check(lib.perfopt_config_default(ctypes.byref(config)))
        config.device = _encode(device)
        config.cudnn_benchmark = _tri_state(cudnn_benchmark)
        config.tf32 = _tri_state(tf32)
        config.cpu_optimization = _tri_state(cpu_optimization)
        config.torch_compile = _tri_state(torch_compile)
        config.compile_mode = _encode(compile_mode)
        config.intra_op_threads = intra_op_threads
        config.inter_op_threads = inter_op_threads
        config.malloc_tuning = _tri_state(malloc_tuning)
        config.read_environment = int(bool(read_environment))
        handle = ctypes.c_void_p()
        _check(lib.perfopt_optimizer_new(ctypes.byref(config), ctypes.byref(handle)))
        self._handle: Optional[ctypes.c_void_p] = handle

    _kind = "optimizer"

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
        _check(_native.lib().perfopt_optimal_batch_size(self._ptr, ctypes.byref(out)))
        return out.value

    def load(self, path: str, name: Optional[str] = None) -> "Model":
        """Loads a TorchScript file onto this optimizer's device."""
        return Model(self, path, name)

    def inference(self) -> "InferenceScope":
        """A context manager that holds libtorch's inference mode on this thread."""
        return InferenceScope(self)



_SLOTS8 = ctypes.POINTER(_native.DLManagedTensor) * 8


class Model(_Owner):
    """A TorchScript model (perfopt_model_*). Inputs are NumPy arrays or torch
    tensors (passed as DLPack views, no copies); outputs are NumPy arrays by
    default, torch tensors with `output="torch"`, or DLPackOutput objects."""

    def __init__(self, optimizer: Optimizer, path: str, name: Optional[str] = None):
        handle = ctypes.c_void_p()
        _check(
            _native.lib().perfopt_model_load(optimizer._ptr, _encode(path), _encode(name), ctypes.byref(handle))
        )
        self._optimizer = optimizer  # the model keeps what it needs alive; this keeps `_ptr` checks simple
        self._handle: Optional[ctypes.c_void_p] = handle

    _kind = "model"

    @staticmethod
    def _free(handle: ctypes.c_void_p) -> None:
        _native.lib().perfopt_model_free(handle)

    def set_options(
        self,
        *,
        outputs_on_device: Optional[bool] = None,
        error_tolerance: Optional[float] = None,
        graph_cache_size: Optional[int] = None,
        graph_warmup_runs: Optional[int] = None,
        memory_margin: Optional[float] = None,
    ) -> None:
        """Changes the options given; the others keep their defaults."""
        options = _native.perfopt_model_options()
        _check(_native.lib().perfopt_model_options_default(ctypes.byref(options)))
        if outputs_on_device is not None:
            options.outputs_on_device = int(bool(outputs_on_device))
        if error_tolerance is not None:
            options.error_tolerance = error_tolerance
        if graph_cache_size is not None:
            options.graph_cache_size = graph_cache_size
        if graph_warmup_runs is not None:
            options.graph_warmup_runs = graph_warmup_runs
        if memory_margin is not None:
            options.memory_margin = memory_margin
        _check(_native.lib().perfopt_model_set_options(self._ptr, ctypes.byref(options)))

    def compile(self, mode: Optional[str] = None, warmup_inputs: Optional[Sequence[Any]] = None) -> None:
        """mode: none, default, reduce-overhead, max-autotune, or None for the
        optimizer's. Raises PerfoptError(COMPILE_SKIPPED) on MPS."""
        batch = InputBatch(list(warmup_inputs or []))
        _check(_native.lib().perfopt_model_compile(self._ptr, _encode(mode), batch.pointer, batch.count))

    def warmup(self, inputs: Sequence[Any], iterations: int = 3) -> Dict[str, Any]:
        """Runs `iterations` passes; returns first-call and steady-state latency."""
        batch = InputBatch(list(inputs))
        # One call: a retry would run the passes again. The report is well
        # under 64 KiB.
        size = 65536
        buf = ctypes.create_string_buffer(size)
        needed = ctypes.c_size_t(0)
        _check(
            _native.lib().perfopt_model_warmup(
                self._ptr, batch.pointer, batch.count, iterations, buf, size, ctypes.byref(needed)
            )
        )
        return json.loads(buf.value.decode("utf-8"))

    def run(self, *inputs: Any, output: str = "numpy") -> List[Any]:
        """Runs the model; `output` is "numpy", "torch" or "dlpack"."""
        batch = InputBatch(list(inputs))
        ptr = self._ptr
        return self._outputs(
            lambda outs, cap, count: _native.lib().perfopt_model_run(ptr, batch.pointer, batch.count, outs, cap, count),
            output,
        )

    def run_batched(self, *inputs: Any, max_batch: int = 0, output: str = "numpy") -> List[Any]:
        """Runs inputs of any size along dimension 0 in chunks of at most
        `max_batch` (0: the recommended size), halving on out-of-memory."""
        batch = InputBatch(list(inputs))
        ptr = self._ptr
        return self._outputs(
            lambda outs, cap, count: _native.lib().perfopt_model_run_batched(
                ptr, batch.pointer, batch.count, max_batch, outs, cap, count
            ),
            output,
        )

    def recommend_batch(self, *sample: Any) -> Dict[str, Any]:
        """From one sample (dimension 0 of size 1): the recommended batch, the
        memory limit, the throughput knee and every measured point."""
        batch = InputBatch(list(sample))
        value = ctypes.c_int32(0)
        size = 65536  # one call: a retry would measure again
        buf = ctypes.create_string_buffer(size)
        needed = ctypes.c_size_t(0)
        _check(
            _native.lib().perfopt_model_recommend_batch(
                self._ptr, batch.pointer, batch.count, ctypes.byref(value), buf, size, ctypes.byref(needed)
            )
        )
        report = json.loads(buf.value.decode("utf-8"))
        assert report["recommended_batch"] == value.value
        return report

    @staticmethod
    def _outputs(call, output: str) -> List[Any]:
        if output not in ("numpy", "torch", "dlpack"):
            raise ValueError("output must be 'numpy', 'torch' or 'dlpack'")
        capacity = 8
        while True:
            outputs = (_SLOTS8 if capacity == 8 else ctypes.POINTER(_native.DLManagedTensor) * capacity)()
            count = ctypes.c_size_t(0)
            status = call(outputs, capacity, ctypes.byref(count))
            if status == Status.BUFFER_TOO_SMALL and count.value > capacity:
                capacity = count.value  # the model ran; rare (more than 8 outputs)
                continue
            _check(status)
            break
        wrapped = [DLPackOutput(outputs[i]) for i in range(count.value)]
        if output == "dlpack":
            return wrapped
        if output == "numpy":
            import numpy as np

            consumer = np.from_dlpack
        else:
            import torch

            consumer = torch.from_dlpack
        # An output not converted (a consumer failed) is freed with its owner.
        return [w.convert(consumer) for w in wrapped]

    def report(self) -> Dict[str, Any]:
        """Calls, latency percentiles, peak memory, and what compilation chose and why."""
        ptr = self._ptr
        return _read_json(lambda buf, n, needed: _native.lib().perfopt_model_report(ptr, buf, n, needed))



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
        _check(_native.lib().perfopt_inference_enter(self._optimizer._ptr, ctypes.byref(handle)))
        self._handle = handle
        return self

    def __exit__(self, *exc: Any) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            status = _native.lib().perfopt_inference_exit(handle)
            if status != Status.OK:
                self._handle = handle  # still open; the caller may exit it correctly
                _check(status)


# Log records go to the `perfopt` logger. The callback object is kept at
# module level: ctypes callbacks must outlive every call that may use them.
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
            _check(_native.lib().perfopt_set_log_callback(_native.LOG_CALLBACK(), None, 0))
        else:
            _check(_native.lib().perfopt_set_log_callback(_LOG_CALLBACK, None, level))
