"""The per-batch step of ingestion: resume check -> encode -> codecs -> documents -> bulk.

`BatchStep` is the one copy of this loop body. The single-process driver
(`osneural.ingest.indexer.index_corpus`) and every Ray actor (`osneural.ingest.ray_ingest`) call
it with the same frozen `IngestPlan`, so documents written by either are identical. It never
raises for one bad document: a document its encoders or the document builder refuse is retried
alone to find the culprit, reported as one `DocFailure`, and the rest of the batch is written. It
does not raise for an unreachable cluster either: it returns `BatchResult.unavailable`, and the
driver stops the run (every later batch would fail the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from osneural.ingest.bulk import BulkWriter, ClusterUnavailable, is_retryable
from osneural.ingest.corpus import CorpusDocument
from osneural.ingest.documents import EncodedBatch, build_documents, matryoshka
from osneural.ingest.plan import BatchResult, CodecParams, DocFailure, IndexMismatch, IngestPlan
from osneural.mappings import NEEDS_DENSE, NEEDS_TOKENS

from osneural.codecs import code_tokens, pool_tokens

# -- encoders ---------------------------------------------------------------------------------


def needed_kinds(reps: Sequence[str]) -> list[str]:
    """Encoder kinds these representations need, in a fixed order."""
    kinds = []
    if NEEDS_DENSE & set(reps):
        kinds.append("dense")
    if "sparse" in reps:
        kinds.append("sparse")
    if NEEDS_TOKENS & set(reps):
        kinds.append("multivector")
    return kinds


def load_encoders(reps: Sequence[str], given: Mapping[str, Any] | None = None,
                  **load_kwargs: Any) -> dict[str, Any]:
    """The encoder of every kind these representations need: given ones first, else defaults.

    `load_kwargs` go to the default loader (e.g. `intra_op_threads=1` for a Ray actor that
    shares its cores with others). Default encoders load in OSNEURAL_DOCUMENT_PRECISION
    (`auto` unless set: int8 for dense, sparse and multivector when exported, see
    `osneural.encoders.defaults.INT8_DOCUMENT_KINDS` for the measured quality)."""
    if "precision" not in load_kwargs:
        from osneural.encoders.defaults import precision_from_env

        load_kwargs = {**load_kwargs, "precision": precision_from_env("OSNEURAL_DOCUMENT_PRECISION")}
    out: dict[str, Any] = {}
    for kind in needed_kinds(reps):
        if given and kind in given:
            out[kind] = given[kind]
            continue
        from osneural.encoders import load_default

        out[kind] = load_default(kind, documents=True, **load_kwargs)
    return out


def _manifest(encoder: Any) -> dict[str, Any]:
    manifest = getattr(encoder, "manifest", None)
    return dict(manifest) if isinstance(manifest, Mapping) else {}


def encoder_meta(kind: str, encoder: Any) -> dict[str, Any]:
    """What `_meta.osneural.encoders.<kind>` records: identity (sha256) and output width."""
    m = _manifest(encoder)
    dim = m.get("dim", getattr(encoder, "dim", None))
    return {
        "name": m.get("name", type(encoder).__name__),
        "kind": kind,
        "sha256": m.get("sha256"),
        "dim": int(dim) if dim is not None else None,
    }


def joined_text(doc: CorpusDocument) -> str:
    # BEIR practice for bi-encoders: title and body in one passage.
    return f"{doc.title} {doc.text}".strip() if doc.title else doc.text


def _truncated_rows(encoder: Any) -> set[int]:
    """Rows of the encoder's last call that it truncated (encoders count, never refuse)."""
    stats = getattr(encoder, "last_stats", None)
    return set(getattr(stats, "truncated_indices", None) or ())


def _one_pass(multi: Any, dense: Any) -> bool:
    shares = getattr(multi, "shares_dense_pass", None)
    return bool(shares and shares(dense))


# -- timing -------------------------------------------------------------------------------------


