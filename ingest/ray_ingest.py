"""`ray_index_corpus`: the same ingestion as `index_corpus`, with the batches spread over Ray actors.

Why Ray Data: encoding is the bottleneck (single-digit documents per second per core with the
default encoders), it is embarrassingly parallel per batch, and Ray gives scheduling across
machines, actor restarts and task retries without a second ingestion loop here. What runs where:

* The driver runs the preparation step once (`osneural.ingest.prepare.prepare`): it checks or
  creates the index, trains the codecs on the head sample and stores them (codec document and
  index exist before any worker starts), and writes the head sample it already encoded. It reads
  the corpus (line numbers, rejected lines and duplicate ids need one reader) and cuts it into the
  same batches the single-process loop would.
* Each actor of the pool holds its own ONNX sessions (threads limited, so N actors share N cores)
  and its own OpenSearch client built from the `ClusterConfig` it was given (a config pickles; a
  client does not), and calls `BatchStep` -- the very step `index_corpus` calls -- on one batch.
* Results (counts, per-document failures, stage times) come back to the driver, which merges them
  into the one summary and failure report, and stops the run when a batch found the cluster
  unreachable. Writes are idempotent by `_id`, so a batch Ray retries after an actor died is
  simply written again, and `resume=True` skips what earlier runs wrote.

The driver does not hold the corpus: it spools the batches to a scratch file as it reads them
(`osneural.ingest.spool`; disk about the corpus's size, 8 bytes of memory per batch) and the pool
streams them back through a Ray Data source, one block per batch; the duplicate-id check keeps
old ids on disk (`osneural.ingest.seen_ids`). Driver memory is therefore flat in the corpus size.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from osneural.ingest.batch import BatchStep, load_encoders
from osneural.ingest.corpus import CorpusDocument, FieldNames
from osneural.ingest.plan import BatchResult, CodecParams, IndexOptions, IngestPlan, IngestSummary
from osneural.ingest.prepare import CorpusReader, IngestRun, prepare, restore_settings
from osneural.ingest.source_index import finish_source, plan_source
from osneural.ingest.spool import BatchSpool, read_batch

#: Small enough for a laptop or CI box; the payloads are a few MB of JSON per thousand documents.
DEFAULT_OBJECT_STORE_BYTES = 200 * 1024 * 1024


class IngestActor:
    """One Ray actor: its encoders, its client, and the shared per-batch step."""

    def __init__(self, plan: IngestPlan, cluster: Any, encoders: Mapping[str, Any] | None,
                 threads: int, spool: str) -> None:
        # numpy's BLAS sees only small matrices here; keep it from spinning against onnxruntime.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.client = cluster.client(pool_maxsize=4)
        encs = load_encoders(plan.representations, encoders,
                             intra_op_threads=threads, inter_op_threads=1)
        self.step = BatchStep(plan, encs, self.client)
        self.spool = spool

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for lo, hi in zip(batch["lo"], batch["hi"], strict=True):
            docs = [CorpusDocument(**d) for d in read_batch(self.spool, int(lo), int(hi))]
            out.append(json.dumps(self.step(docs).to_dict()))
        return {"result": np.array(out, dtype=object)}


def _start_ray(address: str | None, workers: int, init_kwargs: Mapping[str, Any] | None) -> bool:
    """Connect to (or start) Ray unless the caller already did; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=workers, object_store_memory=DEFAULT_OBJECT_STORE_BYTES)
    kwargs.update(init_kwargs or {})
    ray.init(**kwargs)
    return True


