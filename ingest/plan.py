"""The data an ingestion run is made of: options, the frozen plan, per-batch results, the summary.

Kept apart from the code that runs a batch (`osneural.ingest.batch`), prepares the index
(`osneural.ingest.prepare`) or drives the loop (`osneural.ingest.indexer` in one process,
`osneural.ingest.ray_ingest` on Ray), because all of them exchange these objects, and because
an `IngestPlan` crosses process boundaries (it is pickled to Ray actors): it must hold plain data
only, never a client, an encoder session or a file handle.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

from osneural.codecs import CodecBundle
from osneural.errors import IndexMismatchError, IngestError

STAGES = ("read", "resume_check", "encode_dense", "encode_sparse", "encode_multivector",
          "train_codecs", "codecs", "build", "bulk")


#: the ingestion side's name for `osneural.errors.IndexMismatchError` (one class for both sides)
IndexMismatch = IndexMismatchError


class EmptyCorpus(IngestError):
    """The corpus holds no valid document at all."""


_TOKEN_CODE = re.compile(r"(bin|res)([124])(s?)(?:p([1-9][0-9]{0,4}))?")


class TokenCode(NamedTuple):
    """A bit token code's name, parsed: `bin2p192` -> ("bin", 2, False, 192)."""

    kind: str  # "bin": bits of the value itself; "res": of its residual to a coarse centroid
    nbits: int  # bits per coded dimension
    scale: bool  # a float16 per-token scale ("s")
    dims: int | None  # principal directions coded ("p<N>"); None: every dimension as it is


def parse_token_code(code: str) -> TokenCode:
    """A bit token code's parts: `bin1` -> ("bin", 1, False, None), `res2s` -> ("res", 2, True,
    None), `bin2p192` -> ("bin", 2, False, 192). Anything else (`pq` included) is a ValueError
    naming it."""
    match = _TOKEN_CODE.fullmatch(code) if isinstance(code, str) else None
    if match is None:
        raise ValueError(f"token code {code!r}: use pq, or bin or res, then 1, 2 or 4 bits per "
                         "dimension, then s for a per-token scale, then p<N> to code N principal "
                         "directions (e.g. bin2, bin1s, res2, bin2p192)")
    return TokenCode(match[1], int(match[2]), match[3] == "s",
                     int(match[4]) if match[4] else None)


@dataclass
class CodecParams:
    """Codec settings; the defaults are chosen for MiniLM (384-d), each for the reason beside it."""

    # 64 six-bit substrings: on SciFact, Recall@1000 of the binary stage (radius 1) is 0.97,
    # against 0.49 with 24 sixteen-bit ones (measured once when the default changed; no bench
    # script reproduces it yet).
    mih_m: int = 64
    dense_pq_m: int = 48
    # 192 two-dim sub-spaces (192 bytes per 384-d token, 1/8 of float32). MaxSim alone over the
    # SciFact hybrid top 100 against float tokens, nDCG@10 points, two codebook draws each
    # (bench/maxsim_pq.py): M=48 -1.0, -0.9; M=96 -0.9, -0.6; M=192 -0.05, +0.05.
    token_pq_m: int = 192
    #: k-means of each token PQ sub-space (256 centroids in 2 dimensions): iterations, and
    #: training points per centroid at most (faiss draws them, seeded). 25 and 256 (faiss's
    #: defaults) made training most of a small build's time; MaxSim nDCG@10 with these, against
    #: them: docs/scale.md, "Default build speed" (`bench/build_quality.py`).
    token_pq_niter: int = 10
    token_pq_points_per_centroid: int = 64
    #: how `mv_codes` codes a token: "pq" (PQ with `token_pq_m` sub-spaces) or a bit code
    #: (`parse_token_code`): "bin1" / "bin2" (1 or 2 bits per dimension, buckets cut at the
    #: training values' quantiles), "res1" / "res2" (a coarse centroid id plus 1 or 2 residual
    #: bits, ColBERTv2's layout), "s" adding a per-token scale, "p<N>" coding the tokens' N
    #: principal directions instead of their D axes; see osneural.codecs.residual and
    #: bench/token_bits.py. Default "bin2p224": 2 bits over 224 principal directions, 56 bytes
    #: per 384-d token (0.29 of PQ M=192's), trained in about 2 s. MaxSim alone / the `hybrid`
    #: blend against float16 tokens, nDCG@10 points, fp32 / int8 query tokens (docs/results.md):
    #: SciFact -0.31 / +0.08 and -0.19 / -0.01, NFCorpus -0.07 / +0.09 and -0.24 / +0.06. With
    #: 192 directions (48 B) NFCorpus alone falls to -0.80 with int8 queries, past the 0.5 bar.
    #: Tokens of 224 dimensions or fewer are rotated and kept whole. An index keeps the code
    #: its bundle names.
    token_code: str = "bin2p224"
    #: coarse centroids of "res" codes at most (fewer when the training sample is small:
    #: ColBERTv2's 2**floor(log2(16 sqrt(tokens))))
    token_centroids: int = 4096
    #: token pooling at ingestion (hierarchical clustering of a document's tokens into
    #: ceil(T / pool_factor) means; osneural.codecs.pooling). 4 against 2, built end to end and
    #: queried with every test query (docs/scale.md, "Pooling by 4"), nDCG@10 points, `hybrid` /
    #: `multivector` / MaxSim alone: SciFact +0.24 / +0.85 / +0.07, NFCorpus -0.08 / +0.31 /
    #: -0.10, MEDLINE -0.14 / +0.44 / +0.67, LISA +0.39 / +5.04 / +2.38; half the token bytes
    #: (5.9 -> 3.0 KB per SciFact document) and half the MaxSim work.
    pool_factor: float = 4
    # "int8" stores the MUVERA FDE as a k-NN byte vector: 2 KB instead of 8 KB per document;
    # fde+maxsim nDCG@10 equal to float32 on SciFact (0.7166 both) and NFCorpus (0.3342 against
    # 0.3343), top-200 overlap 0.99 (bench/fde_bytes.py, exact search). "float32" keeps floats.
    fde_dtype: str = "int8"
    train_docs: int = 2000
    max_train_tokens: int = 50_000
    seed: int = 0

    def __post_init__(self) -> None:
        # a misspelt token code fails here, before a document is read or encoded
        if self.token_code != "pq":
            parse_token_code(self.token_code)