class StageTimer:
    """Adds wall time per stage into a dict (a batch result's or a summary's)."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.into[stage] = self.into.get(stage, 0.0) + time.perf_counter() - start


# -- encoding and codecs ----------------------------------------------------------------------------


@dataclass
class RawBatch:
    """Encoder outputs before codecs (kept for the training sample)."""

    dense: np.ndarray | None = None
    sparse: list[dict[str, float]] | None = None
    tokens: list[np.ndarray] | None = None
    truncated: int = 0
    #: how many documents at the end of the batch have an empty title and text: they are not
    #: encoded (an encoder would embed the empty string) and are written with their fields only
    empty: int = 0


def encode_raw(docs: Sequence[CorpusDocument], encoders: Mapping[str, Any], params: CodecParams,
               expected_dim: int | None, timer: StageTimer) -> RawBatch:
    """Run every encoder over the batch (and pool tokens); raises on any document it refuses."""
    texts = [joined_text(d) for d in docs]
    raw = RawBatch()
    truncated: set[int] = set()
    tokens = shared_dense = None
    multi = encoders.get("multivector")
    if multi is not None and "dense" in encoders and _one_pass(multi, encoders["dense"]):
        # MiniLM serves both: its token rows and its pooled vector come from one forward pass.
        with timer("encode_dense+multivector"):
            tokens, shared_dense = multi.encode_documents_and_pooled(texts)
            truncated |= _truncated_rows(multi)
    if "dense" in encoders:
        with timer("encode_dense"):
            dense = shared_dense if shared_dense is not None else np.asarray(
                encoders["dense"].encode_documents(texts), dtype=np.float32)
            if dense.shape[0] != len(docs) or (expected_dim and dense.shape[1] != expected_dim):
                raise IndexMismatch(
                    f"dense encoder returned shape {dense.shape} for {len(docs)} documents; "
                    f"the index expects dimension {expected_dim}"
                )
            raw.dense = dense
            if shared_dense is None:
                truncated |= _truncated_rows(encoders["dense"])
    if "sparse" in encoders:
        with timer("encode_sparse"):
            raw.sparse = list(encoders["sparse"].encode_documents(texts))
            truncated |= _truncated_rows(encoders["sparse"])
    if multi is not None:
        if tokens is None:
            with timer("encode_multivector"):
                tokens = multi.encode_documents(texts)
                truncated |= _truncated_rows(multi)
        with timer("codecs"):
            if params.pool_factor > 1:
                tokens = [pool_tokens(t, params.pool_factor) for t in tokens]
            raw.tokens = [np.asarray(t, dtype=np.float32) for t in tokens]
    raw.truncated = len(truncated)
    return raw


def apply_codecs(raw: RawBatch, plan: IngestPlan) -> EncodedBatch:
    """Encoder outputs -> every stored representation, with the plan's trained codecs."""
    reps, bundle = plan.representations, plan.bundle
    enc = EncodedBatch(sparse=raw.sparse if "sparse" in reps else None)
    if raw.dense is not None:
        if "dense" in reps:
            enc.dense = raw.dense
            enc.matryoshka = {d: matryoshka(raw.dense, d) for d in plan.matryoshka_dims}
        if "binary" in reps:
            codes = bundle.binary.encode(raw.dense)
            enc.bin_code = codes
            enc.bin_tokens = code_tokens(codes, int(bundle.params["mih_m"]), n_bits=bundle.binary.n_bits)
        if "pq" in reps:
            enc.dense_pq = bundle.pq_dense.encode(raw.dense)
    if raw.tokens is not None and "multivector" in reps:
        # PQ codes are uint8 [t, M]; bit codes are fixed-width structured rows: both stored as bytes
        enc.mv_codes = [np.ascontiguousarray(bundle.token_codec.encode(t)).view(np.uint8)
                        for t in raw.tokens]
        enc.fde = bundle.fde.encode_documents(raw.tokens)
    if raw.tokens is not None and "float_tokens" in reps:
        enc.mv_f16 = [t.astype(np.float16) for t in raw.tokens]
    return enc


def _row(enc: EncodedBatch, i: int) -> EncodedBatch:
    """Row `i` of a batch's representations, as a batch of one."""
    def cut(value: Any) -> Any:
        return None if value is None else value[i : i + 1]

    return EncodedBatch(
        dense=cut(enc.dense), matryoshka={d: a[i : i + 1] for d, a in enc.matryoshka.items()},
        sparse=cut(enc.sparse), bin_code=cut(enc.bin_code), bin_tokens=cut(enc.bin_tokens),
        dense_pq=cut(enc.dense_pq), mv_codes=cut(enc.mv_codes), mv_f16=cut(enc.mv_f16),
        fde=cut(enc.fde))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- the resume check ---------------------------------------------------------------------------


