"""The preparation step of ingestion: index, mapping, codecs -- everything before the first batch.

Order of work, and why:

1. Read the index's state (it may not exist) and check an existing osneural index against this
   run (encoders' sha256, dense dimension, representations) before anything is written, so a
   wrong model never leaves half a batch behind. An index someone else created is adopted only
   when it is empty; osneural's fields and `_meta` are then added with `put_mapping` (OpenSearch
   itself refuses a field whose existing type differs).
2. For a new (or adopted) index, encode the first `train_docs` documents (read, not encoded,
   when the run has only dense and sparse, which train nothing on encodings), train the codecs on them
   (fixed seed) and store them under a fresh codec generation (a uuid4 written both in the codec
   document and in `_meta.osneural.codec_generation`, so a query node notices a rebuilt index),
   then create the index. Codecs go first so an old codec document of a deleted index of that
   name is overwritten before any document is written; if creating the index then fails (flood
   stage, an index template that rejects the mapping) the new codec document is deleted again,
   so no codecs outlive an index that never existed. The head sample's encodings are returned to
   be indexed, not recomputed (multi-vector encoding is the slowest stage).

`CorpusReader` and `IngestRun` are the driver-side halves both drivers share: reading batches
(rejected lines straight into the failure report) and merging per-batch results into the summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from osneural.ingest.batch import (
    BatchStep,
    RawBatch,
    StageTimer,
    encoder_meta,
    joined_text,
    load_encoders,
)
from osneural.ingest.bulk import FailureReport
from osneural.ingest.codec_store import delete_codecs, load_codecs, new_generation, save_codecs
from osneural.ingest.codec_training import codec_meta, train_codecs
from osneural.ingest.corpus import CorpusDocument, FieldNames, Rejected, corpus_files, iter_corpus
from osneural.ingest.plan import (
    BatchResult,
    CodecParams,
    EmptyCorpus,
    IndexMismatch,
    IndexOptions,
    IngestError,
    IngestPlan,
    IngestSummary,
)
from osneural.mappings import (
    DEFAULT_TEXT_ANALYZER,
    ID_FIELD,
    ID_PIPELINE,
    ID_PIPELINE_BODY,
    LEGACY_METADATA,
    SCHEMA_VERSION,
    compose_index_body,
    merge_app_mapping,
    normalize_representations,
    vectors_out_of_source,
)

from osneural.codecs import CodecBundle

# -- cluster errors -----------------------------------------------------------------------------


def hosts_of(client: Any) -> str:
    """The client's node URLs, for messages (never credentials)."""
    out = []
    for h in getattr(getattr(client, "transport", None), "hosts", None) or []:
        scheme = h.get("scheme") or ("https" if h.get("use_ssl") else "http")
        out.append(f"{scheme}://{h.get('host')}:{h.get('port', 9200)}")
    return ",".join(out) or "the cluster"


