"""`serve` workers cap their glibc malloc arenas (osneural.plugin.allocator).

glibc gives each new thread that allocates a new arena while it may create more (8 per core),
so N threads alive together deterministically make N more arenas; `malloc_info` lists them.
Each case runs in a fresh interpreter: the cap is per process and cannot be undone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from osneural.plugin.allocator import limit_arenas

SCRIPT = textwrap.dedent("""
    import ctypes, sys, tempfile, threading
    from osneural.plugin.allocator import limit_arenas

    applied = limit_arenas(2) if sys.argv[1] == "limit" else None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    barrier = threading.Barrier(7)

    def work():
        block = libc.malloc(4096)  # this thread's first malloc: it gets an arena now
        barrier.wait()  # all six alive together, so none reuses another's freed arena
        barrier.wait()
        libc.free(block)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    barrier.wait()
    with tempfile.TemporaryFile() as f:
        libc.fdopen.restype = ctypes.c_void_p
        stream = libc.fdopen(f.fileno(), b"w")
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fflush(ctypes.c_void_p(stream))
        f.seek(0)
        info = f.read().decode()
    barrier.wait()
    for t in threads:
        t.join()
    print(applied, info.count("<heap nr="))
""")


def arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | (env or {})
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         env=env, check=True, timeout=120).stdout.split()
    return out[0], int(out[1])


def test_six_threads_make_six_more_arenas_without_the_cap() -> None:
    applied, heaps = arenas("default")
    assert heaps >= 7  # the main arena and one per thread: what the cap is for


def test_the_cap_keeps_six_threads_on_two_arenas() -> None:
    applied, heaps = arenas("limit")
    assert applied == "True"
    assert heaps <= 2


def test_a_user_setting_is_left_alone() -> None:
    applied, heaps = arenas("limit", {"MALLOC_ARENA_MAX": "4"})
    assert applied == "False"  # not applied: glibc keeps the user's 4
    assert 2 < heaps <= 4


def test_bad_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        limit_arenas(0)
