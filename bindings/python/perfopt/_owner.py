"""One owner class for every perfopt handle: close, with, garbage collection."""
from __future__ import annotations

import ctypes
from typing import Any, Optional

from ._status import PerfoptError, Status


class Owner:
    """An owner of one perfopt handle: `close()` frees it (again is a no-op),
    `with` closes at the end, and garbage collection closes what was left open.
    A close racing a call on another thread is safe: the library keeps the
    object alive until that call returns."""

    _handle: Optional[ctypes.c_void_p] = None
    _kind = "handle"

    @staticmethod
    def _free(handle: ctypes.c_void_p) -> None:
        raise NotImplementedError

    @property
    def _ptr(self) -> ctypes.c_void_p:
        handle = self._handle
        if handle is None:
            raise PerfoptError(Status.INVALID_HANDLE, f"the {self._kind} is closed")
        return handle

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            self._free(handle)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