def connection_reason(exc: BaseException) -> str:
    """A short cause for an opensearch-py connection error (its str() is a nested repr)."""
    text = str(exc)
    for needle, short in (("Connection refused", "connection refused"),
                          ("timed out", "timed out"), ("Name or service not known", "unknown host"),
                          ("Connection reset", "connection reset"),
                          ("RemoteDisconnected", "connection closed by the server"),
                          ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
        if needle in text:
            return short
    return text[:200]


def unreachable(client: Any, exc: BaseException, what: str) -> IngestError:
    return IngestError(f"cannot reach OpenSearch at {hosts_of(client)} ({connection_reason(exc)}) "
                       f"while {what}; nothing more was written, rerun with --resume when it is up")


def transport_reason(exc: Any) -> str:
    """`type: reason` of an OpenSearch error answer."""
    info = getattr(exc, "info", None)
    err = info.get("error") if isinstance(info, dict) else None
    if isinstance(err, dict):
        root = (err.get("root_cause") or [err])[0]
        return f"{root.get('type', 'error')}: {root.get('reason', '')}"
    return f"{getattr(exc, 'status_code', '')} {getattr(exc, 'error', exc)}".strip()


# -- reading --------------------------------------------------------------------------------------


def count_lines(corpus: Any) -> int | None:
    if isinstance(corpus, str | Path):
        total = 0
        for f in corpus_files(corpus):
            with open(f, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
        return total
    return len(corpus) if hasattr(corpus, "__len__") else None


def describe_corpus(corpus: Any) -> str:
    return str(corpus) if isinstance(corpus, str | Path) or hasattr(corpus, "records") else "<iterable>"


@dataclass
class IngestRun:
    """Driver-side state of one run: summary, failure report, progress bar."""

    summary: IngestSummary
    report: FailureReport
    bar: Any = None
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, corpus: Any, index: str, failure_report: str | Path | None,
             progress: bool) -> IngestRun:
        if failure_report is None:
            base = Path(corpus).parent if isinstance(corpus, str | Path) else Path.cwd()
            failure_report = base / f"{index}.failures.jsonl"
        report = FailureReport(failure_report)
        summary = IngestSummary(index=index, representations=[])
        summary.failure_report = str(report.path)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=count_lines(corpus), unit="doc", desc=f"ingest {index}",
                       dynamic_ncols=True)
        return cls(summary, report, bar)

    def reject(self, r: Rejected) -> None:
        self.summary.failed += 1
        self.report.add(doc_id=r.doc_id, reason=r.reason, stage="read", source=r.source, line=r.line)
        if self.bar is not None:
            self.bar.update(1)

    def merge(self, result: BatchResult) -> None:
        """Add one batch's outcome to the summary and its failures to the report."""
        s = self.summary
        s.indexed += result.indexed
        s.skipped += result.skipped
        s.truncated += result.truncated
        s.empty += result.empty
        s.bulk_retries += result.retries
        s.failed += len(result.failures)
        for stage, secs in result.stage_seconds.items():
            s.add_seconds(stage, secs)
        for f in result.failures:
            self.report.add(doc_id=f.doc_id, reason=f.reason, stage=f.stage, source=f.source,
                            line=f.line)
        if result.unavailable and not s.aborted:
            s.aborted = result.unavailable
        if self.bar is not None:
            self.bar.update(result.docs)
            self.bar.set_postfix(failed=s.failed, refresh=False)

    def stop(self, message: str, cause: BaseException | None = None) -> IngestError:
        """The error that ends the run, with the summary so far (the report stays complete)."""
        self.summary.seconds = time.perf_counter() - self.started
        self.summary.aborted = self.summary.aborted or message
        if self.report.count == 0:
            self.summary.failure_report = None
        return IngestError(message, self.summary)

    def close(self) -> None:
        self.report.close()
        if self.bar is not None:
            self.bar.close()

    def finish(self) -> IngestSummary:
        self.summary.seconds = time.perf_counter() - self.started
        if self.report.count == 0:
            self.summary.failure_report = None
        return self.summary


