"""Per-process cache of what queries need: index layout, query encoders and the index's codecs.

Loading an ONNX encoder or fetching codebooks takes far longer than a query, so both are loaded
once per process (the HTTP service keeps them warm) and shared by every request. The index's
`_meta.osneural` is checked against the loaded encoder's sha256: an index built with another
encoder produces vectors from another space, which would silently return garbage, so the query
fails loudly instead (`IndexMismatchError`).

Staleness. An index can be deleted and rebuilt with new codecs while query processes run; PQ codes
decoded with the old codebooks (or binary codes cut with the old quantizer) rank wrongly with no
error at all. So every cached description carries an `IndexFingerprint`: the index's uuid (new on
every re-creation) and its codec generation (`_meta.osneural.codec_generation`, a uuid ingestion
writes whenever it stores codecs, also written as `generation` in the codec document). Checking it
costs one filtered `GET <index>` (cluster metadata on the coordinating node; no shard is touched),
which the `Searcher` runs concurrently with the first stages of every query; on a mismatch it
reloads the description and runs the query again, so a query is never answered with codecs other
than those of the index it searched. Indices built before generations existed fall back to the
index uuid plus the codec document's `_seq_no`/`_primary_term` (one more realtime GET without
`_source`). A codec document whose generation differs from the index's belongs to another build
of that index (a deleted one, or a rebuild still being written): it is refused
(`StaleCodecsError`), never used.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from osneural.mappings import DOCUMENT_FIELDS, reserved_field
from osneural.mappings.stored_vectors import VectorField, vector_fields

from osneural.errors import IndexMismatchError, StageError, StaleCodecsError

if TYPE_CHECKING:
    from osneural.plugin.spec import PipelineSpec



@dataclass(frozen=True)
class IndexFingerprint:
    """What identifies one build of an index and its codecs (see the module docstring).

    `codec_version` is only tracked for indices without a codec generation (older builds)."""

    uuid: str | None
    generation: str | None
    codec_version: tuple[int, int] | None = None


def stage_types(where: str) -> Any:
    """The registry of the stages listed under `where` (`first_stages` or `rescore`)."""
    from osneural.plugin.rescoring import RESCORERS
    from osneural.plugin.stages import FIRST_STAGES

    return FIRST_STAGES if where == "first_stages" else RESCORERS


def _all_stages(spec: PipelineSpec) -> list[tuple[str, int, Any, Any]]:
    """(where, position, stage spec, stage type) of every stage of `spec`, first stages first."""
    return [(where, i, stage, stage_types(where).of(stage))
            for where, stages in (("first_stages", spec.first_stages), ("rescore", spec.rescore))
            for i, stage in enumerate(stages)]


def stage_field(where: str, stage: Any) -> str | None:
    """The document field a stage reads (None for bm25, whose fields are its own parameter)."""
    return stage_types(where).of(stage).index_field(stage)


#: encoder kind each representation is computed with
ENCODER_KIND = {"dense": "dense", "sparse": "sparse", "multivector": "multivector"}


def _flatten_properties(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, spec in props.items():
        out[prefix + name] = spec
        if "properties" in spec:
            out.update(_flatten_properties(spec["properties"], prefix + name + "."))
    return out


@dataclass
class IndexResources:
    """Layout and codecs of one index, as this process sees them."""

    index: str
    fields: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    codec_data: dict[str, Any] | None = None
    fingerprint: IndexFingerprint = field(default_factory=lambda: IndexFingerprint(None, None))
    #: the doc-values field hits' ids are read from (`id_field_of`); None: `_id`
    id_field: str | None = None
    #: the top-level `knn_vector` fields and where their values live (`_source` or only the
    #: vector index), for stages that read stored vectors back
    vectors: dict[str, VectorField] = field(default_factory=dict)
    _bundle: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def has_field(self, name: str) -> bool:
        return name in self.fields

    @functools.cached_property
    def representation_fields(self) -> tuple[str, ...]:
        """The fields osneural writes for its own stages (vectors, weights, codes, the id copy),
        which a hit's `_source` leaves out unless the request asks for `_source` itself. Worked
        out once per description (every query's page fetch reads it)."""
        return tuple(sorted(name for name in self.fields
                            if reserved_field(name) and name not in DOCUMENT_FIELDS))

    def field_type(self, name: str) -> str | None:
        spec = self.fields.get(name)
        return None if spec is None else spec.get("type", "object")

    def space_type(self, name: str) -> str:
        spec = self.fields.get(name, {})
        return spec.get("space_type") or spec.get("method", {}).get("space_type") or "cosinesimil"

    def check_spec(self, spec: PipelineSpec) -> None:
        """Every stage's field exists; otherwise a 400 naming the stage and the field."""
        for where, i, stage, kind in _all_stages(spec):
            kind.check_index(stage, self, f"{where}[{i}] ({stage.type})")

    @property
    def codecs(self) -> Any:
        """The index's `CodecBundle`, decoded from the companion document on first use."""
        with self._lock:
            if self._bundle is None:
                if self.codec_data is None:
                    raise StageError(
                        f"index {self.index!r} has no companion codec document in "
                        "'osneural-codecs'; re-run the ingestion"
                    )
                from osneural.codecs import CodecBundle

                self._bundle = CodecBundle.from_dict(self.codec_data)
            return self._bundle

    def codec(self, name: str, stage: str) -> Any:
        value = getattr(self.codecs, name, None)
        if value is None:
            raise StageError(f"{stage}: index {self.index!r} has no {name} codec")
        return value

    def expected_encoder(self, kind: str) -> dict[str, Any] | None:
        return (self.meta.get("encoders") or {}).get(kind)


#: `filter_path` of the per-query check: the index uuid and codec generation, nothing else
_FINGERPRINT_FILTER = "*.settings.index.uuid,*.mappings._meta.osneural.codec_generation"


def _one_index(response: dict[str, Any], index: str) -> dict[str, Any]:
    if len(response) != 1:
        raise StageError(f"{index!r} resolves to {len(response)} indices; name one index")
    (_name, body), = response.items()
    return body


def _index_fingerprint_parts(body: dict[str, Any]) -> tuple[str | None, str | None]:
    uuid = ((body.get("settings") or {}).get("index") or {}).get("uuid")
    meta = ((body.get("mappings") or {}).get("_meta") or {}).get("osneural") or {}
    generation = meta.get("codec_generation")
    return uuid, str(generation) if generation else None


def id_field_of(body: dict[str, Any]) -> str | None:
    """`ID_FIELD` when an index (its `indices.get` body) maps it as keyword doc values and
    keeps it right on every write (`ID_PIPELINE` is its final pipeline), else None."""
    from osneural.mappings import ID_FIELD, ID_PIPELINE

    props = (body.get("mappings") or {}).get("properties", {})
    spec = _flatten_properties(props).get(ID_FIELD) or {}
    pipeline = ((body.get("settings") or {}).get("index") or {}).get("final_pipeline")
    if spec.get("type") != "keyword" or spec.get("doc_values") is False:
        return None
    return ID_FIELD if pipeline == ID_PIPELINE else None


def describe_index(client: Any, index: str) -> IndexResources:
    """Read the mapping, uuid and codec document of `index` (NotFoundError passes through as 404).

    The codec document is accepted only when its `generation` equals the index's
    `codec_generation`; one mismatch is re-read once (a rebuild may have replaced both between
    our two reads), a second one raises `StaleCodecsError`.
    """
    for attempt in range(2):
        response = client.indices.get(index=index)
        body = _one_index(response, index)
        mappings = body.get("mappings", {})
        fields = _flatten_properties(mappings.get("properties", {}))
        meta = (mappings.get("_meta") or {}).get("osneural") or {}
        uuid, generation = _index_fingerprint_parts(body)
        # the codec document is keyed by the concrete index: an app may query through an alias
        found = _codec_document(client, next(iter(response))) if meta else None
        codec_data, doc_generation, version = found if found else (None, None, None)
        if generation is None or codec_data is None or doc_generation == generation:
            fingerprint = IndexFingerprint(uuid, generation, None if generation else version)
            return IndexResources(index=index, fields=fields, meta=meta, codec_data=codec_data,
                                  fingerprint=fingerprint, id_field=id_field_of(body),
                                  vectors=vector_fields(mappings))
        if attempt == 1:
            raise StaleCodecsError(
                f"index {index!r} has codec generation {generation!r} but its codec document in "
                f"'osneural-codecs' has generation {doc_generation!r}: it belongs to another build "
                "of the index (deleted, or a rebuild still being written); refusing to use it. "
                "Retry once ingestion has finished, or re-run the ingestion",
                index=index, expected=generation, found=doc_generation)
    raise AssertionError("unreachable")  # pragma: no cover


def current_fingerprint(client: Any, index: str, legacy: bool = False) -> IndexFingerprint:
    """The fingerprint of `index` as the cluster has it now: the cheap per-query check.

    `legacy` (the cached build had no codec generation) adds the codec document's version."""
    response = client.indices.get(index=index, filter_path=_FINGERPRINT_FILTER)
    uuid, generation = _index_fingerprint_parts(_one_index(response, index))
    version = None
    if legacy and generation is None:
        # keyed by the concrete index, as `describe_index` reads it: `index` may be an alias
        version = _codec_version(client, next(iter(response)))
    return IndexFingerprint(uuid, generation, version)


def _codec_version(client: Any, index: str) -> tuple[int, int] | None:
    from opensearchpy.exceptions import NotFoundError

    from osneural.codecs.bundle import CODECS_INDEX

    try:
        doc = client.get(index=CODECS_INDEX, id=index, _source=False)
    except NotFoundError:
        return None
    return int(doc.get("_seq_no", -1)), int(doc.get("_primary_term", -1))


def _codec_document(
    client: Any, index: str
) -> tuple[dict[str, Any], str | None, tuple[int, int] | None] | None:
    """(bundle dict, its generation, (_seq_no, _primary_term)) of `index`'s companion document,
    or None when there is none.

    Accepts both the bundle stored at the top level of the document (`store_bundle`) and nested
    under `codecs` (`codec_store.save_codecs`), so either writer works.
    """
    from opensearchpy.exceptions import NotFoundError

    from osneural.codecs.bundle import CODECS_INDEX

    try:
        doc = client.get(index=CODECS_INDEX, id=index)
    except NotFoundError:
        return None
    source = dict(doc["_source"])
    generation = source.pop("generation", None)
    version = (int(doc.get("_seq_no", -1)), int(doc.get("_primary_term", -1)))
    generation = str(generation) if generation else None
    if source.get("kind") == "bundle":
        source.pop("target_index", None)
        return source, generation, version
    nested = source.get("codecs")
    return (nested if isinstance(nested, dict) else source), generation, version


def spec_encoder_kinds(spec: PipelineSpec) -> list[str]:
    """Encoder kinds a spec's stages need, in a stable order."""
    return sorted({k for _w, _i, stage, kind in _all_stages(spec) for k in kind.encoder_kinds(stage)})


def spec_needs_codecs(spec: PipelineSpec) -> bool:
    """Whether any stage reads the codec bundle (so it is decoded before the deadline)."""
    return any(kind.needs_codecs(stage) for _w, _i, stage, kind in _all_stages(spec))


#: onnxruntime threads per query-encoder run. One query is a few dozen tokens: a pool of
#: intra-op threads gains little on it, and concurrent queries (serve, 8 clients) then run N
#: pools on the same cores as numpy and the node. Measured on SciFact queries (2-core box, MiniLM):
#: p50 50.7 -> 35.4 ms at 1 client, QPS 22 -> 27 at 8. `OSNEURAL_QUERY_THREADS=0` restores
#: onnxruntime's default (one thread per core).
def query_encoder_threads() -> int | None:
    import os

    raw = os.environ.get("OSNEURAL_QUERY_THREADS", "1").strip()
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"OSNEURAL_QUERY_THREADS={raw!r}: expected an integer >= 0") from None
    if n < 0:
        raise ValueError(f"OSNEURAL_QUERY_THREADS={raw!r}: expected an integer >= 0")
    return n or None


