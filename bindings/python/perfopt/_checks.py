"""Arguments checked before they reach C. ctypes converts some values
silently into something else: an int is wrapped to its C type's width
(2**64 + 3 arrives as 3, 2**63 as -2**63) and a string is cut at its first
NUL ("encode\\0anything" names encode). perfopt would then act on a value the
caller never passed, so both are refused here, naming the argument."""
from __future__ import annotations

import operator
from typing import Any, NamedTuple, Optional


class CInt(NamedTuple):
    """A C integer type's name and range."""

    name: str
    low: int
    high: int


INT32 = CInt("int32", -(2**31), 2**31 - 1)
UINT32 = CInt("uint32", 0, 2**32 - 1)
INT64 = CInt("int64", -(2**63), 2**63 - 1)


def out_of_range(name: str, number: int, ctype: CInt) -> OverflowError:
    return OverflowError(f"{name} is {number}, outside {ctype.name} ({ctype.low} to {ctype.high})")


def c_int(value: Any, name: str, ctype: CInt) -> int:
    """`value` as a Python int that fits `ctype`. Ints, bools and NumPy
    integers pass (operator.index); a float or a string is a TypeError, as
    ctypes would raise, but naming the argument."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not ctype.low <= number <= ctype.high:
        raise out_of_range(name, number, ctype)
    return number


def c_string(value: Optional[str], name: str) -> Optional[bytes]:
    """`value` as UTF-8 for a `const char *` (None stays NULL). A NUL inside
    it would end the string early in C, so it is refused."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{name} contains a NUL character, which would end it early in C: {value!r}")
    return value.encode("utf-8")