class CorpusReader:
    """Batches of valid documents; rejected lines go to the run's failure report as read.

    Nothing is yielded until a document holding the title or a text field has been read (or
    `lookahead` documents have been): a `--title-field` / `--text-field` that no document has
    would otherwise index every document as empty -- and overwrite the representations of
    documents already indexed -- so it is refused before anything is written."""

    def __init__(self, corpus: Any, fields: FieldNames | None, batch_size: int,
                 run: IngestRun, lookahead: int = 10_000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.corpus = corpus
        self.fields = fields or FieldNames()
        self.batch_size = batch_size
        self.run = run
        self.valid_seen = 0
        self.lookahead = lookahead
        self._items = iter_corpus(corpus, self.fields)
        self._timer = StageTimer(run.summary.stage_seconds)

    def _batches(self) -> Iterator[list[CorpusDocument]]:
        batch: list[CorpusDocument] = []
        while True:
            with self._timer("read"):
                item = next(self._items, None)
            if item is None:
                break
            if isinstance(item, Rejected):
                self.run.reject(item)
                continue
            self.valid_seen += 1
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __iter__(self) -> Iterator[list[CorpusDocument]]:
        held: list[list[CorpusDocument]] = []
        batches = self._batches()
        for batch in batches:
            held.append(batch)
            if any(d.has_text_fields for d in batch):
                break
            if self.valid_seen >= self.lookahead:
                raise self.fields_error()
        else:
            if held:
                raise self.fields_error()
        yield from held
        held.clear()
        yield from batches

    def fields_error(self) -> IngestError:
        f = self.fields
        return IngestError(
            f"none of the first {self.valid_seen} documents of {describe_corpus(self.corpus)} "
            f"has the title field {f.title!r} or a text field ({', '.join(map(repr, f.text_paths))}"
            "); name the right ones with --title-field / --text-field (dotted paths into objects, "
            "several text fields as a comma list); nothing was written", self.run.summary)

    def empty_error(self) -> EmptyCorpus:
        return EmptyCorpus(
            f"corpus {describe_corpus(self.corpus)} holds no valid document "
            f"({self.run.summary.failed} rejected, see {self.run.report.path})", self.run.summary)


# -- the index ----------------------------------------------------------------------------------


@dataclass
class IndexState:
    """An existing index: its `_meta.osneural` (empty if foreign), properties and settings."""

    meta: dict[str, Any]
    properties: dict[str, Any]
    settings: dict[str, Any]
    source_excludes: tuple[str, ...] = ()
    #: the mapping's `dynamic` ("strict" on indices built before app fields were top-level)
    dynamic: str = "true"


def index_state(client: Any, index: str) -> IndexState | None:
    """The state of `index`, or None if it is missing."""
    if not client.indices.exists(index=index):
        return None
    mapping = client.indices.get_mapping(index=index)
    body = next(iter(mapping.values()))["mappings"]
    settings = next(iter(client.indices.get_settings(index=index, flat_settings=True).values()))
    return IndexState((body.get("_meta") or {}).get("osneural") or {},
                      body.get("properties") or {}, settings.get("settings") or {},
                      tuple((body.get("_source") or {}).get("excludes") or ()),
                      str(body.get("dynamic", "true")).lower())


def check_compatible(
    index: str, meta: dict[str, Any], props: dict[str, Any], reps: list[str],
    enc_meta: dict[str, dict[str, Any]],
) -> None:
    """Raise `IndexMismatch` when this run would write documents the index cannot hold."""
    if not meta:
        raise IndexMismatch(f"index {index!r} exists but was not created by osneural (no _meta.osneural)")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise IndexMismatch(
            f"index {index!r} has osneural schema {meta.get('schema_version')!r}; "
            f"this build writes {SCHEMA_VERSION}"
        )
    have = list(meta.get("representations") or [])
    if sorted(have) != sorted(reps):
        raise IndexMismatch(
            f"index {index!r} holds representations {have}; this run asks for {reps} "
            "(leave --representations out to use the index's own)",
            index=index, expected=have, found=reps)
    for kind, mine in enc_meta.items():
        theirs = (meta.get("encoders") or {}).get(kind) or {}
        if theirs.get("sha256") != mine.get("sha256"):
            raise IndexMismatch(
                f"index {index!r} was built with {kind} encoder {theirs.get('name')!r} "
                f"(sha256 {str(theirs.get('sha256'))[:12]}); this run uses {mine.get('name')!r} "
                f"(sha256 {str(mine.get('sha256'))[:12]})",
                index=index, expected=theirs.get("sha256"), found=mine.get("sha256"))
    dense_prop = props.get("dense") or {}
    dense_dim = (enc_meta.get("dense") or {}).get("dim")
    if "dense" in reps and dense_dim and dense_prop.get("dimension") not in (None, dense_dim):
        raise IndexMismatch(
            f"wrong embedding dimension: index {index!r} field 'dense' has dimension "
            f"{dense_prop.get('dimension')}, the dense encoder gives {dense_dim}",
            index=index, expected=dense_prop.get("dimension"), found=dense_dim)


def _setting_key(key: str) -> str:
    return key if key.startswith("index.") else f"index.{key}"


@dataclass
class Preparation:
    """What the preparation step hands the driver."""

    plan: IngestPlan
    encoders: dict[str, Any]
    #: encoded head batches (new index): to be written by the driver, not re-encoded
    head: list[tuple[list[CorpusDocument], RawBatch]]
    head_result: BatchResult
    #: settings to put back when the run ends (e.g. the refresh interval before bulk)
    restore_settings: dict[str, Any]
    #: batches read for the training sample but not encoded (no codec of this run trains on
    #: encodings): they go through the driver's pipelined loop like every later batch
    pending: list[list[CorpusDocument]] = field(default_factory=list)


def prepare(
    client: Any, index: str, reader: CorpusReader, run: IngestRun, *,
    representations: str | list[str] | None, resume: bool, encoders: Mapping[str, Any] | None,
    params: CodecParams, options: IndexOptions, max_retries: int = 5, initial_backoff: float = 1.0,
    in_place: bool = False,
) -> Preparation:
    """Check or create the index and its codecs; for a new index, encode the head sample.

    `in_place`: the documents already live in `index` (read from it), which osneural enriches
    with partial updates; a foreign index is then adopted although it holds documents."""
    from opensearchpy.exceptions import ConnectionError as OSConnectionError

    try:
        state = index_state(client, index)
    except OSConnectionError as exc:
        raise unreachable(client, exc, f"reading index {index!r}") from None
    reuse = state is not None and bool(state.meta)
    if reuse and representations is None:
        reps = normalize_representations(state.meta.get("representations") or None)
    else:
        reps = normalize_representations(representations)
    run.summary.representations = reps
    marker = None
    if in_place:
        from osneural.ingest.source_index import SourceError, check_in_place, resume_marker

        if state is None:
            raise SourceError(f"--in-place: index {index!r} does not exist; nothing was written")
        if not reuse:
            check_in_place(index, state.settings, reps)
        marker = resume_marker(reps, state.source_excludes)
        if resume and reuse and marker is None:
            run.summary.notes.append("no representation of this run marks an enriched document "
                                     "(sparse alone answers no exists query): --resume "
                                     "re-encodes every document")
    encs = load_encoders(reps, encoders)
    enc_meta = {kind: encoder_meta(kind, e) for kind, e in encs.items()}
    expected_dim = (enc_meta.get("dense") or {}).get("dim")
    plan = IngestPlan(index=index, representations=tuple(reps), encoder_meta=enc_meta,
                      bundle=CodecBundle(), params=params,
                      matryoshka_dims=tuple(sorted({int(d) for d in options.matryoshka_dims})),
                      expected_dim=expected_dim, generation=None,
                      resume=resume and reuse and (marker is not None or not in_place),
                      max_retries=max_retries, initial_backoff=initial_backoff,
                      in_place=in_place, resume_marker=marker if in_place else None)
    try:
        if reuse:
            assert state is not None
            return _prepare_existing(client, plan, state, encs, options, run.summary.notes)
        if state is not None and not in_place:
            count = client.count(index=index)["count"]
            if count:
                raise IndexMismatch(
                    f"index {index!r} exists, holds {count} documents and was not created by "
                    "osneural (no _meta.osneural); osneural adopts only an empty index -- use "
                    "another --index name or delete this one")
        return _prepare_new(client, plan, state, encs, reader, run, options)
    except OSConnectionError as exc:
        raise unreachable(client, exc, f"preparing index {index!r}") from None


def _prepare_existing(client: Any, plan: IngestPlan, state: IndexState, encs: dict[str, Any],
                      options: IndexOptions, notes: list[str]) -> Preparation:
    from opensearchpy.exceptions import TransportError

    reps = list(plan.representations)
    check_compatible(plan.index, state.meta, state.properties, reps, plan.encoder_meta)
    mdims = tuple((state.meta.get("fields") or {}).get("matryoshka") or plan.matryoshka_dims)
    bundle = load_codecs(client, plan.index)
    if bundle is None and ({"binary", "pq", "multivector"} & set(reps)):
        raise IndexMismatch(
            f"index {plan.index!r} exists but its codecs are missing from the codec store; "
            "delete the index and ingest again"
        )
    generation = state.meta.get("codec_generation")
    if bundle is not None and generation:
        stored = _stored_generation(client, plan.index)
        if stored != generation:
            raise IndexMismatch(
                f"index {plan.index!r} was built with codec generation {generation}, but the "
                f"codec document holds {stored}; its documents and codecs disagree -- delete "
                "the index and ingest again")
    expected_dim = (state.properties.get("dense") or {}).get("dimension", plan.expected_dim)
    dynamic = {_setting_key(k): v for k, v in options.settings}
    restore: dict[str, Any] = {}
    own = dynamic.get("index.refresh_interval", state.settings.get("index.refresh_interval"))
    loading = load_refresh(options.bulk_refresh_interval, own)
    if loading is not None:
        restore["index.refresh_interval"] = own
        dynamic["index.refresh_interval"] = loading
    if dynamic:
        try:
            client.indices.put_settings(index=plan.index, body=dynamic)
        except TransportError as exc:
            if isinstance(exc.status_code, int):
                raise IngestError(f"index {plan.index!r} exists and refuses settings {dynamic}: "
                                  f"{transport_reason(exc)}") from None
            raise
    _update_app_mapping(client, plan.index, state, options, notes)
    plan = dataclasses.replace(plan, bundle=bundle or CodecBundle(), matryoshka_dims=mdims,
                               expected_dim=expected_dim, generation=generation)
    return Preparation(plan, encs, [], BatchResult(), restore)


def _update_app_mapping(client: Any, index: str, state: IndexState, options: IndexOptions,
                        notes: list[str]) -> None:
    """Bring an existing osneural index up to today's app-field layout, additively.

    An index built before app fields were written at the top level has `dynamic: strict` (its
    app fields sit in a stored-only `metadata` object): `dynamic` is an updatable mapping
    parameter, so it is switched to `true` and re-ingested documents bring their fields. A
    user mapping's properties are added (OpenSearch itself refuses a changed field type)."""
    from opensearchpy.exceptions import TransportError

    update: dict[str, Any] = {}
    legacy = (state.properties.get(LEGACY_METADATA) or {}).get("enabled") is False
    if state.dynamic == "strict" and legacy:  # an app's own choice of strict is left alone
        update["dynamic"] = True
        notes.append(f"index {index!r} was built with a strict mapping (app fields stored only, "
                     "under 'metadata'); its mapping now takes app fields at the top level")
    app = options.app_mapping or {}
    if app.get("properties"):
        update["properties"] = app["properties"]
    for key in ("dynamic", "dynamic_templates", "date_detection", "numeric_detection"):
        if key in app:
            update[key] = app[key]
    if not update:
        return
    try:
        client.indices.put_mapping(index=index, body=update)
    except TransportError as exc:
        if isinstance(exc.status_code, int):
            raise IndexMismatch(f"index {index!r} refuses the {options.mapping_origin}: "
                                f"{transport_reason(exc)}; nothing was written") from None
        raise


def _stored_generation(client: Any, index: str) -> str | None:
    from osneural.ingest.codec_store import CODEC_INDEX

    resp = client.get(index=CODEC_INDEX, id=index, _source_includes=["generation"], ignore=404)
    return (resp.get("_source") or {}).get("generation") if resp.get("found") else None


def _refuse_if_creation_blocked(client: Any, index: str) -> None:
    """Refuse a new index before anything is encoded or written when the cluster blocks index
    creation (the disk monitor sets `cluster.blocks.create_index` past the flood-stage
    watermark). Otherwise the codec document is stored, the create is refused, and the cleanup
    delete can be refused too once the monitor makes `osneural-codecs` read-only, leaving codecs
    of an index that never existed. A caller not allowed to read cluster settings skips this;
    the cleanup after a refused create still applies."""
    from opensearchpy.exceptions import TransportError

    try:
        found = client.cluster.get_settings(flat_settings=True)
    except TransportError:
        return
    merged = {**(found.get("persistent") or {}), **(found.get("transient") or {})}
    if str(merged.get("cluster.blocks.create_index", "")).lower() == "true":
        raise IngestError(f"index {index!r} could not be created: the cluster's create-index block "
                          "is set (cluster.blocks.create_index, set by the disk monitor past the "
                          "flood-stage watermark); nothing was written")


#: representations whose codecs train on nothing the encoders produce (BM25 text; sparse's IDF table is
#: fitted on the texts): their training sample need not be encoded before the index exists
PLAIN_REPRESENTATIONS = frozenset({"text", "dense", "sparse"})


def _prepare_new(client: Any, plan: IngestPlan, state: IndexState | None, encs: dict[str, Any],
                 reader: CorpusReader, run: IngestRun, options: IndexOptions) -> Preparation:
    from opensearchpy.exceptions import TransportError

    if state is None:
        _refuse_if_creation_blocked(client, plan.index)
    params, reps = plan.params, list(plan.representations)
    step = BatchStep(plan, encs, client)
    head: list[tuple[list[CorpusDocument], RawBatch]] = []
    pending: list[list[CorpusDocument]] = []
    head_result = BatchResult()
    n_head = 0
    # Dense and sparse train nothing on encodings (the IDF table is fitted on the texts), so
    # their sample is read but not encoded here: encoding it now would run it with no bulk
    # request to overlap (the driver pipelines encoding with writes), which on a 334-document
    # first round of bench/peer.py was a fifth of the round.
    encoded_sample = not set(reps) <= PLAIN_REPRESENTATIONS
    for batch in reader:
        if encoded_sample:
            head_result.docs += len(batch)
            docs, raw = step.encode(batch, head_result)
            if docs:
                head.append((docs, raw))
                n_head += len(docs)
        else:
            pending.append(batch)
            n_head += len(batch)
        if n_head >= params.train_docs:
            break
    if n_head == 0:
        run.merge(head_result)
        raise reader.empty_error()
    if encoded_sample and not any(r.dense is not None or r.tokens is not None for _, r in head):
        run.merge(head_result)
        raise IngestError(f"the first {n_head} documents all have an empty title and text: the "
                          "codecs have nothing to train on; nothing was written", run.summary)
    timer = StageTimer(run.summary.stage_seconds)
    with timer("train_codecs"):
        encoded = [r for _, r in head if r.dense is not None or r.tokens is not None]
        dense = np.concatenate([r.dense for r in encoded]) if encoded and "dense" in encs else None
        tokens = ([t for r in encoded for t in r.tokens]
                  if encoded and "multivector" in encs else None)
        bundle = train_codecs(reps, dense, tokens, params, run.summary)
        fit_idf = getattr(encs.get("sparse"), "fit_idf", None)
        if callable(fit_idf):
            # IDF of the training sample, for inference-free sparse queries.
            sample = [b for b, _ in head] if encoded_sample else pending
            texts = [joined_text(d) for b in sample for d in b]
            bundle.params["idf"] = fit_idf(texts, use=False).to_dict()
    run.summary.codecs_trained = True
    generation = new_generation()
    expected_dim, mdims = plan.expected_dim, plan.matryoshka_dims
    meta = {
        "schema_version": SCHEMA_VERSION,
        "representations": reps,
        "encoders": plan.encoder_meta,
        "codecs": codec_meta(bundle),
        "codec_generation": generation,
        "fields": {
            "dense": {"dim": expected_dim, "space_type": options.space_type, "engine": options.engine}
            if "dense" in reps else None,
            "matryoshka": list(mdims),
            "fde": {"dim": bundle.fde.fde_dim} if bundle.fde is not None else None,
            "text_analyzer": options.text_analyzer or DEFAULT_TEXT_ANALYZER,
        },
        "codec_store": {"index": "osneural-codecs", "id": plan.index},
    }
    settings = {k.removeprefix("index."): v for k, v in options.settings}
    _id_pipeline(client, plan.index, state, settings, run.summary.notes)
    restore: dict[str, Any] = {}
    own = settings.get("refresh_interval",
                       state.settings.get("index.refresh_interval") if state is not None else None)
    loading = load_refresh(options.bulk_refresh_interval, own)
    if loading is not None:
        restore["index.refresh_interval"] = settings.get("refresh_interval")
        settings["refresh_interval"] = loading
    kwargs = {"text_analyzer": options.text_analyzer} if options.text_analyzer else {}
    body = compose_index_body(
        reps, dense_dim=expected_dim or 1,
        fde_dim=bundle.fde.fde_dim if bundle.fde is not None else None,
        fde_data_type=bundle.fde.data_type if bundle.fde is not None else "float",
        space_type=options.space_type, engine=options.engine, matryoshka_dims=mdims,
        meta=meta, settings=settings, **kwargs,
    )
    if not plan.in_place:
        merge_app_mapping(body, options.app_mapping, options.app_settings, options.mapping_origin)
    if state is None:  # the derived-source setting is static: only an index created here takes it
        vectors_out_of_source(body, derived_source_setting=_has_derived_source(client))
    # Codecs first: this overwrites any codec document an older index of this name left, before
    # any document is written. If the index then cannot be created, the codecs go again.
    try:
        save_codecs(client, plan.index, bundle, generation=generation)
    except TransportError as exc:
        if not isinstance(exc.status_code, int):
            raise
        raise IngestError(f"the codecs of {plan.index!r} could not be stored: "
                          f"{transport_reason(exc)}; nothing was written") from None
    try:
        if state is None:
            client.indices.create(index=plan.index, body=body)
        else:
            _adopt(client, plan.index, state, body, restore, run.summary.notes)
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the original error is the one to report
            # (a create whose answer was lost may still have made the index: keep its codecs)
            if state is not None or not client.indices.exists(index=plan.index):
                delete_codecs(client, plan.index)
        if isinstance(exc, TransportError) and isinstance(exc.status_code, int):
            what = "created" if state is None else "given osneural's mapping"
            raise IngestError(f"index {plan.index!r} could not be {what}: "
                              f"{transport_reason(exc)}; no codecs were kept") from None
        raise
    plan = dataclasses.replace(plan, bundle=bundle, generation=generation)
    run.summary.codec_generation = generation
    return Preparation(plan, encs, head, head_result, restore, pending)


def _has_derived_source(client: Any) -> bool:
    """Whether the cluster's k-NN knows `index.knn.derived_source.enabled` (OpenSearch 3.0+)."""
    try:
        number = str(client.info()["version"]["number"])
        return int(number.split(".")[0]) >= 3
    except Exception:  # an unreadable version: assume today's OpenSearch
        return True


def _id_pipeline(client: Any, index: str, state: IndexState | None, settings: dict[str, Any],
                 notes: list[str]) -> None:
    """Make `ID_PIPELINE` the index's final pipeline (in `settings`), so that `ID_FIELD` holds
    each document's id whoever writes it, and the query side reads ids from its doc values.

    Left out, with a note, where the user's settings or the existing index name another final
    pipeline, or where the cluster refuses the pipeline (no permission, no ingest node): the
    query side then reads `_id`, as for any index without it."""
    from opensearchpy.exceptions import TransportError

    theirs = settings.get("final_pipeline")
    if theirs is None and state is not None:
        theirs = state.settings.get("index.final_pipeline")
    if theirs is not None and theirs != ID_PIPELINE:
        notes.append(f"index {index!r} keeps its final pipeline {theirs!r}: first stages read "
                     f"hits' ids from _id, not from {ID_FIELD!r} doc values (slower)")
        return
    try:
        client.ingest.put_pipeline(id=ID_PIPELINE, body=ID_PIPELINE_BODY)
    except TransportError as exc:
        if not isinstance(exc.status_code, int):
            raise
        notes.append(f"the ingest pipeline {ID_PIPELINE!r} could not be stored "
                     f"({transport_reason(exc)}): first stages of {index!r} read hits' ids "
                     f"from _id, not from {ID_FIELD!r} doc values (slower)")
        return
    settings["final_pipeline"] = ID_PIPELINE


def _adopt(client: Any, index: str, state: IndexState, body: dict[str, Any],
           restore: dict[str, Any], notes: list[str]) -> None:
    """Give an existing empty index osneural's fields, `_meta` and dynamic settings."""
    from opensearchpy.exceptions import TransportError

    mappings = body["mappings"]
    needs_knn = any(p.get("type") == "knn_vector" for p in mappings.get("properties", {}).values())
    if needs_knn and str(state.settings.get("index.knn", "false")).lower() != "true":
        raise IndexMismatch(
            f"index {index!r} was created without index.knn=true, which its vector fields need "
            "and which can only be set when an index is created; recreate it with that setting")
    for name, prop in mappings.get("properties", {}).items():
        theirs = state.properties.get(name)
        if theirs is not None and theirs.get("type", "object") != prop.get("type", "object"):
            raise IndexMismatch(
                f"index {index!r} maps field {name!r} as {theirs.get('type', 'object')!r}; "
                f"osneural needs {prop.get('type')!r} there")
    static = ("number_of_shards", "codec", "number_of_routing_shards")
    wanted = body["settings"]["index"]
    for key in static:
        have = state.settings.get(f"index.{key}")
        if key in wanted and str(wanted[key]) != str(have):
            raise IndexMismatch(
                f"index {index!r} has index.{key}={have}; {key}={wanted[key]} can only be set "
                "when an index is created (leave it out, or use a new index)")
    # Settings before the mapping: the mapping carries `_meta`, the mark of an osneural index,
    # so it goes last, when nothing else can fail.
    dynamic = {f"index.{k}": v for k, v in wanted.items() if k not in (*static, "knn")}
    if "index.refresh_interval" in dynamic and "index.refresh_interval" in restore:
        restore["index.refresh_interval"] = state.settings.get("index.refresh_interval")
    if dynamic:
        client.indices.put_settings(index=index, body=dynamic)
    update = {k: v for k, v in mappings.items() if k in ("properties", "_meta")}
    # A field the index maps already with the same type (an app's own `title` text field with
    # its analyzer) stays as the app defined it: OpenSearch refuses a changed analyzer.
    update["properties"] = {k: v for k, v in update.get("properties", {}).items()
                            if k not in state.properties}
    excludes = sorted(set((mappings.get("_source") or {}).get("excludes") or ()))
    if excludes and not set(excludes) <= set(state.source_excludes):
        # Kept out of _source (served from doc values). OpenSearch lets an index without any
        # mapping take `_source.excludes` later, not one created with properties: then those
        # fields are stored in _source too (larger, same answers), and the summary says so.
        try:
            client.indices.put_mapping(index=index, body={
                **update, "_source": {"excludes": sorted(set(excludes) | set(state.source_excludes))}})
            return
        except TransportError as exc:
            if exc.status_code != 400 or "[_source]" not in transport_reason(exc):
                raise
            notes.append(f"index {index!r} cannot take _source.excludes {excludes} after its "
                         "creation; those fields are kept in _source as well")
    client.indices.put_mapping(index=index, body=update)


#: `index.refresh_interval` while a load runs on an index that leaves it unset (OpenSearch's
#: 1 s default, OpenSearch's own advice for bulk loads): 1,000 SciFact documents loaded at 58 /
#: 112 docs/s (dense / sparse) instead of 49-52 / 100-109 with a refresh every second, each
#: refresh being a new small segment to write and merge. 30 s rather than -1: a load that is
#: killed before it can restore the setting leaves an index that still refreshes.
LOAD_REFRESH_INTERVAL = "30s"


def load_refresh(option: str | None, own: Any) -> str | None:
    """The refresh interval to set while loading, or None to leave the index's `own`.

    `option` "auto" relaxes the interval only where nobody chose one (`own` unset): an index
    whose owner set an interval keeps it. None or "keep" never change it; anything else is the
    interval to load with. The run restores `own` and refreshes at its end either way."""
    if option is None or option == "keep":
        return None
    if option == "auto":
        return LOAD_REFRESH_INTERVAL if own in (None, "") else None
    return option


def restore_settings(client: Any, index: str, restore: Mapping[str, Any]) -> str | None:
    """Put back the settings changed for the bulk load; an error message instead of raising."""
    if not restore:
        return None
    try:
        client.indices.put_settings(index=index, body=dict(restore))
    except Exception as exc:  # noqa: BLE001 - reported, must not hide the run's own outcome
        return f"could not restore {dict(restore)} on {index!r}: {type(exc).__name__}"
    return None