#: weights of the query encoders, OSNEURAL_QUERY_PRECISION: `auto` (default), `fp32` or `int8`.
#: `auto` runs dense and sparse query encoders in int8 (the `model.int8.onnx` variant of the same
#: export, which `osneural export` writes by default, so the index's encoder check still holds)
#: and falls back to fp32, with a log line, for an export without it; the multivector encoder
#: too, whose int8 pass then gives the dense vector as well. int8 halves the encoder's CPU per
#: query, which is what bounds a saturated query node; on whole corpora (exact search,
#: `bench/int8_quality.py`) int8 query encoders cost at most 0.26 nDCG@10 point against fp32
#: (docs/peer-bench.md). `fp32` keeps the old behaviour.
def query_encoder_precision() -> str:
    from osneural.encoders.defaults import precision_from_env

    return precision_from_env("OSNEURAL_QUERY_PRECISION")


class EncoderCache:
    """Query encoders by kind, loaded once per process."""

    def __init__(self, precision: str | None = None) -> None:
        self._encoders: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.precision = precision or query_encoder_precision()
        if self.precision not in ("auto", "fp32", "int8"):
            raise ValueError(f"query encoder precision {self.precision!r}: expected 'auto', "
                             "'fp32' or 'int8'")

    def get(self, kind: str) -> Any:
        with self._lock:
            if kind not in self._encoders:
                from osneural.encoders import load_default

                threads = query_encoder_threads()
                self._encoders[kind] = load_default(kind, intra_op_threads=threads,
                                                    inter_op_threads=threads,
                                                    precision=self.precision)
            return self._encoders[kind]

    def warm(self, kinds: list[str] | tuple[str, ...] | set[str]) -> list[str]:
        """Load every encoder in `kinds` now (not at the first query); returns the kinds loaded."""
        for kind in kinds:
            self.get(kind)
        return sorted(set(kinds))

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._encoders)

    def put(self, kind: str, encoder: Any) -> None:
        """Install an encoder (e.g. a non-default export) for `kind`."""
        with self._lock:
            self._encoders[kind] = encoder

    def checked(self, kind: str, res: IndexResources, stage: str) -> Any:
        """The encoder for `kind`, verified against what the index was built with."""
        encoder = self.get(kind)
        expected = res.expected_encoder(kind)
        if expected and expected.get("sha256"):
            manifest = getattr(encoder, "manifest", None) or {}
            have = manifest.get("sha256") if isinstance(manifest, dict) else None
            if have != expected["sha256"]:
                raise IndexMismatchError(
                    f"{stage}: index {res.index!r} was built with {kind} encoder "
                    f"{expected.get('name')!r} (sha256 {str(expected['sha256'])[:12]}...), "
                    f"this node loads {manifest.get('name') if isinstance(manifest, dict) else '?'!r} "
                    f"(sha256 {str(have)[:12]}...)",
                    index=res.index, expected=expected.get("sha256"), found=have)
        return encoder