@dataclass(frozen=True)
class IndexOptions:
    """How a new index is laid out (ignored, except `settings`, for an index that exists)."""

    space_type: str = "cosinesimil"
    engine: str = "lucene"
    text_analyzer: str | None = None
    matryoshka_dims: tuple[int, ...] = ()
    #: merged into the index settings at creation (`number_of_shards`, `codec`, ...); dynamic
    #: ones are applied to an existing index too.
    settings: tuple[tuple[str, Any], ...] = ()
    #: `index.refresh_interval` while bulk-loading (e.g. "-1"), restored when the run ends;
    #: "auto" relaxes an unset interval only (`osneural.ingest.prepare.load_refresh`), None or
    #: "keep" leaves the index's own.
    bulk_refresh_interval: str | None = "auto"
    #: the app's own mapping (`properties`, `dynamic`, ...) merged beside osneural's fields, and
    #: index settings it needs (analysis); `mapping_origin` names where it came from in errors
    app_mapping: Any = None
    app_settings: Any = None
    mapping_origin: str = "mapping"


@dataclass(frozen=True)
class IngestPlan:
    """What every batch needs to turn documents into index writes, fixed before the first batch.

    Built once by the preparation step (the driver, on Ray) and shared read-only by every batch
    step, so documents written by different processes agree: same codecs, same field layout.
    """

    index: str
    representations: tuple[str, ...]
    encoder_meta: dict[str, dict[str, Any]]
    bundle: CodecBundle
    params: CodecParams
    matryoshka_dims: tuple[int, ...]
    expected_dim: int | None
    generation: str | None
    #: the index existed before this run and `resume` was asked: skip ids already in it
    resume: bool
    max_retries: int = 5
    initial_backoff: float = 1.0
    #: enrich documents that already live in the index: partial updates carrying osneural's
    #: fields only (the app's fields stay as they are)
    in_place: bool = False
    #: with `in_place` and `resume`: a field every enriched, non-empty document has, so the
    #: resume check asks "enriched?" rather than "present?" (every document is present)
    resume_marker: str | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Trained codecs hold faiss objects that do not pickle; they travel in the codec
        # document's JSON-safe form, the same one query nodes load.
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "bundle"}
        return _rebuild_plan, (state, self.bundle.to_dict())


def _rebuild_plan(state: dict[str, Any], bundle: dict[str, Any]) -> IngestPlan:
    return IngestPlan(bundle=CodecBundle.from_dict(bundle), **state)


@dataclass
class DocFailure:
    """One document that was not indexed: where it came from, at which stage, and why."""

    doc_id: str | None
    source: str
    line: int
    stage: str
    reason: str


@dataclass
class BatchResult:
    """What one batch step did; merged into the run's `IngestSummary` by the driver."""

    docs: int = 0
    indexed: int = 0
    skipped: int = 0
    truncated: int = 0
    #: documents with an empty title and text, indexed with their fields only
    empty: int = 0
    retries: int = 0
    failures: list[DocFailure] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: set when the cluster stayed unreachable for the whole batch: the run must stop
    unavailable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchResult:
        data = dict(data)
        data["failures"] = [DocFailure(**f) for f in data.get("failures") or []]
        return cls(**data)


@dataclass
class IngestSummary:
    """What a run did. `failed` counts rejected lines and documents the cluster refused."""

    index: str
    representations: list[str]
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    truncated: int = 0
    #: of `indexed`: documents with an empty title and text, written with their app fields and
    #: no neural representations
    empty: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    codecs_trained: bool = False
    padded_training: list[str] = field(default_factory=list)
    bulk_retries: int = 0
    failure_report: str | None = None
    aborted: str | None = None
    codec_generation: str | None = None
    workers: int = 1
    notes: list[str] = field(default_factory=list)
    #: wall time and documents of the batch loop after preparation (head sample and codec
    #: training excluded): the part that scales with workers, for throughput comparisons
    loop_seconds: float = 0.0
    loop_docs: int = 0

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

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
        if self.empty:
            lines.append(f"  {self.empty} of the indexed documents have an empty title and text: "
                         "indexed with their fields, no neural representations")
        if self.failed and self.failure_report:
            lines.append(f"  failures: {self.failure_report}")
        if self.padded_training:
            lines.append(f"  small training sample, padded with jittered copies: "
                         f"{', '.join(self.padded_training)}")
        lines += [f"  note: {n}" for n in self.notes]
        label = "  (summed over workers)" if self.workers > 1 else ""
        if label and any(s >= 0.005 for s in self.stage_seconds.values()):
            lines.append(label)
        for stage, secs in self.stage_seconds.items():
            if secs >= 0.005:
                lines.append(f"  {stage:<20} {secs:8.2f}s")
        if self.aborted:
            lines.append(f"  ABORTED: {self.aborted}")
        return "\n".join(lines)
