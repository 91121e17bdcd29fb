"""Loading libperfopt and declaring its C functions (ctypes).

Every function of include/perfopt.h is declared here, with its argtypes and
restype beside it, and nowhere else.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import List, Optional

#: The ABI this module was written against (PERFOPT_ABI_VERSION).
ABI_VERSION = 2

PERFOPT_AUTO = -1

_PACKAGE_DIR = Path(__file__).resolve().parent
_LIB_NAMES = ["libperfopt.dylib"] if sys.platform == "darwin" else ["libperfopt.so", "libperfopt.so.0"]


class perfopt_config(ctypes.Structure):
    """Mirror of `perfopt_config`; fields are only ever appended."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("read_environment", ctypes.c_int32),
        ("device", ctypes.c_char_p),
        ("cudnn_benchmark", ctypes.c_int32),
        ("tf32", ctypes.c_int32),
        ("cpu_optimization", ctypes.c_int32),
        ("torch_compile", ctypes.c_int32),
        ("compile_mode", ctypes.c_char_p),
        ("intra_op_threads", ctypes.c_int32),
        ("inter_op_threads", ctypes.c_int32),
        ("malloc_tuning", ctypes.c_int32),
    ]


class perfopt_model_options(ctypes.Structure):
    """Mirror of `perfopt_model_options`."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("outputs_on_device", ctypes.c_int32),
        ("error_tolerance", ctypes.c_double),
        ("graph_cache_size", ctypes.c_uint32),
        ("graph_warmup_runs", ctypes.c_uint32),
        ("memory_margin", ctypes.c_double),
    ]


# DLPack 0.8's ABI, as include/perfopt.h defines it.
kDLCPU, kDLCUDA = 1, 2


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))),
]

LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p)


def _candidates() -> List[str]:
    """Where the library is looked for, in order."""
    found: List[str] = []
    override = os.environ.get("PERFOPT_LIBRARY")
    if override:
        found.append(override)
    found += [str(_PACKAGE_DIR / name) for name in _LIB_NAMES]
    # A source checkout: bindings/python/perfopt -> build/lib (make build).
    checkout = _PACKAGE_DIR.parent.parent.parent
    found += [str(checkout / "build" / "lib" / name) for name in _LIB_NAMES]
    system = ctypes.util.find_library("perfopt")
    found += [system] if system else []
    found += _LIB_NAMES  # the dynamic loader's own search path
    return found


def _load() -> ctypes.CDLL:
    # libtorch reads PYTORCH_ENABLE_MPS_FALLBACK when it loads, which is when
    # perfopt loads: only the host can set it in time.
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    tried = []
    for path in _candidates():
        explicit = os.sep in path
        if explicit and not os.path.exists(path):
            tried.append(f"{path}: no such file")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as err:
            tried.append(f"{path}: {err}")
            continue
        _declare(lib)
        abi = lib.perfopt_abi_version()
        if abi != ABI_VERSION:
            raise ImportError(
                f"{path} has perfopt ABI {abi}, these bindings need {ABI_VERSION}: "
                "rebuild the library or update the bindings"
            )
        return lib
    hint = (
        "set PERFOPT_LIBRARY to the path of libperfopt.so, or run `make build`. "
        "If the file exists but fails to load, libtorch is usually what is missing: "
        "point LD_LIBRARY_PATH at torch/lib of a torch 2.11.0 install."
    )
    raise ImportError("could not load libperfopt; tried:\n  " + "\n  ".join(tried) + "\n" + hint)


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    status = c.c_int32
    opt_p = c.c_void_p  # perfopt_optimizer *
    scope_p = c.c_void_p  # perfopt_scope *

    def fn(name, restype, *argtypes):
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)

    fn("perfopt_version", c.c_char_p)
    fn("perfopt_abi_version", c.c_uint32)
    fn("perfopt_last_error", c.c_char_p)
    fn("perfopt_status_name", c.c_char_p, c.c_int32)
    fn("perfopt_set_log_callback", status, LOG_CALLBACK, c.c_void_p, c.c_int32)
    fn("perfopt_config_default", status, c.POINTER(perfopt_config))
    fn("perfopt_optimizer_new", status, c.POINTER(perfopt_config), c.POINTER(opt_p))
    fn("perfopt_optimizer_free", None, opt_p)
    fn("perfopt_optimizer_report", status, opt_p, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t))
    fn("perfopt_optimal_batch_size", status, opt_p, c.POINTER(c.c_int32))
    fn("perfopt_inference_enter", status, opt_p, c.POINTER(scope_p))
    fn("perfopt_inference_exit", status, scope_p)
    model_p = c.c_void_p  # perfopt_model *
    # const DLTensor *: an address (one input is passed where its DLPack
    # export put it) or a ctypes array of DLTensor.
    tensors = c.c_void_p
    fn("perfopt_model_options_default", status, c.POINTER(perfopt_model_options))
    fn("perfopt_model_load", status, opt_p, c.c_char_p, c.c_char_p, c.POINTER(model_p))
    fn("perfopt_model_free", None, model_p)
    fn("perfopt_model_set_options", status, model_p, c.POINTER(perfopt_model_options))
    fn("perfopt_model_compile", status, model_p, c.c_char_p, tensors, c.c_size_t)
    fn("perfopt_model_warmup", status, model_p, tensors, c.c_size_t, c.c_uint32, c.c_char_p, c.c_size_t,
       c.POINTER(c.c_size_t))
    fn("perfopt_model_run", status, model_p, tensors, c.c_size_t, c.POINTER(c.POINTER(DLManagedTensor)),
       c.c_size_t, c.POINTER(c.c_size_t))
    fn("perfopt_model_report", status, model_p, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t))
    fn("perfopt_model_recommend_batch", status, model_p, tensors, c.c_size_t, c.POINTER(c.c_int32), c.c_char_p,
       c.c_size_t, c.POINTER(c.c_size_t))
    fn("perfopt_model_run_batched", status, model_p, tensors, c.c_size_t, c.c_int32,
       c.POINTER(c.POINTER(DLManagedTensor)), c.c_size_t, c.POINTER(c.c_size_t))


#: The exported functions this module declares (tests compare it with the header).
DECLARED = [
    "perfopt_version",
    "perfopt_abi_version",
    "perfopt_last_error",
    "perfopt_status_name",
    "perfopt_set_log_callback",
    "perfopt_config_default",
    "perfopt_optimizer_new",
    "perfopt_optimizer_free",
    "perfopt_optimizer_report",
    "perfopt_optimal_batch_size",
    "perfopt_inference_enter",
    "perfopt_inference_exit",
    "perfopt_model_options_default",
    "perfopt_model_load",
    "perfopt_model_free",
    "perfopt_model_set_options",
    "perfopt_model_compile",
    "perfopt_model_warmup",
    "perfopt_model_run",
    "perfopt_model_report",
    "perfopt_model_recommend_batch",
    "perfopt_model_run_batched",
]

_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    """The loaded library (loaded on first use)."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib
