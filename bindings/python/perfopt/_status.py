"""Status codes and the exception that carries perfopt's message."""
from __future__ import annotations

import ctypes
import enum
import json
from typing import Any, Callable

from . import _native


class Status(enum.IntEnum):
    """perfopt_status codes (include/perfopt.h); a test checks them against the header."""

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
    NOT_A_FILE = 21
    UNSUPPORTED_MODEL = 22
    FORKED_CHILD = 23


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


def last_error() -> str:
    raw = _native.lib().perfopt_last_error()
    return raw.decode("utf-8", "replace") if raw else "no message"


def check(status: int) -> None:
    if status != Status.OK:
        raise PerfoptError(status, last_error())


def read_json(call: Callable[[Any, int, Any], int], size: int = 4096) -> Any:
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
        check(status)
        return json.loads(buf.value.decode("utf-8"))
