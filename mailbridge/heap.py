"""Giving memory back to the system after large messages.

A 20 MB message is parsed into many large blocks; once they are freed, glibc
keeps the pages for the process to reuse, so a burst of large mail left a
server's workers hundreds of MiB larger than before it. `malloc_trim` hands
the free pages back (on glibc only; elsewhere this does nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# Trim after work on at least this many bytes of mail: below it, the pages
# are worth keeping for the next message.
TRIM_AFTER_BYTES = 4 * 1024 * 1024


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release_free_memory() -> None:
    """Collect garbage, then give the free heap pages back to the system."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
