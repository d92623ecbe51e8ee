"""`index_corpus`: corpus -> encoders -> codecs -> OpenSearch, resumable and idempotent by `_id`.

Order of work, and why:

1. Check an existing index against this run (encoders' sha256, dense dimension, representations)
   before anything is written, so a wrong model never leaves half a batch behind.
2. For a new index, encode the first `train_docs` documents, train the codecs on them (fixed
   seed), create the index with its `_meta`, and store the codecs; those encodings are then
   indexed, not recomputed (multi-vector encoding is the slowest stage).
3. Stream the rest in batches: reject bad lines into the failure report, skip ids already in the
   index when resuming (one `mget` per batch, no scan of the whole index), encode, apply codecs,
   bulk-write with retries. Per-stage wall time is summed so the summary shows where time went.

The codec stage uses the codecs package defaults the brief fixed: 1 bit per dense dimension cut
into `mih_m` = 64 MIH substrings (6 bits each: near codes share many terms), dense PQ M = 48, token PQ M = 192, token pooling factor 2,
MUVERA defaults. Training uses at most `train_docs` documents and `max_train_tokens` token
vectors. PQ needs at least 256 training vectors; a smaller corpus (tests, demos) is padded with
jittered copies of its own vectors -- codes stay exact nearest centroids, only codebook quality
suffers, and the summary says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from osneural.ingest.bulk import BulkWriter, ClusterUnavailable, FailureReport
from osneural.ingest.codec_store import load_codecs, save_codecs
from osneural.ingest.codecs import (
    BinaryQuantizer,
    CodecBundle,
    MuveraFDE,
    ProductQuantizer,
    code_tokens,
    pool_tokens,
)
from osneural.ingest.corpus import CorpusDocument, FieldNames, Rejected, corpus_files, iter_corpus
from osneural.ingest.documents import EncodedBatch, build_documents, matryoshka
from osneural.mappings import (
    DEFAULT_TEXT_ANALYZER,
    NEEDS_DENSE,
    NEEDS_TOKENS,
    SCHEMA_VERSION,
    compose_index_body,
    normalize_representations,
)

ENCODER_KINDS = ("dense", "sparse", "multivector")
STAGES = ("read", "resume_check", "encode_dense", "encode_sparse", "encode_multivector",
          "train_codecs", "codecs", "build", "bulk")


class IngestError(RuntimeError):
    """Ingestion cannot start or had to stop; `.summary` holds the progress made so far."""

    def __init__(self, message: str, summary: IngestSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class IndexMismatch(IngestError):
    """The existing index was built with other encoders, dimensions or representations."""


class EmptyCorpus(IngestError):
    """The corpus holds no valid document at all."""


@dataclass
class IngestSummary:
    """What a run did. `failed` counts rejected lines and documents the cluster refused."""

    index: str
    representations: list[str]
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    truncated: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    codecs_trained: bool = False
    padded_training: list[str] = field(default_factory=list)
    bulk_retries: int = 0
    failure_report: str | None = None
    aborted: str | None = None

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["docs_per_second"] = self.docs_per_second
        return data

    def format(self) -> str:
        """Human summary: counts, then one line per stage that took time."""
        lines = [
            f"index {self.index}: indexed {self.indexed}, skipped {self.skipped} (already indexed), "
            f"failed {self.failed}, truncated {self.truncated}, "
            f"{self.seconds:.1f}s ({self.docs_per_second:.1f} docs/s)",
        ]
        if self.failed and self.failure_report:
            lines.append(f"  failures: {self.failure_report}")
        if self.padded_training:
            lines.append(f"  small training sample, padded with jittered copies: "
                         f"{', '.join(self.padded_training)}")
        for stage, secs in self.stage_seconds.items():
            if secs >= 0.005:
                lines.append(f"  {stage:<20} {secs:8.2f}s")
        if self.aborted:
            lines.append(f"  ABORTED: {self.aborted}")
        return "\n".join(lines)


@dataclass
class CodecParams:
    """Codec settings; defaults are the ones the brief fixed for MiniLM (384-d)."""

    # 64 six-bit substrings: on SciFact, Recall@1000 of the binary stage (radius 1) is 0.97,
    # against 0.49 with 24 sixteen-bit ones (measured once when the default changed; no bench
    # script reproduces it yet).
    mih_m: int = 64
    dense_pq_m: int = 48
    # 192 two-dim sub-spaces (192 bytes per 384-d token, 1/8 of float32). MaxSim alone over the
    # SciFact hybrid top 100 against float tokens, nDCG@10 points, two codebook draws each
    # (bench/maxsim_pq.py): M=48 -1.0, -0.9; M=96 -0.9, -0.6; M=192 -0.05, +0.05.
    token_pq_m: int = 192
    pool_factor: float = 2
    train_docs: int = 2000
    max_train_tokens: int = 50_000
    seed: int = 0


# -- encoders ---------------------------------------------------------------------------------


def _needed_kinds(reps: list[str]) -> list[str]:
    kinds = []
    if NEEDS_DENSE & set(reps):
        kinds.append("dense")
    if "sparse" in reps:
        kinds.append("sparse")
    if NEEDS_TOKENS & set(reps):
        kinds.append("multivector")
    return kinds


def load_encoders(reps: list[str], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The encoder of every kind these representations need: given ones first, else defaults."""
    out: dict[str, Any] = {}
    for kind in _needed_kinds(reps):
        if given and kind in given:
            out[kind] = given[kind]
            continue
        from osneural.ingest.encoders import load_default

        out[kind] = load_default(kind)
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


