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
ABI_VERSION = 6

PERFOPT_AUTO = -1
PERFOPT_NOT_BATCHED = -1
PERFOPT_REPORT_WARMUP = 1
PERFOPT_REPORT_RECOMMEND_BATCH = 2

# perfopt_value kinds.
VALUE_NONE, VALUE_TENSOR, VALUE_INT, VALUE_DOUBLE, VALUE_BOOL, VALUE_STRING, VALUE_LIST, VALUE_TUPLE = range(8)

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
        ("onnxruntime_library", ctypes.c_char_p),
        ("tuning_cache_dir", ctypes.c_char_p),
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
        ("tuning_budget_ms", ctypes.c_uint32),
        ("tuning_cache_dir", ctypes.c_char_p),
        ("threads", ctypes.c_uint32),
        ("batch_budget_ms", ctypes.c_uint32),
        ("precision", ctypes.c_int32),
        ("reduced_tolerance", ctypes.c_double),
        ("min_cosine", ctypes.c_double),
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



class perfopt_value(ctypes.Structure):
    """Mirror of `perfopt_value`: one argument or result of any kind."""


perfopt_value._fields_ = [
    ("struct_size", ctypes.c_uint32),
    ("kind", ctypes.c_int32),
    ("int_value", ctypes.c_int64),
    ("double_value", ctypes.c_double),
    ("string", ctypes.c_void_p),
    ("length", ctypes.c_size_t),
    ("items", ctypes.POINTER(perfopt_value)),
    ("tensor", ctypes.POINTER(DLTensor)),
    ("managed", ctypes.POINTER(DLManagedTensor)),
]

LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p)


def _candidates() -> List[str]:
    """Where the library is looked for, in order."""
    found: List[str] = []
    override = os.environ.get("PERFOPT_LIBRARY")
    if override:
        found.append(override)
    # A wheel (or `pip install` after `make build`) carries it in the package.
    found += [str(_PACKAGE_DIR / name) for name in _LIB_NAMES]
    # A source checkout: bindings/python/perfopt -> build/lib (make build).
    checkout = _PACKAGE_DIR.parent.parent.parent
    found += [str(checkout / "build" / "lib" / name) for name in _LIB_NAMES]
    system = ctypes.util.find_library("perfopt")
    found += [system] if system else []
    found += _LIB_NAMES  # the dynamic loader's own search path
    return found


