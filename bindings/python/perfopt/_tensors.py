"""Tensors across the ABI through DLPack: NumPy arrays and torch tensors in
(views; a copy only of an array whose layout perfopt cannot take, see
_describable), DLManagedTensor outputs out as NumPy arrays or torch tensors
(sharing perfopt's buffer, no copies)."""
from __future__ import annotations

import ctypes
import struct
from typing import Any, List, Optional, Sequence, Tuple

from . import _native

_DLTENSOR = b"dltensor"

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


_DESTRUCTOR = ctypes.cast(_capsule_destructor, ctypes.c_void_p)


class _Handover:
    """Hands one DLManagedTensor to a consumer that takes it at once
    (`np.from_dlpack`, `torch.from_dlpack`). Its capsule has no destructor: a
    capsule destructor is a ctypes callback into Python, several microseconds
    per output on the hot path, and the consumer owns the tensor anyway."""

    __slots__ = ("capsule", "_device")

    def __init__(self, address: int, device: Tuple[int, int]):
        self.capsule = _api.PyCapsule_New(address, _DLTENSOR, None)
        self._device = device

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> Tuple[int, int]:
        return self._device


class DLPackOutput:
    """One output tensor perfopt returned, owned until something takes it:
    NumPy (`np.from_dlpack`, or `.numpy()`) and torch (`torch.from_dlpack`, or
    `.torch()`) take it without copying; dropped untaken, it is freed."""

    __slots__ = ("_address",)

    def __init__(self, address: int):
        # The DLManagedTensor's address, as a plain int: pointer objects read
        # out of a ctypes array share its memory, and the binding reuses its
        # output slots call after call.
        self._address: Optional[int] = address

    def _take(self) -> int:
        if self._address is None:
            raise BufferError("this output was already consumed")
        address, self._address = self._address, None
        return address

    def _tensor(self) -> Any:
        if self._address is None:
            raise BufferError("this output was already consumed")
        return _native.DLManagedTensor.from_address(self._address).dl_tensor

    @property
    def shape(self) -> Tuple[int, ...]:
        t = self._tensor()
        return tuple(t.shape[i] for i in range(t.ndim))

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        # Any consumer: the capsule frees the tensor if it is not taken.
        return _api.PyCapsule_New(self._take(), _DLTENSOR, _DESTRUCTOR)

    def __dlpack_device__(self) -> Tuple[int, int]:
        if self._address is None:
            raise BufferError("this output was already consumed")
        # dl_tensor.device: two int32 after the data pointer (DLPack's layout).
        device_type, device_id = _DEVICE.unpack(ctypes.string_at(self._address + _DEVICE_OFFSET, 8))
        return (device_type, device_id)

    def convert(self, consumer: Any, device: Optional[Tuple[int, int]] = None) -> Any:
        """`consumer` (np.from_dlpack or torch.from_dlpack) of this output; if
        it fails before taking the tensor, the tensor is freed here. `device`:
        where the output is, when the caller knows (else read from it)."""
        device = device or self.__dlpack_device__()
        handover = _Handover(self._take(), device)
        try:
            return consumer(handover)
        except BaseException:
            # A consumer renames the capsule when it takes the tensor; a
            # capsule still named "dltensor" was not taken.
            if _api.PyCapsule_IsValid(id(handover.capsule), _DLTENSOR):
                _release(_api.PyCapsule_GetPointer(id(handover.capsule), _DLTENSOR))
            raise

    def numpy(self) -> Any:
        import numpy as np

        return self.convert(np.from_dlpack)

    def writable_numpy(self, views: Optional[List[Tuple[int, int]]] = None,
                       device: Optional[Tuple[int, int]] = None) -> Any:
        """This output as a writable NumPy array. np.from_dlpack marks arrays
        from a DLPack 0.x capsule read-only, though the caller owns them:
        NumPy takes the tensor (and frees it when its array goes); a small
        output is copied (cheaper than a view's Python objects: 64 KiB copy
        in about the time a view takes to make), a larger one is a writable
        view of the same memory that keeps NumPy's array alive. `views`: the
        memory this call's earlier outputs were viewed over; an output over
        the same memory (a model that returns one tensor twice) is copied,
        so that writing one output never changes another. `device`: as for
        convert()."""
        array = self.convert(_from_dlpack or _numpy().from_dlpack, device)
        flags = array.flags
        if flags.writeable:
            return array
        if array.nbytes <= _COPY_AT_MOST or not flags.c_contiguous:
            return array.copy()
        start = array.__array_interface__["data"][0]
        end = start + array.nbytes
        if views is not None:
            if any(start < e and s < end for s, e in views):
                return array.copy()
            views.append((start, end))
        buffer: Any = (ctypes.c_char * array.nbytes).from_address(start)
        buffer._owner = array
        return _numpy().frombuffer(buffer, array.dtype).reshape(array.shape)

    def torch(self) -> Any:
        import torch

        return self.convert(torch.from_dlpack)

    def close(self) -> None:
        """Frees the tensor now, unless something took it."""
        if self._address is not None:
            _release(self._take())

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: ctypes may be gone already
            pass


