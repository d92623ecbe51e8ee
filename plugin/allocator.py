"""glibc malloc settings for a long-running `serve` worker.

glibc gives each new thread that allocates an arena of its own (unless a finished thread's arena
is free), up to 8 per core. A `serve` worker starts threads all the time (request threads, every neural search's
stage pool, onnxruntime's and the HTTP clients' work), so it ends up with a dozen arenas, each
holding freed but fragmented memory that is never handed back. Its resident memory then creeps
up for an hour: in `bench/soak.py` (60 min of mixed traffic, 2 workers) each worker grew 13%
after the first 5 minutes. Measured side by side under the same traffic (`bench/serve_memory.py`:
one single-worker `serve` per setting, same node, 2 client processes each, 12 minutes, RSS from
292 MB after warm-up): 463 MB with glibc's default arenas, 361 MB with two, flat from minute 3,
at the same request rate (1,176 and 1,173 requests); turning off onnxruntime's own memory arena
(452 MB) or calling `malloc_trim` every 30 s (443 MB) did far less. So each worker caps its
arenas at start.

The cap is set with `mallopt`, so it holds from that call on whatever started the process; a
`MALLOC_ARENA_MAX` the user set is left as it is (they asked for something else).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

#: malloc arenas per serve worker: the main one plus one for all other threads
SERVE_ARENAS = 2
#: glibc's `mallopt` parameter number for the arena cap (malloc.h: M_ARENA_MAX)
M_ARENA_MAX = -8

log = logging.getLogger("osneural.serve")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # mallopt and malloc_info are glibc's; musl and other C libraries have neither
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def limit_arenas(arenas: int = SERVE_ARENAS) -> bool:
    """Cap this process's glibc malloc arenas at `arenas` (not below 1); True when applied.

    A no-op (False) without glibc, or when MALLOC_ARENA_MAX is set in the environment."""
    if arenas < 1:
        raise ValueError("arenas must be at least 1")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(M_ARENA_MAX, int(arenas)) != 1:  # mallopt returns 1 on success
        log.warning("could not cap malloc arenas at %d", arenas)
        return False
    return True
