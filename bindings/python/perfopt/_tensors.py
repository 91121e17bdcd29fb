"""Tensors across the ABI through DLPack: NumPy arrays and torch tensors in
(views, no copies), DLManagedTensor outputs out as NumPy arrays or torch
tensors (sharing perfopt's buffer, no copies)."""
from __future__ import annotations

import ctypes
from typing import Any, List, Sequence, Tuple

from . import _native

_DLTENSOR = b"dltensor"
_USED = b"used_dltensor"

_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


def _release(address: int) -> None:
    managed = _native.DLManagedTensor.from_address(address)
    if managed.deleter:
        managed.deleter(ctypes.cast(address, ctypes.POINTER(_native.DLManagedTensor)))


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(capsule: int) -> None:
    # A capsule nobody consumed still owns its tensor (a consumer renames it
    # to "used_dltensor" and takes over the deleter).
    if _api.PyCapsule_IsValid(capsule, _DLTENSOR):
        _release(_api.PyCapsule_GetPointer(capsule, _DLTENSOR))


def capsule(managed: "ctypes._Pointer[_native.DLManagedTensor]") -> Any:
    """Wraps a DLManagedTensor perfopt returned in a DLPack capsule."""
    address = ctypes.cast(managed, ctypes.c_void_p).value
    return _api.PyCapsule_New(address, _DLTENSOR, ctypes.cast(_capsule_destructor, ctypes.c_void_p))


class DLPackOutput:
    """An output tensor that NumPy (`np.from_dlpack`) and torch
    (`torch.from_dlpack`) take without copying."""

    def __init__(self, managed: "ctypes._Pointer[_native.DLManagedTensor]"):
        self._managed = managed
        self._capsule = capsule(managed)

    @property
    def shape(self) -> Tuple[int, ...]:
        t = self._managed.contents.dl_tensor
        return tuple(t.shape[i] for i in range(t.ndim))

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        capsule, self._capsule = self._capsule, None
        if capsule is None:
            raise BufferError("this output was already consumed")
        return capsule

    def __dlpack_device__(self) -> Tuple[int, int]:
        device = self._managed.contents.dl_tensor.device
        return (device.device_type, device.device_id)

    def numpy(self) -> Any:
        import numpy as np

        return np.from_dlpack(self)

    def torch(self) -> Any:
        import torch

        return torch.from_dlpack(self)


_NUMPY_DTYPES = {
    "float16": (2, 16), "float32": (2, 32), "float64": (2, 64), "int8": (0, 8), "int16": (0, 16),
    "int32": (0, 32), "int64": (0, 64), "uint8": (1, 8), "bool": (6, 8),
}


_CPU = _native.DLDevice(_native.kDLCPU, 0)
_BY_DTYPE: dict = {}


def _dtype_codes() -> dict:
    """numpy dtype -> (DLPack code, bits), built once."""
    if not _BY_DTYPE:
        import numpy as np

        _BY_DTYPE.update({np.dtype(name): codes for name, codes in _NUMPY_DTYPES.items()})
    return _BY_DTYPE


class InputBatch:
    """DLTensors describing the caller's arrays, kept alive for one call."""

    def __init__(self, values: Sequence[Any]):
        self._keep: List[Any] = []
        self.array = (_native.DLTensor * max(len(values), 1))()
        for i, value in enumerate(values):
            self.array[i] = self._describe(value)
        self.count = len(values)

    def _describe(self, value: Any) -> _native.DLTensor:
        module = type(value).__module__
        if module.startswith("torch"):
            import torch.utils.dlpack

            cap = torch.utils.dlpack.to_dlpack(value)
            self._keep.append(cap)
            # CPython's id() is the object's address, which is what the C API takes.
            address = _api.PyCapsule_GetPointer(id(cap), _DLTENSOR)
            return _native.DLManagedTensor.from_address(address).dl_tensor
        import numpy as np

        array = value if type(value) is np.ndarray else np.asarray(value)
        code_bits = _dtype_codes().get(array.dtype)
        if code_bits is None:
            raise TypeError(f"perfopt takes {', '.join(_NUMPY_DTYPES)} arrays, not {array.dtype}")
        ndim = array.ndim
        shape = (ctypes.c_int64 * max(ndim, 1))(*array.shape)
        strides = None
        if not array.flags.c_contiguous:
            if any(s % array.itemsize for s in array.strides):
                array = np.ascontiguousarray(array)
            else:
                strides = (ctypes.c_int64 * max(ndim, 1))(*(s // array.itemsize for s in array.strides))
        self._keep += [array, shape, strides]
        return _native.DLTensor(
            array.ctypes.data,
            _CPU,
            ndim,
            _native.DLDataType(code_bits[0], code_bits[1], 1),
            shape,
            strides,
            0,
        )

    @property
    def pointer(self) -> Any:
        return self.array if self.count else None
