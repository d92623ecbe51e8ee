"""One exception root for osneural: `except OsneuralError` catches everything it raises on purpose.

Every error a caller may want to tell apart has a class here, and the data a handler needs (the
HTTP status to answer with, the index, what it expected and what it found) travels as named
attributes set by the constructor, never only inside the message (opensearch-py's errors work
the same way). Each class also inherits the builtin exception it replaced, so `except ValueError`
or `except RuntimeError` written against older releases still catches it.

Module-specific subclasses (`CheckpointError` in `osneural.encoders`, `SourceError` in
`osneural.ingest.source_index`, ...) live next to their code and derive from the classes here.
"""

from __future__ import annotations

from typing import Any


class OsneuralError(Exception):
    """Root of every error osneural raises on purpose."""


# ---------------------------------------------------------------- query side


class SpecError(OsneuralError, ValueError):
    """A malformed pipeline spec or search request; the message names the bad field (a 400)."""


class StageError(OsneuralError, ValueError):
    """The index cannot serve a stage of the spec: a missing field, codec or model (a 400 naming
    the stage)."""


class IngestError(OsneuralError, RuntimeError):
    """Ingestion cannot start or had to stop; `.summary` holds the progress made so far."""

    def __init__(self, message: str, summary: Any = None) -> None:
        super().__init__(message)
        self.summary = summary


class IndexMismatchError(StageError, IngestError):
    """The index was built with other encoders, codecs, dimensions or representations than the
    ones at hand: querying it would compare vectors of different spaces, writing to it would mix
    them. Raised by queries (a `StageError`) and by ingestion (an `IngestError`) alike.

    `index`, `expected` (what the index holds) and `found` (what this process has) are given
    where the caller knows them."""

    def __init__(self, message: str, *, index: str | None = None, expected: Any = None,
                 found: Any = None, summary: Any = None) -> None:
        IngestError.__init__(self, message, summary)
        self.index = index
        self.expected = expected
        self.found = found


class StaleCodecsError(IndexMismatchError):
    """The codec document belongs to another build of the index (generation mismatch).

    `status` 409: the request was fine, the cluster holds an inconsistent pair (usually for the
    seconds a rebuild takes); retrying later succeeds once ingestion has finished."""

    status = 409


class SearchError(OsneuralError, RuntimeError):
    """A query could not be answered (every first stage failed); `status` is the HTTP status
    to answer with."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class PartialResultsError(OsneuralError, RuntimeError):
    """Some shards did not answer (a node died mid-request): the hits are incomplete.

    OpenSearch answers 200 with `_shards.failed > 0` and whatever the other shards found, which
    would rank silently wrong; the `Searcher` retries the request once, else skips the stage.
    `what` names the request, `failed` / `total` count shards, `reasons` their failure types."""

    def __init__(self, what: str, failed: int, total: int | None,
                 reasons: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(f"{what}: {failed} of {total} shards failed "
                         f"({', '.join(reasons) or 'no reason given'})")
        self.what = what
        self.failed = failed
        self.total = total
        self.reasons = tuple(reasons)


class GuardError(OsneuralError):
    """A request refused before it reached OpenSearch; `status` is the HTTP answer, `kind` the
    OpenSearch-style error type, `reason` the message."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind
        self.reason = reason


# ---------------------------------------------------------------- shared layers


class EncoderError(OsneuralError):
    """Base class for every error raised by `osneural.encoders`."""


class CodecError(OsneuralError, ValueError):
    """A codec or codec bundle that cannot be used as given (malformed, unknown slot)."""


class ClusterConfigError(OsneuralError, ValueError):
    """A cluster address, credential or TLS option that cannot be used; names the option."""


class NodeError(OsneuralError, RuntimeError):
    """A local OpenSearch node could not be installed, started, healed or stopped."""


# ---------------------------------------------------------------- evaluation


class EvalError(OsneuralError, ValueError):
    """Evaluation input that cannot be used (data set, result file, tuning space)."""


__all__ = [
    "ClusterConfigError", "CodecError", "EncoderError", "EvalError", "GuardError",
    "IndexMismatchError", "IngestError", "NodeError", "OsneuralError", "PartialResultsError",
    "SearchError", "SpecError", "StageError", "StaleCodecsError",
]