def existing_ids(client: Any, index: str, ids: list[str], *, max_retries: int = 5,
                 backoff: Callable[[int], float] = lambda a: min(60.0, 2.0 ** (a - 1)),
                 sleep: Callable[[float], None] = time.sleep,
                 marker: str | None = None) -> tuple[set[str], int]:
    """Ids of `ids` already in `index` (one `mget`), and how many retries it took.

    With `marker` (enriching in place, where every id is present), the ids whose document
    has that field: one `ids` + `exists` search instead.

    Retried like bulk writes (connection errors, 429, 5xx, with backoff): a node restarting
    during `--resume` costs a pause, not the run. Raises `ClusterUnavailable` after the last try.
    """
    from opensearchpy.exceptions import TransportError

    last: Exception | None = None
    for attempt in range(max_retries + 1):
        if attempt:
            sleep(backoff(attempt))
        try:
            if marker is not None:
                resp = client.search(index=index, body={
                    "size": len(ids), "_source": False, "track_total_hits": False,
                    "query": {"bool": {"filter": [{"ids": {"values": ids}},
                                                  {"exists": {"field": marker}}]}}})
                return {h["_id"] for h in resp["hits"]["hits"]}, attempt
            resp = client.mget(index=index, body={"ids": ids}, _source=False)
        except TransportError as exc:
            if not is_retryable(exc.status_code):
                raise
            last = exc
            continue
        return {d["_id"] for d in resp["docs"] if d.get("found")}, attempt
    reason = type(last).__name__ if last is not None else "no answer"
    if last is not None and getattr(last, "error", None):
        reason += f" ({str(last.error)[:160]})"
    raise ClusterUnavailable(
        f"index {index!r}: the resume check for {len(ids)} documents failed after {max_retries} "
        f"retries ({reason}); documents written so far are kept, rerun with resume to continue")


# -- the step ---------------------------------------------------------------------------------


