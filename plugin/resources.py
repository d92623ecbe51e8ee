"""Per-process cache of what queries need: index layout, query encoders and the index's codecs.

Loading an ONNX encoder or fetching codebooks takes far longer than a query, so both are loaded
once per process (the HTTP service keeps them warm) and shared by every request. The index's
`_meta.osneural` is checked against the loaded encoder's sha256: an index built with another
encoder produces vectors from another space, which would silently return garbage, so the query
fails loudly instead (`IndexMismatchError`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from osneural.plugin.spec import PipelineSpec


class StageError(ValueError):
    """The index cannot serve a stage of the spec (a 400 naming the stage)."""


class IndexMismatchError(StageError):
    """The index was built with a different encoder or codec than this node has."""


#: document field (or codec) each stage needs, by spec location prefix and type
STAGE_FIELDS: dict[tuple[str, str], str] = {
    ("first_stages", "dense"): "dense",
    ("first_stages", "sparse"): "sparse",
    ("first_stages", "binary"): "bin_tokens",
    ("first_stages", "fde"): "fde",
    ("rescore", "hamming"): "bin_code",
    ("rescore", "pq"): "dense_pq",
    ("rescore", "dense"): "dense",
    ("rescore", "maxsim"): "mv_codes",
}

#: field of each stored token form the `maxsim` rescoring stage can read
TOKEN_FIELDS = {"pq": "mv_codes", "float16": "mv_f16"}


def stage_field(where: str, stage: Any) -> str | None:
    """The document field a stage reads (None for bm25, whose fields are its own parameter)."""
    if stage.type == "maxsim":
        return TOKEN_FIELDS[stage.tokens]
    return getattr(stage, "field", None) or STAGE_FIELDS.get((where, stage.type))

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
    _bundle: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def has_field(self, name: str) -> bool:
        return name in self.fields

    def field_type(self, name: str) -> str | None:
        spec = self.fields.get(name)
        return None if spec is None else spec.get("type", "object")

    def space_type(self, name: str) -> str:
        spec = self.fields.get(name, {})
        return spec.get("space_type") or spec.get("method", {}).get("space_type") or "cosinesimil"

    def check_spec(self, spec: PipelineSpec) -> None:
        """Every stage's field exists; otherwise a 400 naming the stage and the field."""
        for where, stages in (("first_stages", spec.first_stages), ("rescore", spec.rescore)):
            for i, stage in enumerate(stages):
                wanted = stage_field(where, stage)
                if stage.type == "bm25":
                    continue
                if wanted and not self.has_field(wanted):
                    raise StageError(
                        f"{where}[{i}] ({stage.type}): index {self.index!r} has no field "
                        f"{wanted!r}; it was not built with that representation"
                    )
        for i, stage in enumerate(spec.first_stages):
            if stage.type == "bm25":
                missing = [f for f in stage.fields if f.split("^")[0] not in self.fields
                           and "*" not in f]
                if missing:
                    raise StageError(
                        f"first_stages[{i}] (bm25): index {self.index!r} has no field(s) {missing}"
                    )

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
                from osneural.ingest.codecs import CodecBundle

                self._bundle = CodecBundle.from_dict(self.codec_data)
            return self._bundle

    def codec(self, name: str, stage: str) -> Any:
        value = getattr(self.codecs, name, None)
        if value is None:
            raise StageError(f"{stage}: index {self.index!r} has no {name} codec")
        return value

    def expected_encoder(self, kind: str) -> dict[str, Any] | None:
        return (self.meta.get("encoders") or {}).get(kind)


def describe_index(client: Any, index: str) -> IndexResources:
    """Read the mapping and codec document of `index` (NotFoundError passes through as 404)."""
    mapping = client.indices.get_mapping(index=index)
    if len(mapping) != 1:
        raise StageError(f"{index!r} resolves to {len(mapping)} indices; name one index")
    (_name, body), = mapping.items()
    mappings = body.get("mappings", {})
    fields = _flatten_properties(mappings.get("properties", {}))
    meta = (mappings.get("_meta") or {}).get("osneural") or {}
    codec_data = _codec_document(client, index) if meta else None
    return IndexResources(index=index, fields=fields, meta=meta, codec_data=codec_data)


def _codec_document(client: Any, index: str) -> dict[str, Any] | None:
    """The bundle dict of `index`'s companion document, or None when there is none.

    Accepts both the bundle stored at the top level of the document (`store_bundle`) and nested
    under `codecs` (`codec_store.save_codecs`), so either writer works.
    """
    from opensearchpy.exceptions import NotFoundError
    from osneural.ingest.codecs.bundle import CODECS_INDEX

    try:
        source = dict(client.get(index=CODECS_INDEX, id=index)["_source"])
    except NotFoundError:
        return None
    if source.get("kind") == "bundle":
        source.pop("target_index", None)
        return source
    nested = source.get("codecs")
    return nested if isinstance(nested, dict) else source


class EncoderCache:
    """Query encoders by kind, loaded once per process."""

    def __init__(self) -> None:
        self._encoders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> Any:
        with self._lock:
            if kind not in self._encoders:
                from osneural.ingest.encoders import load_default

                self._encoders[kind] = load_default(kind)
            return self._encoders[kind]

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
                    f"(sha256 {str(have)[:12]}...)"
                )
        return encoder


class ResourceCache:
    """Index descriptions keyed by (cluster, index); encoders shared across indices."""

    def __init__(self, encoders: EncoderCache | None = None) -> None:
        self.encoders = encoders or EncoderCache()
        self._indices: dict[tuple[str, str], IndexResources] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _cluster_key(client: Any) -> str:
        hosts = getattr(getattr(client, "transport", None), "hosts", None) or []
        return repr(hosts)

    def index(self, client: Any, index: str, refresh: bool = False) -> IndexResources:
        key = (self._cluster_key(client), index)
        with self._lock:
            cached = self._indices.get(key)
        if cached is not None and not refresh:
            return cached
        res = describe_index(client, index)
        with self._lock:
            self._indices[key] = res
        return res

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
