"""The check that a caller may search an index, made before any encoder runs for them.

In `--auth passthrough` mode, every request osneural makes for an `ext.osneural` search carries the
caller's credential, so OpenSearch's security plugin refuses what they may not read. One check
comes first anyway: a size-0 search of the index as the caller, before any encoder runs for them
and before the index description (cached for all callers) shapes their answer. It costs a round
trip, about 1.4 ms at p50 on a local node: 10% of a dense query.

A caller who passed it is not checked again for `OSNEURAL_ACCESS_CHECK_S` seconds (default 10;
0 checks every request), per credential (a digest of the forwarded `Authorization` header) and
index. Within that window a revoked permission still refuses every request osneural makes for
the caller, since each of them carries the credential: what the window skips is only the early
refusal, so an encoder may run once more for someone OpenSearch now turns away. The security
plugin itself caches a user's roles for 60 minutes by default (`plugins.security.cache.ttl_minutes`).
Refusals are never remembered: a caller given access is let in at their next request.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any

#: remembered (credential, index) pairs per process; the oldest go first beyond it
MAX_ENTRIES = 4096


def window_from_env() -> float:
    """Seconds from `OSNEURAL_ACCESS_CHECK_S` (default 10; 0 checks every request)."""
    raw = os.environ.get("OSNEURAL_ACCESS_CHECK_S", "").strip()
    if not raw:
        return 10.0
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"OSNEURAL_ACCESS_CHECK_S={raw!r}: expected seconds >= 0") from None
    if not seconds >= 0:  # NaN too
        raise ValueError(f"OSNEURAL_ACCESS_CHECK_S={raw!r}: expected seconds >= 0")
    return seconds


class AccessCheck:
    """The size-0 search as the caller, remembered for `window_s` after it passes."""

    def __init__(self, window_s: float | None = None, clock: Any = time.monotonic) -> None:
        self.window_s = window_from_env() if window_s is None else window_s
        self._clock = clock
        self._passed: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.checks = 0  # round trips made (the rest were remembered)

    def _remembered(self, key: tuple[str, str]) -> bool:
        with self._lock:
            until = self._passed.get(key)
            if until is None:
                return False
            if until <= self._clock():
                del self._passed[key]
                return False
            return True

    def passed(self, index: str, scope: str) -> bool:
        """Whether the credential `scope` passed the check for `index` within the window: the
        caller then needs no round trip, nor a worker thread to wait for one."""
        return self.window_s > 0 and self._remembered((scope, index))

    def check(self, who: Any, index: str, scope: str) -> None:
        """Raise what OpenSearch answers (401, 403, 404) when `who` may not search `index`;
        `scope` names the credential (`neural_handler.caller_scope`)."""
        key = (scope, index)
        if self.window_s > 0 and self._remembered(key):
            return
        who.search(index=index, body={"size": 0, "query": {"match_none": {}},
                                      "track_total_hits": False})
        with self._lock:
            self.checks += 1
            if self.window_s > 0:
                self._passed[key] = self._clock() + self.window_s
                self._passed.move_to_end(key)
                while len(self._passed) > MAX_ENTRIES:
                    self._passed.popitem(last=False)