class BatchStep:
    """Turns batches of corpus documents into index writes, per the plan. One per process."""

    def __init__(self, plan: IngestPlan, encoders: Mapping[str, Any], client: Any,
                 *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.plan = plan
        self.encoders = dict(encoders)
        self.client = client
        self.writer = BulkWriter(client, plan.index, max_retries=plan.max_retries,
                                 initial_backoff=plan.initial_backoff, sleep=sleep)
        self._sleep = sleep

    def __call__(self, docs: Sequence[CorpusDocument]) -> BatchResult:
        """Resume check, encode, write: the whole step for one batch."""
        result, todo, raw = self.encode_batch(docs)
        if todo:
            self.write(todo, raw, result)
        return result

    def encode_batch(self, docs: Sequence[CorpusDocument]
                     ) -> tuple[BatchResult, list[CorpusDocument], RawBatch | None]:
        """Everything before the write: resume check and encoding. Returns the batch's result so
        far and the documents left to write with their encodings (none when every document was
        skipped, refused, or the cluster was unreachable for the resume check)."""
        result = BatchResult(docs=len(docs))
        timer = StageTimer(result.stage_seconds)
        todo = list(docs)
        if self.plan.resume and todo:
            with timer("resume_check"):
                try:
                    done, retries = existing_ids(
                        self.client, self.plan.index, [d.id for d in todo],
                        max_retries=self.plan.max_retries, backoff=self.writer.backoff,
                        sleep=self._sleep, marker=self.plan.resume_marker)
                except ClusterUnavailable as exc:
                    result.unavailable = str(exc)
                    result.failures += [DocFailure(d.id, d.source, d.line, "resume_check", str(exc))
                                        for d in todo]
                    return result, [], None
            result.retries += retries
            result.skipped += len(done)
            todo = [d for d in todo if d.id not in done]
        if not todo:
            return result, [], None
        todo, raw = self.encode(todo, result)
        return result, todo, raw

    def encode(self, docs: list[CorpusDocument], result: BatchResult
               ) -> tuple[list[CorpusDocument], RawBatch | None]:
        """Encode the batch; a document the encoders refuse is found alone and reported.

        Documents with an empty title and text are not encoded: they come back at the end of
        the list, counted by the returned `RawBatch.empty`."""
        empty = [d for d in docs if d.empty]
        full = [d for d in docs if not d.empty]
        kept, raw = self._encode_full(full, result) if full else ([], None)
        if not empty:
            return kept, raw
        raw = raw or RawBatch()
        raw.empty = len(empty)
        return kept + empty, raw

    def _encode_full(self, docs: list[CorpusDocument], result: BatchResult
                     ) -> tuple[list[CorpusDocument], RawBatch | None]:
        timer = StageTimer(result.stage_seconds)
        try:
            raw = encode_raw(docs, self.encoders, self.plan.params, self.plan.expected_dim, timer)
        except IndexMismatch:
            raise
        except Exception as exc:  # noqa: BLE001 - one document's fault, isolated below
            if len(docs) == 1:
                d = docs[0]
                result.failures.append(DocFailure(d.id, d.source, d.line, "encode", _reason(exc)))
                return [], None
            good = []
            for d in docs:
                probe = BatchResult()  # counts only the failures; the good ones are re-encoded
                if self._encode_full([d], probe)[0]:
                    good.append(d)
                result.failures += probe.failures
            if not good:
                return [], None
            raw = encode_raw(good, self.encoders, self.plan.params, self.plan.expected_dim, timer)
            docs = good
        result.truncated += raw.truncated
        return docs, raw

    def build(self, docs: list[CorpusDocument], raw: RawBatch, result: BatchResult
              ) -> tuple[list[CorpusDocument], list[dict[str, Any]]]:
        """Codecs and bulk actions; a document the builder refuses is reported alone."""
        timer = StageTimer(result.stage_seconds)
        n = len(docs) - raw.empty
        in_place = self.plan.in_place
        with timer("codecs"):
            enc = apply_codecs(raw, self.plan) if n else EncodedBatch()
        with timer("build"):
            try:
                return docs, (build_documents(docs[:n], enc, in_place=in_place)
                              + build_documents(docs[n:], EncodedBatch(), in_place=in_place))
            except (ValueError, TypeError):
                kept, actions = [], []
                for i, d in enumerate(docs):
                    try:
                        actions += build_documents([d], _row(enc, i) if i < n else EncodedBatch(),
                                                   in_place=in_place)
                        kept.append(d)
                    except (ValueError, TypeError) as exc:
                        result.failures.append(DocFailure(d.id, d.source, d.line, "build",
                                                          _reason(exc)))
                return kept, actions

    def write(self, docs: list[CorpusDocument], raw: RawBatch, result: BatchResult) -> None:
        """Codecs -> documents -> bulk for encoded documents."""
        docs, actions = self.build(docs, raw, result)
        self.send(docs, actions, result)

    def send(self, docs: list[CorpusDocument], actions: list[dict[str, Any]],
             result: BatchResult) -> None:
        """Bulk-write built actions (`build`'s output), counting outcomes into `result`; apart
        from `build` so the head sample can build batch i+1 while batch i is in flight."""
        if not actions:
            return
        by_id = {d.id: d for d in docs}

        def failure(doc_id: str, reason: str) -> DocFailure:
            d = by_id.get(doc_id)
            return DocFailure(doc_id, d.source if d else "", d.line if d else 0, "bulk", reason)

        with StageTimer(result.stage_seconds)("bulk"):
            try:
                bulk = self.writer.write(actions)
            except ClusterUnavailable as exc:
                partial = exc.result  # type: ignore[attr-defined]
                result.failures += [failure(f.doc_id, f.reason) for f in partial.failures]
                result.retries += partial.retries
                result.unavailable = str(exc)
                return
        result.indexed += bulk.indexed
        result.retries += bulk.retries
        result.failures += [failure(f.doc_id, f"{f.status} {f.reason}") for f in bulk.failures]
        failed = {f.doc_id for f in bulk.failures}
        result.empty += sum(1 for d in docs if d.empty and d.id not in failed)
