"""`index_corpus`: corpus -> encoders -> codecs -> OpenSearch in one process, resumable by `_id`.

The work is split in two steps that the Ray path (`osneural.ingest.ray_ingest`) shares:
`osneural.ingest.prepare.prepare` checks or creates the index and trains and stores the codecs
(once, before any document is written), and `osneural.ingest.batch.BatchStep` turns one batch
into index writes (resume check, encode, codecs, documents, bulk with retries). This module is
only the single-process loop around them: read batches, run the step, merge results. Per-stage
wall time is summed so the summary shows where time went.

Names other modules and tests import from here (`CodecParams`, `IngestError`, `train_codecs`,
`codec_meta`, ...) are re-exported from the modules that now hold them.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from osneural.ingest.batch import BatchStep, encoder_meta, load_encoders
from osneural.ingest.codec_training import (
    _divisor_at_most,
    _training_rows,
    codec_meta,
    train_codecs,
)
from osneural.ingest.corpus import FieldNames
from osneural.ingest.plan import (
    STAGES,
    BatchResult,
    CodecParams,
    EmptyCorpus,
    IndexMismatch,
    IndexOptions,
    IngestError,
    IngestSummary,
)
from osneural.ingest.prepare import (
    CorpusReader,
    IngestRun,
    check_compatible,
    prepare,
    restore_settings,
    unreachable,
)
from osneural.ingest.source_index import finish_source, plan_source

__all__ = [
    "STAGES", "CodecParams", "EmptyCorpus", "IndexMismatch", "IndexOptions", "IngestError",
    "IngestSummary", "_divisor_at_most", "_training_rows", "check_compatible", "codec_meta",
    "encoder_meta", "index_corpus", "index_options", "load_encoders", "train_codecs",
]


def index_options(
    *, space_type: str = "cosinesimil", engine: str = "lucene", text_analyzer: str | None = None,
    matryoshka_dims: Iterable[int] = (), index_settings: Mapping[str, Any] | None = None,
    shards: int | None = None, replicas: int | None = None,
    bulk_refresh_interval: str | None = "auto",
) -> IndexOptions:
    """`IndexOptions` from keyword arguments (shards/replicas folded into the settings)."""
    settings = dict(index_settings or {})
    if shards is not None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        settings["number_of_shards"] = int(shards)
    if replicas is not None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        settings["number_of_replicas"] = int(replicas)
    return IndexOptions(space_type=space_type, engine=engine, text_analyzer=text_analyzer,
                        matryoshka_dims=tuple(sorted({int(d) for d in matryoshka_dims})),
                        settings=tuple(settings.items()),
                        bulk_refresh_interval=bulk_refresh_interval)


def index_corpus(
    client: Any,
    corpus: str | Path | Iterable[Mapping[str, Any]],
    index: str,
    representations: str | list[str] | None = None,
    batch_size: int = 32,
    resume: bool = False,
    *,
    encoders: Mapping[str, Any] | None = None,
    fields: FieldNames | None = None,
    failure_report: str | Path | None = None,
    progress: bool = True,
    codec_params: CodecParams | None = None,
    options: IndexOptions | None = None,
    max_retries: int = 5,
    initial_backoff: float = 1.0,
    refresh: bool = True,
    in_place: bool = False,
    swap_alias: str | None = None,
    **layout: Any,
) -> IngestSummary:
    """Encode `corpus` and bulk-load it into `index` with every chosen representation.

    `corpus` may also be an existing index (`osneural.ingest.source_index.open_source`): its
    documents are copied with all their fields and the source's mapping into `index`, or, with
    `in_place`, enriched where they are. `swap_alias` then moves that alias from the source to
    `index` in one `_aliases` call, when no document failed.

    `corpus` is a JSONL file, a folder of them (BEIR layout), or an iterable of dicts with the
    `fields` names. `encoders` maps kind -> encoder to use instead of the exported defaults.
    `resume` skips ids already in the index; without it, existing ids are overwritten (writes are
    idempotent by `_id`). Rejected documents go to `failure_report` (default
    `<corpus folder or cwd>/<index>.failures.jsonl`). The index layout comes from `options`, or
    from `index_options(**layout)` keywords (`space_type`, `engine`, `matryoshka_dims`,
    `index_settings`, `shards`, `replicas`, `bulk_refresh_interval`, `text_analyzer`).
    Raises `IndexMismatch` before any write when the index was built differently, `EmptyCorpus`
    when nothing is valid, and `IngestError` (with `.summary`) when the cluster stays
    unreachable; a rerun with `resume=True` continues.
    """
    if options is None:
        options = index_options(**layout)
    elif layout:
        raise TypeError(f"give either options= or layout keywords, not both ({sorted(layout)})")
    corpus, fields, options, index = plan_source(client, corpus, index, fields, options,
                                                 in_place, swap_alias)
    run = IngestRun.open(corpus, index, failure_report, progress)
    run.summary.notes += list(getattr(corpus, "notes", []))
    reader = CorpusReader(corpus, fields, batch_size, run)
    restore: dict[str, Any] = {}
    try:
        prep = prepare(client, index, reader, run, representations=representations,
                       resume=resume, encoders=encoders, params=codec_params or CodecParams(),
                       options=options, max_retries=max_retries, initial_backoff=initial_backoff,
                       in_place=in_place)
        restore = prep.restore_settings
        step = BatchStep(prep.plan, prep.encoders, client)
        run.merge(prep.head_result)
        _write_head(step, prep.head, run)
        pending = prep.pending
        del prep
        loop_start = time.perf_counter()
        _pipelined(step, itertools.chain(pending, reader), run)
        run.summary.loop_seconds = time.perf_counter() - loop_start
        if reader.valid_seen == 0:
            raise reader.empty_error()
        if refresh:
            _refresh(client, index, run)
        finish_source(client, corpus, index, swap_alias, run)
    finally:
        note = restore_settings(client, index, restore)
        if note:
            run.summary.aborted = f"{run.summary.aborted}; {note}" if run.summary.aborted else note
        run.close()
    return run.finish()


def _write_head(step: BatchStep, head: list[tuple[list[Any], Any]], run: IngestRun) -> None:
    """Write the encoded head sample, building batch i+1's documents (codecs) while batch i's
    bulk request is in flight; one write in flight, results merged in corpus order as in
    `_pipelined`. Without the overlap a small corpus, which is all head, waited for every bulk
    request with nothing else to do."""
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="osneural-bulk") as writer:
        in_flight: tuple[cf.Future, BatchResult] | None = None

        def finish(write: cf.Future, result: BatchResult) -> None:
            write.result()
            run.merge(result)
            if result.unavailable:
                raise run.stop(result.unavailable)

        for docs, raw in head:
            result = BatchResult()  # docs=0: the head was counted when it was read
            docs, actions = step.build(docs, raw, result)
            if in_flight is not None:
                (write, written), in_flight = in_flight, None
                finish(write, written)
            in_flight = (writer.submit(step.send, docs, actions, result), result)
        if in_flight is not None:
            finish(*in_flight)


def _pipelined(step: BatchStep, reader: Iterable[Any], run: IngestRun) -> None:
    """Encode batch i+1 while batch i's bulk request is in flight.

    Encoding is client CPU and the bulk call is mostly the node's work (parsing, HNSW inserts)
    plus the wait for it, so overlapping them takes the bulk time off the critical path. One write
    is in flight at a time and results are merged in corpus order, so the summary, the failure
    report and `--resume` see exactly what the sequential loop would. When a write finds the
    cluster unreachable, the batch encoded meanwhile is dropped unwritten and uncounted (as if
    never read): a `--resume` rerun picks it up."""
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="osneural-bulk") as writer:
        in_flight: tuple[cf.Future, BatchResult] | None = None

        def finish(result: BatchResult, write: cf.Future | None = None) -> None:
            if write is not None:
                write.result()  # re-raises what the write raised (IndexMismatch, ...)
            run.merge(result)
            run.summary.loop_docs += result.docs
            if result.unavailable:
                raise run.stop(result.unavailable)

        for batch in reader:
            result, todo, raw = step.encode_batch(batch)
            if in_flight is not None:
                (write, written), in_flight = in_flight, None
                finish(written, write)
            if result.unavailable or not todo:
                finish(result)
            else:
                in_flight = (writer.submit(step.write, todo, raw, result), result)
        if in_flight is not None:
            finish(in_flight[1], in_flight[0])


def _refresh(client: Any, index: str, run: IngestRun) -> None:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from osneural.ingest.batch import StageTimer

    with StageTimer(run.summary.stage_seconds)("bulk"):
        try:
            client.indices.refresh(index=index)
        except OSConnectionError as exc:
            raise unreachable(client, exc, "refreshing the index") from None