class ResourceCache:
    """Index descriptions keyed by (cluster, index); encoders shared across indices."""

    def __init__(self, encoders: EncoderCache | None = None) -> None:
        from osneural.plugin.code_cache import CodeCache

        self.encoders = encoders or EncoderCache()
        self.codes = CodeCache()  # doc-value bytes rescoring stages read, version-checked
        self._indices: dict[tuple[str, str], IndexResources] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _cluster_key(client: Any) -> str:
        hosts = getattr(getattr(client, "transport", None), "hosts", None) or []
        return repr(hosts)

    def index(
        self,
        client: Any,
        index: str,
        refresh: bool = False,
        expect: IndexFingerprint | None = None,
    ) -> IndexResources:
        """The cached description of `index`, or a fresh one when asked (`refresh`) or when the
        cached one's fingerprint is not `expect` (so concurrent queries that all saw the same
        rebuild reload it once, not once each)."""
        key = (self._cluster_key(client), index)
        with self._lock:
            cached = self._indices.get(key)
        if cached is not None and not refresh and (expect is None or cached.fingerprint == expect):
            return cached
        res = describe_index(client, index)
        with self._lock:
            self._indices[key] = res
        return res

    def is_current(self, client: Any, res: IndexResources) -> bool:
        """Whether `res` still describes the build of its index the cluster holds now."""
        legacy = res.fingerprint.generation is None
        return current_fingerprint(client, res.index, legacy=legacy) == res.fingerprint

    def warm(
        self, kinds: list[str] | tuple[str, ...] | set[str] | None = None,
        client: Any = None, indices: list[str] | tuple[str, ...] = (),
    ) -> list[str]:
        """Load encoders before any query needs them; returns the kinds now loaded.

        `kinds` names them outright; with a `client`, the encoders each of `indices` was built
        with (its `_meta.osneural.encoders`) are added, and those indices' descriptions and codec
        bundles are loaded too. `serve` calls this at startup so no first query pays for it."""
        wanted = set(kinds or ())
        for index in indices:
            res = self.index(client, index)
            wanted |= set(res.meta.get("encoders") or {})
            if res.codec_data is not None:
                res.codecs  # noqa: B018 - decode the bundle now
        self.encoders.warm(sorted(wanted & set(ENCODER_KIND)))
        return self.encoders.loaded()

    def forget(self, index: str) -> None:
        with self._lock:
            for key in [k for k in self._indices if k[1] == index]:
                del self._indices[key]


_DEFAULT: ResourceCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> ResourceCache:
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ResourceCache()
        return _DEFAULT