def _torch_lib_dirs() -> List[Path]:
    """torch's (and its CUDA packages') library folders of the installed torch
    package, found without importing torch (which takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return []
    torch_dir = Path(list(spec.submodule_search_locations)[0])
    dirs = [torch_dir / "lib"]
    nvidia = torch_dir.parent / "nvidia"
    if nvidia.is_dir():
        dirs += sorted(p for p in nvidia.glob("*/lib") if p.is_dir())
    return [d for d in dirs if d.is_dir()]


_preloaded: List[ctypes.CDLL] = []


def _preload_torch() -> Optional[str]:
    """Loads libtorch from the installed torch package (its rpath already
    names the package's folder; this covers a library installed elsewhere).
    Returns the folder used, or None when torch is not installed."""
    dirs = _torch_lib_dirs()
    if not dirs:
        return None
    # libtorch.so brings libtorch_cuda.so where the torch has CUDA.
    for name in ("libc10.so", "libtorch_cpu.so", "libtorch.so"):
        path = dirs[0] / name
        if path.exists():
            try:
                _preloaded.append(ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL))
            except OSError:
                pass  # e.g. libtorch_cuda without a driver: libperfopt says what it needs
    return str(dirs[0])


def _load() -> ctypes.CDLL:
    # libtorch reads PYTORCH_ENABLE_MPS_FALLBACK when it loads, which is when
    # perfopt loads: only the host can set it in time.
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    tried = []
    torch_dir: Optional[str] = None
    for path in _candidates():
        explicit = os.sep in path
        if explicit and not os.path.exists(path):
            tried.append(f"{path}: no such file")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as err:
            if "libtorch" not in str(err) and "libc10" not in str(err):
                tried.append(f"{path}: {err}")
                continue
            # The library is there; libtorch is not on its search path.
            torch_dir = torch_dir or _preload_torch()
            try:
                lib = ctypes.CDLL(path)
            except OSError as again:
                tried.append(f"{path}: {again}")
                continue
        _declare(lib)
        abi = lib.perfopt_abi_version()
        if abi != ABI_VERSION:
            raise ImportError(
                f"{path} has perfopt ABI {abi}, these bindings need {ABI_VERSION}: "
                "rebuild the library or update the bindings"
            )
        return lib
    if torch_dir is None and not _torch_lib_dirs():
        torch_hint = (
            "libperfopt needs libtorch 2.11.0, and no torch package is installed here: "
            "`pip install torch==2.11.0`, or point LD_LIBRARY_PATH at a libtorch 2.11.0's lib folder."
        )
    else:
        torch_hint = (
            f"libtorch was looked for in {torch_dir or _torch_lib_dirs()[0]}: it must be torch 2.11.0 "
            "(the version perfopt is built for)."
        )
    hint = (
        "set PERFOPT_LIBRARY to the path of libperfopt.so, install the wheel (`make wheel`), "
        "or run `make build` in a checkout. " + torch_hint
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
    values = c.POINTER(perfopt_value)
    # DLManagedTensor **: an array of addresses (c_void_p), read as ints.
    outputs = c.c_void_p
    size_p = c.POINTER(c.c_size_t)
    fn("perfopt_status_message", c.c_char_p, c.c_int32)
    fn("perfopt_config_init", status, c.POINTER(perfopt_config), c.c_size_t)
    fn("perfopt_scope_free", None, scope_p)
    fn("perfopt_model_options_default", status, c.POINTER(perfopt_model_options))
    fn("perfopt_model_options_init", status, c.POINTER(perfopt_model_options), c.c_size_t)
    fn("perfopt_model_load", status, opt_p, c.c_char_p, c.c_char_p, c.POINTER(model_p))
    fn("perfopt_model_free", None, model_p)
    fn("perfopt_model_set_options", status, model_p, c.POINTER(perfopt_model_options))
    fn("perfopt_model_compile", status, model_p, c.c_char_p, tensors, c.c_size_t)
    fn("perfopt_model_compile_args", status, model_p, c.c_char_p, values, c.c_size_t)
    fn("perfopt_model_warmup", status, model_p, tensors, c.c_size_t, c.c_uint32, c.c_char_p, c.c_size_t, size_p)
    fn("perfopt_model_warmup_args", status, model_p, values, c.c_size_t, c.c_uint32, c.c_char_p, c.c_size_t,
       size_p)
    fn("perfopt_model_run", status, model_p, tensors, c.c_size_t, outputs, c.c_size_t, size_p)
    fn("perfopt_model_take_outputs", status, model_p, outputs, c.c_size_t, size_p)
    fn("perfopt_model_output_count", status, model_p, size_p)
    fn("perfopt_model_call", status, model_p, c.c_char_p, values, c.c_size_t, c.POINTER(values))
    fn("perfopt_value_free", None, values)
    fn("perfopt_model_methods", status, model_p, c.c_char_p, c.c_size_t, size_p)
    fn("perfopt_model_report", status, model_p, c.c_char_p, c.c_size_t, size_p)
    fn("perfopt_model_last_report", status, model_p, c.c_int32, c.c_char_p, c.c_size_t, size_p)
    fn("perfopt_model_set_batch_dims", status, model_p, c.POINTER(c.c_int32), c.c_size_t,
       c.POINTER(c.c_int32), c.c_size_t)
    fn("perfopt_model_recommend_batch", status, model_p, tensors, c.c_size_t, c.POINTER(c.c_int32), c.c_char_p,
       c.c_size_t, size_p)
    fn("perfopt_model_recommend_batch_args", status, model_p, values, c.c_size_t, c.POINTER(c.c_int32),
       c.c_char_p, c.c_size_t, size_p)
    fn("perfopt_model_run_batched", status, model_p, tensors, c.c_size_t, c.c_int32, outputs, c.c_size_t,
       size_p)
    fn("perfopt_model_run_batched_args", status, model_p, values, c.c_size_t, c.c_int32, outputs, c.c_size_t,
       size_p)


#: The exported functions this module declares (tests compare it with the header).
DECLARED = [
    "perfopt_version",
    "perfopt_abi_version",
    "perfopt_last_error",
    "perfopt_status_name",
    "perfopt_status_message",
    "perfopt_set_log_callback",
    "perfopt_config_default",
    "perfopt_config_init",
    "perfopt_optimizer_new",
    "perfopt_optimizer_free",
    "perfopt_optimizer_report",
    "perfopt_optimal_batch_size",
    "perfopt_inference_enter",
    "perfopt_inference_exit",
    "perfopt_scope_free",
    "perfopt_model_options_default",
    "perfopt_model_options_init",
    "perfopt_model_load",
    "perfopt_model_free",
    "perfopt_model_set_options",
    "perfopt_model_compile",
    "perfopt_model_compile_args",
    "perfopt_model_warmup",
    "perfopt_model_warmup_args",
    "perfopt_model_run",
    "perfopt_model_take_outputs",
    "perfopt_model_output_count",
    "perfopt_model_call",
    "perfopt_value_free",
    "perfopt_model_methods",
    "perfopt_model_report",
    "perfopt_model_last_report",
    "perfopt_model_set_batch_dims",
    "perfopt_model_recommend_batch",
    "perfopt_model_recommend_batch_args",
    "perfopt_model_run_batched",
    "perfopt_model_run_batched_args",
]

_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    """The loaded library (loaded on first use)."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib
