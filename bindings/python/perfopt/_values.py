"""Python values to perfopt_value trees (arguments of any TorchScript kind)
and result trees back to Python: ints, floats, bools (NumPy's scalars too),
strings, None, lists, tuples, and arrays or tensors (as DLPack views in,
NumPy or torch out). Ints outside int64 are refused, not wrapped. The
library converts each argument to the type the method's schema wants (an int
where a float is wanted, a list where a tuple is), so Python passes its values
as they are."""
from __future__ import annotations

import ctypes
from typing import Any, Callable, Dict, List, Sequence

from . import _native
from ._checks import INT64, out_of_range
from ._tensors import DLPackOutput, InputBatch

_VALUE_SIZE = ctypes.sizeof(_native.perfopt_value)


def is_tensor(value: Any) -> bool:
    """Arrays and tensors go in as DLPack views; everything else (NumPy's
    scalars included) as a value."""
    module = type(value).__module__
    if module.startswith("torch"):
        return True
    return module.startswith("numpy") and not is_numpy_scalar(value)


_numpy_scalar_types: Dict[type, bool] = {}


def is_numpy_scalar(value: Any) -> bool:
    """np.int64(16000), np.float32(0.5), np.bool_(True)...: numbers, as
    Python's are, not 0-d tensors. Asked of every array on every call, so
    the answer is kept per type."""
    cls = type(value)
    known = _numpy_scalar_types.get(cls)
    if known is None:
        import numpy as np  # already imported: `value` is one of its objects

        known = _numpy_scalar_types[cls] = issubclass(cls, np.generic)
    return known


def numpy_number(value: Any) -> Any:
    """A NumPy scalar as the Python bool, int or float it holds (item()
    would keep a longdouble as it is, and turn a datetime into a date)."""
    kind = value.dtype.kind
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return int(value)
    if kind == "f":
        return float(value)
    raise _unsupported(value)


def _unsupported(value: Any) -> TypeError:
    return TypeError(
        f"perfopt passes tensors (NumPy arrays, torch tensors), int, float, bool, str, None, "
        f"and lists and tuples of them, not {type(value).__name__}"
    )


class ValueBatch:
    """perfopt_values describing Python arguments, kept alive for one call."""

    def __init__(self, values: Sequence[Any]):
        self._keep: List[Any] = []
        self.count = len(values)
        self.array = (_native.perfopt_value * max(self.count, 1))()
        for argument, (slot, value) in enumerate(zip(self.array, values)):
            self._fill(slot, value, argument)
        self.pointer = self.array if self.count else None

    def _fill(self, slot: Any, value: Any, argument: int) -> None:
        """`slot` describing `value`, an item of argument number `argument`
        (counted from 0, as perfopt's messages count them)."""
        slot.struct_size = _VALUE_SIZE
        if value is None:
            slot.kind = _native.VALUE_NONE
        elif isinstance(value, bool):  # before int: bool is an int in Python
            slot.kind = _native.VALUE_BOOL
            slot.int_value = int(value)
        elif isinstance(value, int):
            # ctypes would wrap it to 64 bits: the model would get another number.
            if not INT64.low <= value <= INT64.high:
                raise out_of_range(f"an int in argument {argument}", value, INT64)
            slot.kind = _native.VALUE_INT
            slot.int_value = value
        elif isinstance(value, float):
            slot.kind = _native.VALUE_DOUBLE
            slot.double_value = value
        elif isinstance(value, str):
            data = value.encode("utf-8")
            buffer = ctypes.create_string_buffer(data, len(data) + 1)
            self._keep.append(buffer)
            slot.kind = _native.VALUE_STRING
            slot.string = ctypes.addressof(buffer)
            slot.length = len(data)
        elif isinstance(value, (list, tuple)):
            items = (_native.perfopt_value * max(len(value), 1))()
            self._keep.append(items)
            for item_slot, item in zip(items, value):
                self._fill(item_slot, item, argument)
            slot.kind = _native.VALUE_TUPLE if isinstance(value, tuple) else _native.VALUE_LIST
            slot.items = ctypes.cast(items, ctypes.POINTER(_native.perfopt_value))
            slot.length = len(value)
        elif is_tensor(value):
            batch = InputBatch([value])
            self._keep.append(batch)
            slot.kind = _native.VALUE_TENSOR
            slot.tensor = ctypes.cast(batch.pointer, ctypes.POINTER(_native.DLTensor))
        elif type(value).__module__.startswith("numpy") and is_numpy_scalar(value):
            self._fill(slot, numpy_number(value), argument)
        else:
            raise _unsupported(value)


def read_result(root: Any, convert: Callable[[DLPackOutput], Any]) -> Any:
    """A perfopt_value result tree as Python values; tensors are taken out of
    the tree (their `managed` set to NULL) and converted with `convert`."""
    kind = root.kind
    if kind == _native.VALUE_NONE:
        return None
    if kind == _native.VALUE_INT:
        return int(root.int_value)
    if kind == _native.VALUE_BOOL:
        return bool(root.int_value)
    if kind == _native.VALUE_DOUBLE:
        return float(root.double_value)
    if kind == _native.VALUE_STRING:
        return ctypes.string_at(root.string, root.length).decode("utf-8")
    if kind in (_native.VALUE_LIST, _native.VALUE_TUPLE):
        items = [read_result(root.items[i], convert) for i in range(root.length)]
        return tuple(items) if kind == _native.VALUE_TUPLE else items
    if kind == _native.VALUE_TENSOR:
        # A pointer field shares the struct's memory: copy the address out
        # before clearing the field (taken: perfopt_value_free leaves it alone).
        address = ctypes.cast(root.managed, ctypes.c_void_p).value or 0
        root.managed = None
        return convert(DLPackOutput(address))
    raise ValueError(f"unknown value kind {kind}")
