"""`CodeCache`: a per-process cache of the binary doc values rescoring stages fetch.

Why: a MaxSim stage over 100 candidates reads about 2 MB of token codes from doc values, and
OpenSearch spends most of the stage's time reading, decompressing and base64-formatting them
(`took` of that fetch alone is several times the kernel's time). Candidates repeat across
queries: popular documents come back query after query. So the query layer keeps the bytes it
has fetched, and later queries fetch only the documents' versions.

It never answers with stale bytes. An entry is keyed by the index's build (uuid and codec
generation, `osneural.plugin.resources.IndexFingerprint`: a rebuilt or re-coded index shares
nothing with the old one), the field and the document id, and holds the document's
`_seq_no` / `_primary_term` from the request that read it. A cached document is served only
after a request sent for this query returned the same `_seq_no` and `_primary_term` for it, so a
document re-indexed in place (new text, new codes, new sequence number) is read again, and a
deleted one is missing, as without a cache. The versions and the bytes of the documents not
cached travel in one `_msearch` round trip.

Access is checked as without a cache. The versions are read with the caller's own client and
only for documents that have the field (an `exists` filter), so a document the caller may not
see, or whose field is hidden from them (field-level security), comes back from neither request.
And a server whose callers bring their own credentials keeps one partition per credential (the
`scope` of `fetch`, see `osneural.plugin.neural_handler`): bytes read by one caller are never
scored for another.

The query layer stays stateless: the cache is an optimisation that a restart empties, bounded in
bytes (`OSNEURAL_CODE_CACHE_MB`, default 128 per process, 0 turns it off), least recently used
first out.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

#: (index uuid, codec generation, scope, field, document id)
Key = tuple[str | None, str | None, str, str, str]
#: (seq_no, primary_term)
Version = tuple[int, int]
#: bytes an entry costs beyond its blob (key and tuple, roughly)
ENTRY_OVERHEAD = 64


def cache_budget_from_env() -> int:
    """Bytes per process from `OSNEURAL_CODE_CACHE_MB` (default 128; 0 turns the cache off)."""
    raw = os.environ.get("OSNEURAL_CODE_CACHE_MB", "").strip()
    if not raw:
        return 128 << 20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"OSNEURAL_CODE_CACHE_MB={raw!r}: expected a number of MiB >= 0") from None
    if mb < 0 or mb != mb:
        raise ValueError(f"OSNEURAL_CODE_CACHE_MB={raw!r}: expected a number of MiB >= 0")
    return int(mb * (1 << 20))


def _version(hit: dict[str, Any]) -> Version | None:
    seq, term = hit.get("_seq_no"), hit.get("_primary_term")
    if isinstance(seq, int) and isinstance(term, int) and seq >= 0:
        return seq, term
    return None


class CodeCache:
    """Doc-value bytes by (index build, field, id), checked against each document's version."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = cache_budget_from_env() if max_bytes is None else int(max_bytes)
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self._entries: OrderedDict[Key, tuple[Version, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Key) -> tuple[Version, bytes] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Key, version: Version, blob: bytes) -> None:
        size = len(blob) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        with self._lock:
            self._pop_locked(key)
            self._entries[key] = (version, blob)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                self._pop_locked(next(iter(self._entries)))

    def discard(self, key: Key) -> None:
        with self._lock:
            self._pop_locked(key)

    def _pop_locked(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1]) + ENTRY_OVERHEAD

    def fetch(
        self, client: Any, index: str, build: tuple[str | None, str | None], ids: Sequence[str],
        field: str, timeout_s: float | None = None, scope: str = "", *,
        id_field: str | None = None,
    ) -> dict[str, bytes]:
        """Raw bytes of `field` for each id that has it, as `fetch_codes` answers, reading from
        OpenSearch only the bytes this cache does not hold at the documents' current versions.
        `build` is the index's (uuid, codec generation); `scope` the caller's partition; hits'
        ids come from `id_field`'s doc values when given (from `_id` should a hit lack one)."""
        from osneural.plugin.stages.request import ids_from

        return ids_from(lambda ids_field: self._fetch(client, index, build, ids, field, timeout_s,
                                                      scope, ids_field), id_field)

    def _fetch(
        self, client: Any, index: str, build: tuple[str | None, str | None], ids: Sequence[str],
        field: str, timeout_s: float | None, scope: str, id_field: str | None,
    ) -> dict[str, bytes]:
        from osneural.plugin.rescoring.scores import coded_hits, codes_body
        from osneural.plugin.stages.request import complete, hit_id, with_ids

        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        keys = {doc_id: (build[0], build[1], scope, field, doc_id) for doc_id in ids}
        cached = {doc_id: e for doc_id in ids if (e := self.get(keys[doc_id])) is not None}
        missing = [doc_id for doc_id in ids if doc_id not in cached]
        params = {"request_timeout": max(timeout_s, 0.001)} if timeout_s is not None else {}
        if not cached:
            resps = [complete(client.search(index=index,
                                            body=codes_body(missing, field, True, id_field),
                                            **params), f"fetch of {field!r}")]
        else:
            # one round trip: the cached documents' versions, and the others' bytes
            lines: list[dict[str, Any]] = [
                {"index": index},
                with_ids({"size": len(cached),
                          "query": {"bool": {"filter": [{"ids": {"values": list(cached)}},
                                                        {"exists": {"field": field}}]}},
                          "_source": False, "seq_no_primary_term": True,
                          "track_total_hits": False}, id_field),
            ]
            if missing:
                lines += [{"index": index}, codes_body(missing, field, True, id_field)]
            out = client.msearch(body=lines, **params)
            resps = []
            for item in out.get("responses") or []:
                if "error" in item:
                    from osneural.errors import StageError

                    raise StageError(f"fetch of {field!r}: {item['error']}")
                resps.append(complete(item, f"fetch of {field!r}"))
        result: dict[str, bytes] = {}
        if cached:
            for hit in resps[0]["hits"]["hits"]:
                doc_id = hit_id(hit, id_field)
                entry = cached.get(doc_id)
                if entry is not None and _version(hit) == entry[0]:
                    result[doc_id] = entry[1]
            stale = [doc_id for doc_id in cached if doc_id not in result]
            resps = resps[1:]
        else:
            stale = []
        for resp in resps:
            for doc_id, hit, blob in coded_hits(resp, field, id_field, keys):
                result[doc_id] = blob
                version = _version(hit)
                if version is not None:
                    self.put(keys[doc_id], version, blob)
        with self._lock:
            self.hits += len(cached) - len(stale)
            self.misses += len(missing)
        if stale:  # re-indexed or deleted since cached: dropped, then read like any other miss
            for doc_id in stale:
                self.discard(keys[doc_id])
            result.update(self._fetch(client, index, build, stale, field, timeout_s, scope,
                                      id_field))
        return result