def _joined_text(doc: CorpusDocument) -> str:
    # BEIR practice for bi-encoders: title and body in one passage.
    return f"{doc.title} {doc.text}".strip() if doc.title else doc.text


def _truncated_rows(encoder: Any) -> set[int]:
    """Rows of the encoder's last call that it truncated (encoders count, never refuse)."""
    stats = getattr(encoder, "last_stats", None)
    return set(getattr(stats, "truncated_indices", None) or ())


# -- codecs -------------------------------------------------------------------------------------


def _divisor_at_most(dim: int, m: int) -> int:
    """PQ needs M | dim; take the largest divisor of dim not above the requested M."""
    return max(d for d in range(1, min(m, dim) + 1) if dim % d == 0)


def _training_rows(x: np.ndarray, need: int, seed: int) -> tuple[np.ndarray, bool]:
    """`x` itself, or padded with jittered copies up to `need` rows when the sample is tiny."""
    if len(x) >= need:
        return x, False
    rng = np.random.default_rng(seed)
    reps = -(-need // len(x))
    tiled = np.tile(x, (reps, 1))[:need]
    scale = 0.01 * (float(x.std()) or 1.0)
    return (tiled + rng.normal(0.0, scale, tiled.shape)).astype(np.float32), True


def train_codecs(
    reps: list[str],
    dense: np.ndarray | None,
    tokens: list[np.ndarray] | None,
    params: CodecParams,
    summary: IngestSummary | None = None,
) -> CodecBundle:
    """Fit every codec these representations use, deterministically (fixed seed)."""
    bundle = CodecBundle(params={"pool_factor": params.pool_factor, "mih_m": params.mih_m})
    padded: list[str] = []
    if dense is not None and ("binary" in reps or "pq" in reps):
        if len(dense) < 2:
            raise ValueError("codec training needs at least 2 documents")
        if "binary" in reps:
            bundle.binary = BinaryQuantizer(bits_per_dim=1, seed=params.seed).fit(dense)
            bundle.params["mih_n_bits"] = bundle.binary.n_bits
        if "pq" in reps:
            pq = ProductQuantizer(_divisor_at_most(dense.shape[1], params.dense_pq_m), seed=params.seed)
            rows, was_padded = _training_rows(dense, pq.ksub, params.seed)
            bundle.pq_dense = pq.fit(rows)
            if was_padded:
                padded.append(f"dense PQ ({len(dense)} vectors)")
    if tokens is not None and "multivector" in reps:
        flat = np.concatenate(tokens, axis=0)
        if len(flat) > params.max_train_tokens:
            rng = np.random.default_rng(params.seed)
            flat = flat[np.sort(rng.choice(len(flat), params.max_train_tokens, replace=False))]
        pq = ProductQuantizer(_divisor_at_most(flat.shape[1], params.token_pq_m), seed=params.seed)
        rows, was_padded = _training_rows(flat, pq.ksub, params.seed + 1)
        bundle.pq_tokens = pq.fit(rows)
        if was_padded:
            padded.append(f"token PQ ({len(flat)} vectors)")
        bundle.fde = MuveraFDE(dim=flat.shape[1], seed=params.seed)
    if summary is not None:
        summary.padded_training += padded
    return bundle


def codec_meta(bundle: CodecBundle) -> dict[str, Any]:
    """Kinds and parameters of the codecs, for `_meta` (the trained arrays live in the store)."""
    meta: dict[str, Any] = {"params": dict(bundle.params)}
    if bundle.binary is not None:
        meta["binary"] = {"kind": "binary", "bits_per_dim": bundle.binary.bits_per_dim,
                          "n_bits": bundle.binary.n_bits, "itq": bundle.binary.itq}
    for slot in ("pq_dense", "pq_tokens"):
        pq = getattr(bundle, slot)
        if pq is not None:
            meta[slot] = {"kind": "pq", "M": pq.M, "nbits": pq.nbits, "dim": pq.dim}
    if bundle.fde is not None:
        f = bundle.fde
        meta["fde"] = {"kind": "muvera", "dim": f.dim, "k_sim": f.k_sim, "reps": f.reps,
                       "d_proj": f.d_proj, "final_dim": f.final_dim, "fde_dim": f.fde_dim}
    return meta


# -- encoding one batch ---------------------------------------------------------------------------


@dataclass
class _Raw:
    """Encoder outputs before codecs (kept for the training sample)."""

    dense: np.ndarray | None = None
    sparse: list[dict[str, float]] | None = None
    tokens: list[np.ndarray] | None = None


class _Timer:
    def __init__(self, summary: IngestSummary) -> None:
        self.summary = summary

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.summary.stage_seconds[stage] = (
                self.summary.stage_seconds.get(stage, 0.0) + time.perf_counter() - start
            )


def _one_pass(multi: Any, dense: Any) -> bool:
    shares = getattr(multi, "shares_dense_pass", None)
    return bool(shares and shares(dense))


def _encode_raw(
    docs: list[CorpusDocument], encoders: dict[str, Any], params: CodecParams,
    expected_dim: int | None, timer: _Timer, summary: IngestSummary,
) -> _Raw:
    texts = [_joined_text(d) for d in docs]
    raw = _Raw()
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
    summary.truncated += len(truncated)
    return raw


def _apply_codecs(
    raw: _Raw, reps: list[str], bundle: CodecBundle, matryoshka_dims: tuple[int, ...]
) -> EncodedBatch:
    enc = EncodedBatch(sparse=raw.sparse if "sparse" in reps else None)
    if raw.dense is not None:
        if "dense" in reps:
            enc.dense = raw.dense
            enc.matryoshka = {d: matryoshka(raw.dense, d) for d in matryoshka_dims}
        if "binary" in reps:
            codes = bundle.binary.encode(raw.dense)
            enc.bin_code = codes
            enc.bin_tokens = code_tokens(codes, int(bundle.params["mih_m"]), n_bits=bundle.binary.n_bits)
        if "pq" in reps:
            enc.dense_pq = bundle.pq_dense.encode(raw.dense)
    if raw.tokens is not None and "multivector" in reps:
        enc.mv_codes = [bundle.pq_tokens.encode(t) for t in raw.tokens]
        enc.fde = bundle.fde.encode_documents(raw.tokens)
    if raw.tokens is not None and "float_tokens" in reps:
        enc.mv_f16 = [t.astype(np.float16) for t in raw.tokens]
    return enc


# -- the index --------------------------------------------------------------------------------


def _index_state(client: Any, index: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(`_meta.osneural`, mapping properties) of an existing index, or None if it is missing."""
    if not client.indices.exists(index=index):
        return None
    mapping = client.indices.get_mapping(index=index)
    body = next(iter(mapping.values()))["mappings"]
    return (body.get("_meta") or {}).get("osneural") or {}, body.get("properties") or {}


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
            "(leave --representations out to use the index's own)"
        )
    for kind, mine in enc_meta.items():
        theirs = (meta.get("encoders") or {}).get(kind) or {}
        if theirs.get("sha256") != mine.get("sha256"):
            raise IndexMismatch(
                f"index {index!r} was built with {kind} encoder {theirs.get('name')!r} "
                f"(sha256 {str(theirs.get('sha256'))[:12]}); this run uses {mine.get('name')!r} "
                f"(sha256 {str(mine.get('sha256'))[:12]})"
            )
    dense_prop = props.get("dense") or {}
    dense_dim = (enc_meta.get("dense") or {}).get("dim")
    if "dense" in reps and dense_dim and dense_prop.get("dimension") not in (None, dense_dim):
        raise IndexMismatch(
            f"wrong embedding dimension: index {index!r} field 'dense' has dimension "
            f"{dense_prop.get('dimension')}, the dense encoder gives {dense_dim}"
        )


def _existing_ids(client: Any, index: str, ids: list[str]) -> set[str]:
    resp = client.mget(index=index, body={"ids": ids}, _source=False)
    return {d["_id"] for d in resp["docs"] if d.get("found")}


def _count_lines(corpus: Any) -> int | None:
    if isinstance(corpus, str | Path):
        total = 0
        for f in corpus_files(corpus):
            with open(f, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
        return total
    return len(corpus) if hasattr(corpus, "__len__") else None


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
    matryoshka_dims: tuple[int, ...] | list[int] = (),
    space_type: str = "cosinesimil",
    engine: str = "lucene",
    text_analyzer: str | None = None,
    index_settings: dict[str, Any] | None = None,
    max_retries: int = 5,
    initial_backoff: float = 1.0,
    refresh: bool = True,
) -> IngestSummary:
    """Encode `corpus` and bulk-load it into `index` with every chosen representation.

    `corpus` is a JSONL file, a folder of them (BEIR layout), or an iterable of dicts with the
    `fields` names. `encoders` maps kind -> encoder to use instead of the exported defaults.
    `resume` skips ids already in the index; without it, existing ids are overwritten (writes are
    idempotent by `_id`). Rejected documents go to `failure_report` (default
    `<corpus folder or cwd>/<index>.failures.jsonl`). Raises `IndexMismatch` before any write
    when the index was built differently, `EmptyCorpus` when nothing is valid, and `IngestError`
    (with `.summary`) when the cluster stays unreachable; a rerun with `resume=True` continues.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    params = codec_params or CodecParams()
    start = time.perf_counter()
    state = _index_state(client, index)
    if state is not None and representations is None:
        reps = normalize_representations(state[0].get("representations") or None)
    else:
        reps = normalize_representations(representations)
    summary = IngestSummary(index=index, representations=reps)
    timer = _Timer(summary)
    encs = load_encoders(reps, encoders)
    enc_meta = {kind: encoder_meta(kind, e) for kind, e in encs.items()}
    mdims = tuple(sorted({int(d) for d in matryoshka_dims}))
    bundle: CodecBundle | None = None
    expected_dim = (enc_meta.get("dense") or {}).get("dim")
    if state is not None:
        check_compatible(index, state[0], state[1], reps, enc_meta)
        mdims = tuple((state[0].get("fields") or {}).get("matryoshka") or mdims)
        bundle = load_codecs(client, index)
        if bundle is None and ({"binary", "pq", "multivector"} & set(reps)):
            raise IndexMismatch(
                f"index {index!r} exists but its codecs are missing from the codec store; "
                "delete the index and ingest again"
            )
        bundle = bundle or CodecBundle()
        expected_dim = (state[1].get("dense") or {}).get("dimension", expected_dim)
    if failure_report is None:
        base = Path(corpus).parent if isinstance(corpus, str | Path) else Path.cwd()
        failure_report = base / f"{index}.failures.jsonl"
    report = FailureReport(failure_report)
    summary.failure_report = str(report.path)
    writer = BulkWriter(client, index, max_retries=max_retries, initial_backoff=initial_backoff)
    resume_active = resume and state is not None
    valid_seen = 0

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=_count_lines(corpus), unit="doc", desc=f"ingest {index}", dynamic_ncols=True)

    def reject(r: Rejected) -> None:
        summary.failed += 1
        report.add(doc_id=r.doc_id, reason=r.reason, stage="read", source=r.source, line=r.line)

    def batches() -> Iterator[list[CorpusDocument]]:
        nonlocal valid_seen
        batch: list[CorpusDocument] = []
        items = iter_corpus(corpus, fields or FieldNames())
        while True:
            with timer("read"):
                item = next(items, None)
            if item is None:
                break
            if isinstance(item, Rejected):
                reject(item)
                if bar is not None:
                    bar.update(1)
                continue
            valid_seen += 1
            batch.append(item)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def not_indexed(batch: list[CorpusDocument]) -> list[CorpusDocument]:
        if not resume_active:
            return batch
        with timer("resume_check"):
            done = _existing_ids(client, index, [d.id for d in batch])
        summary.skipped += len(done)
        if bar is not None and done:
            bar.update(len(done))
        return [d for d in batch if d.id not in done]

    def write(docs: list[CorpusDocument], raw: _Raw) -> None:
        with timer("codecs"):
            enc = _apply_codecs(raw, reps, bundle, mdims)
        with timer("build"):
            actions = build_documents(docs, enc)
        by_id = {d.id: d for d in docs}
        with timer("bulk"):
            try:
                result = writer.write(actions)
            except ClusterUnavailable as exc:
                for f in exc.result.failures:  # type: ignore[attr-defined]
                    d = by_id.get(f.doc_id)
                    report.add(doc_id=f.doc_id, reason=f.reason, stage="bulk",
                               source=d.source if d else "", line=d.line if d else 0)
                summary.failed += len(exc.result.failures)  # type: ignore[attr-defined]
                summary.aborted = str(exc)
                raise
        summary.indexed += result.indexed
        summary.bulk_retries += result.retries
        summary.failed += len(result.failures)
        for f in result.failures:
            d = by_id.get(f.doc_id)
            report.add(doc_id=f.doc_id, reason=f"{f.status} {f.reason}", stage="bulk",
                       source=d.source if d else "", line=d.line if d else 0)
        if bar is not None:
            bar.update(len(docs))
            bar.set_postfix(failed=summary.failed, refresh=False)

    try:
        stream = batches()
        if bundle is None:
            # New index: encode a head sample, train codecs on it, create the index, write the head.
            head: list[tuple[list[CorpusDocument], _Raw]] = []
            n_head = 0
            for batch in stream:
                head.append((batch, _encode_raw(batch, encs, params, expected_dim, timer, summary)))
                n_head += len(batch)
                if n_head >= params.train_docs:
                    break
            if n_head == 0:
                raise EmptyCorpus(
                    f"corpus {corpus if isinstance(corpus, str | Path) else '<iterable>'} holds no "
                    f"valid document ({summary.failed} rejected, see {report.path})", summary
                )
            with timer("train_codecs"):
                dense = np.concatenate([r.dense for _, r in head]) if "dense" in encs else None
                tokens = [t for _, r in head for t in r.tokens] if "multivector" in encs else None
                bundle = train_codecs(reps, dense, tokens, params, summary)
                fit_idf = getattr(encs.get("sparse"), "fit_idf", None)
                if callable(fit_idf):
                    # IDF of the training sample, for inference-free sparse queries.
                    texts = [_joined_text(d) for b, _ in head for d in b]
                    bundle.params["idf"] = fit_idf(texts, use=False).to_dict()
                summary.codecs_trained = True
                meta = {
                    "schema_version": SCHEMA_VERSION,
                    "representations": reps,
                    "encoders": enc_meta,
                    "codecs": codec_meta(bundle),
                    "fields": {
                        "dense": {"dim": expected_dim, "space_type": space_type, "engine": engine}
                        if "dense" in reps else None,
                        "matryoshka": list(mdims),
                        "fde": {"dim": bundle.fde.fde_dim} if bundle.fde is not None else None,
                        "text_analyzer": text_analyzer or DEFAULT_TEXT_ANALYZER,
                    },
                    "codec_store": {"index": "osneural-codecs", "id": index},
                }
                kwargs = {"text_analyzer": text_analyzer} if text_analyzer else {}
                body = compose_index_body(
                    reps, dense_dim=expected_dim or 1,
                    fde_dim=bundle.fde.fde_dim if bundle.fde is not None else None,
                    space_type=space_type, engine=engine, matryoshka_dims=mdims,
                    meta=meta, settings=index_settings, **kwargs,
                )
                # Codecs first: an index whose codecs are missing cannot be resumed or queried,
                # while codecs without an index are simply retrained and replaced next run.
                save_codecs(client, index, bundle)
                client.indices.create(index=index, body=body)
            for batch, raw in head:
                write(batch, raw)
            del head
        for batch in stream:
            todo = not_indexed(batch)
            if todo:
                write(todo, _encode_raw(todo, encs, params, expected_dim, timer, summary))
        if valid_seen == 0:
            raise EmptyCorpus(
                f"corpus holds no valid document ({summary.failed} rejected, see {report.path})",
                summary,
            )
    except ClusterUnavailable as exc:
        summary.seconds = time.perf_counter() - start
        raise IngestError(f"{exc}\n{summary.format()}", summary) from exc
    finally:
        report.close()
        if bar is not None:
            bar.close()
    if refresh:
        with timer("bulk"):
            client.indices.refresh(index=index)
    summary.seconds = time.perf_counter() - start
    if report.count == 0:
        summary.failure_report = None
    return summary