# Outputs up to this size are copied into a writable array, larger ones
# viewed (writable_numpy).
_COPY_AT_MOST = 64 * 1024


def _numpy() -> Any:
    """NumPy, imported on first use (an import statement costs a lookup
    under the import lock on every call: its from_dlpack is kept)."""
    global _from_dlpack
    import numpy

    _from_dlpack = numpy.from_dlpack
    return numpy


_from_dlpack: Any = None

_DEVICE = struct.Struct("=ii")
_DEVICE_OFFSET = _native.DLTensor.device.offset


_NUMPY_DTYPES = {
    "float16": (2, 16), "float32": (2, 32), "float64": (2, 64), "int8": (0, 8), "int16": (0, 16),
    "int32": (0, 32), "int64": (0, 64), "uint8": (1, 8), "bool": (6, 8),
}


_CPU = _native.DLDevice(_native.kDLCPU, 0)
# Where an output is when the model hands outputs out on the host.
HOST = (_native.kDLCPU, 0)
_BY_DTYPE: dict = {}


def _dtype_codes() -> dict:
    """numpy dtype -> (DLPack code, bits), built once (with _ndarray)."""
    if not _BY_DTYPE:
        import numpy as np

        global _ndarray
        _BY_DTYPE.update({np.dtype(name): codes for name, codes in _NUMPY_DTYPES.items()})
        _ndarray = np.ndarray
    return _BY_DTYPE


class _NotYet:
    """Stands for numpy.ndarray until NumPy is first used (nothing is its instance)."""


_ndarray: Any = _NotYet
_memmove = ctypes.memmove
_byref = ctypes.byref
_get_pointer = _api.PyCapsule_GetPointer
_DLTENSOR_SIZE = ctypes.sizeof(_native.DLTensor)


def _describable(array: Any) -> Any:
    """`array`, or a C-ordered copy of it where perfopt cannot take its
    layout: negative strides (a reversed view such as a[:, ::-1]; torch has
    none, so perfopt refuses them and torch.from_numpy tells its caller to
    copy) or strides that are not whole elements (DLPack counts strides in
    elements). Every other layout, non-contiguous included, goes as a view."""
    strides = array.strides
    # The usual array: contiguous, with no reversed size-1 dimension (which
    # NumPy still calls contiguous, and perfopt would still refuse). This runs
    # on every call: min() without `default=`, which would cost 3 times as much.
    if array.flags.c_contiguous and (not strides or min(strides) >= 0):
        return array
    itemsize = array.itemsize
    if any(s < 0 or s % itemsize for s in strides):
        return array.copy(order="C")
    return array


class NotATensor(TypeError):
    """A value InputBatch cannot describe as a tensor (a number, a string,
    a list): the caller passes it as a value instead."""


