"""All codecs of one index in one JSON-safe object, and its companion document in OpenSearch.

Ingestion trains the codecs and stores the bundle; every query node loads it with one GET, so a
node never needs a shared file system or the training sample. The companion index
(`osneural-codecs`, one document per target index, `_id` = target index name) maps nothing but a
few keyword fields: the base64 payloads stay in `_source` only, unindexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from osneural.codecs.binary import BinaryQuantizer
from osneural.codecs.muvera import MuveraFDE
from osneural.codecs.pq import ProductQuantizer
from osneural.codecs.residual import ResidualCodec
from osneural.codecs.serialization import FORMAT_VERSION
from osneural.errors import CodecError

BUNDLE_KIND = "bundle"
CODECS_INDEX = "osneural-codecs"
_LOADERS = {"binary": BinaryQuantizer, "pq": ProductQuantizer, "muvera": MuveraFDE,
            "residual": ResidualCodec}
_SLOTS = {"binary": "binary", "pq_dense": "pq", "pq_tokens": "pq", "res_tokens": "residual",
          "fde": "muvera"}


@dataclass
class CodecBundle:
    """The trained codecs of one index; any of them may be absent.

    `params` holds plain JSON settings that are not trained state but must agree between ingest
    and query (e.g. `{"mih_m": 16, "mih_radius": 1, "pool_factor": 2}`).
    """

    binary: BinaryQuantizer | None = None
    pq_dense: ProductQuantizer | None = None
    pq_tokens: ProductQuantizer | None = None
    res_tokens: ResidualCodec | None = None
    fde: MuveraFDE | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def token_codec(self) -> ProductQuantizer | ResidualCodec | None:
        """The codec of the stored token codes (`mv_codes`): bit codes, else PQ (indices built
        before bit codes existed hold only `pq_tokens`), else None."""
        if self.res_tokens is not None and self.pq_tokens is not None:
            raise CodecError("codec bundle holds both res_tokens and pq_tokens; mv_codes has one codec")
        return self.res_tokens if self.res_tokens is not None else self.pq_tokens

    def to_dict(self) -> dict[str, Any]:
        codecs = {
            slot: getattr(self, slot).to_dict()
            for slot in _SLOTS
            if getattr(self, slot) is not None
        }
        return {
            "kind": BUNDLE_KIND,
            "version": FORMAT_VERSION,
            "codecs": codecs,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecBundle:
        if not isinstance(data, dict) or data.get("kind") != BUNDLE_KIND:
            raise CodecError("not a codec bundle dict (kind != 'bundle')")
        if data.get("version") != FORMAT_VERSION:
            raise CodecError(
                f"codec bundle version {data.get('version')!r}, this build reads {FORMAT_VERSION}"
            )
        bundle = cls(params=dict(data.get("params") or {}))
        for slot, codec_data in (data.get("codecs") or {}).items():
            if slot not in _SLOTS:
                raise CodecError(f"codec bundle: unknown slot {slot!r} (known: {sorted(_SLOTS)})")
            kind = _SLOTS[slot]
            if codec_data.get("kind") != kind:
                raise CodecError(
                    f"codec bundle: slot {slot!r} holds kind {codec_data.get('kind')!r}, "
                    f"expected {kind!r}"
                )
            setattr(bundle, slot, _LOADERS[kind].from_dict(codec_data))
        return bundle


def store_bundle(
    client: Any, index_name: str, bundle: CodecBundle, codecs_index: str = CODECS_INDEX,
    *, generation: str | None = None,
) -> None:
    """Write the bundle as the companion document of `index_name` (created or replaced).

    `generation` (a uuid4 hex, also in the index's `_meta.osneural.codec_generation`) is stored
    as the top-level field `generation`: query nodes compare the two to notice new codecs."""
    if not client.indices.exists(index=codecs_index):
        client.indices.create(
            index=codecs_index,
            body={
                "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-all"}},
                "mappings": {
                    "dynamic": False,
                    "properties": {
                        "target_index": {"type": "keyword"},
                        "kind": {"type": "keyword"},
                        "version": {"type": "integer"},
                        "generation": {"type": "keyword"},
                    },
                },
            },
            ignore=400,  # created concurrently by another ingester
        )
    document = {"target_index": index_name, **bundle.to_dict()}
    if generation is not None:
        document["generation"] = generation
    # refresh=true, not wait_for: wait_for waits for the codec index's next scheduled refresh
    # (up to its 1 s interval: 0.8-1.0 s of every new index's load), true refreshes this one
    # small shard at once; both return only once searches see the document
    client.index(index=codecs_index, id=index_name, body=document, refresh="true")


def load_bundle(client: Any, index_name: str, codecs_index: str = CODECS_INDEX) -> CodecBundle:
    """Read the companion document of `index_name`; a clear error when there is none."""
    from opensearchpy.exceptions import NotFoundError

    try:
        response = client.get(index=codecs_index, id=index_name)
    except NotFoundError as exc:
        raise LookupError(f"no codecs stored for index {index_name!r} in {codecs_index!r}") from exc
    source = dict(response["_source"])
    source.pop("target_index", None)
    source.pop("generation", None)
    return CodecBundle.from_dict(source)