def ray_index_corpus(
    cluster: Any,
    corpus: str | Path | Iterable[Mapping[str, Any]],
    index: str,
    representations: str | list[str] | None = None,
    batch_size: int = 32,
    resume: bool = False,
    *,
    address: str | None = None,
    workers: int = 2,
    threads_per_worker: int = 1,
    encoders: Mapping[str, Any] | None = None,
    fields: FieldNames | None = None,
    failure_report: str | Path | None = None,
    progress: bool = True,
    codec_params: CodecParams | None = None,
    options: IndexOptions | None = None,
    max_retries: int = 5,
    initial_backoff: float = 1.0,
    refresh: bool = True,
    ray_init_kwargs: Mapping[str, Any] | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    in_place: bool = False,
    swap_alias: str | None = None,
    spool_dir: str | Path | None = None,
    **layout: Any,
) -> IngestSummary:
    """`index_corpus` on a pool of `workers` Ray actors; same arguments, summary and errors.

    `cluster` is an `osneural.connection.ClusterConfig` (actors open their own clients from it).
    `address` names a Ray cluster (`ray://head:10001`, `auto`); without it, and when Ray is not
    initialized yet, a local Ray with `workers` CPUs is started (and shut down at the end).
    `encoders`, when given, must pickle (they are shipped to every actor); by default each actor
    loads the exported defaults with `threads_per_worker` ONNX threads. `ray_remote_args` go to
    the actors (e.g. `{"max_restarts": 0}` to stop instead of restarting a dead actor).
    `spool_dir` holds the scratch copy of the batches (default: the system temp folder).
    """
    import ray
    from osneural.ingest.indexer import index_options
    from ray.exceptions import RayError

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if options is None:
        options = index_options(**layout)
    elif layout:
        raise TypeError(f"give either options= or layout keywords, not both ({sorted(layout)})")
    client = cluster.client()
    try:
        corpus, fields, options, index = plan_source(client, corpus, index, fields, options,
                                                     in_place, swap_alias)
    except BaseException:
        client.close()
        raise
    if hasattr(corpus, "slices"):  # a source index: one PIT slice per worker, read side by side
        corpus.slices = max(corpus.slices, workers)
    run = IngestRun.open(corpus, index, failure_report, progress)
    run.summary.notes += list(getattr(corpus, "notes", []))
    run.summary.workers = workers
    reader = CorpusReader(corpus, fields, batch_size, run)
    restore: dict[str, Any] = {}
    started = False
    stack = contextlib.ExitStack()
    try:
        prep = prepare(client, index, reader, run, representations=representations,
                       resume=resume, encoders=encoders, params=codec_params or CodecParams(),
                       options=options, max_retries=max_retries, initial_backoff=initial_backoff,
                       in_place=in_place)
        restore = prep.restore_settings
        run.merge(prep.head_result)
        if prep.head:
            driver_step = BatchStep(prep.plan, prep.encoders, client)
            for docs, raw in prep.head:
                result = BatchResult()
                driver_step.write(docs, raw, result)
                run.merge(result)
                if result.unavailable:
                    raise run.stop(result.unavailable)
        plan, pending = prep.plan, prep.pending
        del prep
        spool = stack.enter_context(BatchSpool(spool_dir))
        spool.write_all(itertools.chain(pending, reader))
        del pending
        bounds = spool.finish()
        if reader.valid_seen == 0:
            raise reader.empty_error()
        if spool.batches:
            loop_start = time.perf_counter()
            started = _start_ray(address, workers, ray_init_kwargs)
            ray.data.DataContext.get_current().enable_progress_bars = False
            # The dataset holds only each batch's byte range in the spool (two ints a batch),
            # one block per batch: every block exists from the start, so each free actor takes
            # the next one (a source that produced blocks one by one let the first free actor
            # take them all). Actors read their batch from the spool file themselves.
            ranges = [{"lo": int(lo), "hi": int(hi)} for lo, hi in zip(bounds[:-1], bounds[1:],
                                                                      strict=True)]
            ds = ray.data.from_items(ranges, override_num_blocks=min(len(ranges), 10_000))
            del ranges
            pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1)
            results = ds.map_batches(
                IngestActor, batch_size=1, batch_format="numpy", compute=pool, num_cpus=1,
                fn_constructor_kwargs={"plan": plan, "cluster": cluster, "encoders": encoders,
                                       "threads": threads_per_worker,
                                       "spool": str(spool.path)},
                **dict(ray_remote_args or {}))
            try:
                for row in results.iter_rows():
                    result = BatchResult.from_dict(json.loads(row["result"]))
                    run.merge(result)
                    run.summary.loop_docs += result.docs
                    if result.unavailable:
                        raise run.stop(result.unavailable)
            except RayError as exc:
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise run.stop(f"a Ray worker failed ({type(exc).__name__}: {first}); documents "
                               "written so far are kept (a batch another worker had in flight "
                               "may also have landed), rerun with resume to continue") from None
            # includes starting Ray (when not running yet) and the actors loading their encoders
            run.summary.loop_seconds = time.perf_counter() - loop_start
        if refresh:
            client.indices.refresh(index=index)
        finish_source(client, corpus, index, swap_alias, run)
    finally:
        stack.close()
        note = restore_settings(client, index, restore)
        if note:
            run.summary.notes.append(note)
        run.close()
        client.close()
        if started:
            ray.shutdown()
    return run.finish()