def _is_tensor(value: Any) -> bool:
    from ._values import is_tensor  # _values imports this module

    return is_tensor(value)


class InputBatch:
    """DLTensors describing the caller's arrays, kept alive for one call.

    Each value is described by its own DLPack export where it has one (NumPy's
    and torch's `__dlpack__` are C calls, far cheaper than building a DLTensor
    field by field through ctypes). A DLManagedTensor starts with its DLTensor,
    so a single input is passed in place; several are copied into one array.
    This runs on every call: each ctypes call costs about a microsecond here,
    so the usual array (contiguous, writable, of a dtype perfopt takes) costs
    one export and one pointer read, and nothing is imported."""

    def __init__(self, values: Sequence[Any]):
        self._keep: List[Any] = []
        self.count = len(values)
        if self.count == 1:
            self.pointer: Any = self._address(values[0])
            return
        self.array = (_native.DLTensor * max(self.count, 1))()
        for i, value in enumerate(values):
            _memmove(_byref(self.array, i * _DLTENSOR_SIZE), self._address(value), _DLTENSOR_SIZE)
        self.pointer = self.array if self.count else None

    def _address(self, value: Any) -> int:
        """The address of a DLTensor describing `value`, valid while this batch lives."""
        if type(value) is _ndarray:
            flags = value.flags
            # c_contiguous with a negative stride happens only on a size-1
            # dimension (min() without `default=`, 3 times cheaper).
            if flags.c_contiguous and flags.writeable and value.dtype in _BY_DTYPE and (
                    not value.ndim or min(value.strides) >= 0):
                cap = value.__dlpack__()
                self._keep.append(cap)
                # CPython's id() is the object's address, which is what the C API takes.
                return _get_pointer(id(cap), _DLTENSOR)
        return self._address_slow(value)

    def _address_slow(self, value: Any) -> int:
        if not _is_tensor(value):
            raise NotATensor(f"{type(value).__name__} is not an array or a tensor")
        if type(value).__module__.startswith("torch"):
            import torch.utils.dlpack

            # A lazily negated or conjugated view (`z.conj().imag`) stores the
            # values before the negation: DLPack has no such bit, so it would
            # run as the stored values. Resolved, it is a copy of the right ones.
            if value.is_neg() or value.is_conj():
                value = value.resolve_conj().resolve_neg()
            return self._exported(torch.utils.dlpack.to_dlpack(value))
        import numpy as np

        array = value if type(value) is np.ndarray else np.asarray(value)
        codes = _dtype_codes()
        if array.dtype not in codes:
            raise TypeError(f"perfopt takes {', '.join(_NUMPY_DTYPES)} arrays, not {array.dtype}")
        array = _describable(array)
        if array.flags.writeable:
            try:
                return self._exported(array.__dlpack__())
            except BufferError:
                pass  # anything else NumPy's export refuses: described below
        return self._described(array, codes[array.dtype])

    def _exported(self, cap: Any) -> int:
        self._keep.append(cap)
        # CPython's id() is the object's address, which is what the C API takes.
        return _api.PyCapsule_GetPointer(id(cap), _DLTENSOR)

    def _described(self, array: Any, code_bits: Tuple[int, int]) -> int:
        """A DLTensor built field by field, for what NumPy's DLPack export
        refuses (read-only arrays); its strides are whole, non-negative
        elements (_describable)."""
        ndim = array.ndim
        shape = (ctypes.c_int64 * max(ndim, 1))(*array.shape)
        strides = None
        if not array.flags.c_contiguous:
            strides = (ctypes.c_int64 * max(ndim, 1))(*(s // array.itemsize for s in array.strides))
        tensor = _native.DLTensor(
            array.ctypes.data,
            _CPU,
            ndim,
            _native.DLDataType(code_bits[0], code_bits[1], 1),
            shape,
            strides,
            0,
        )
        self._keep += [array, shape, strides, tensor]
        return ctypes.addressof(tensor)
