"""The companion codec document: trained codecs of an index, stored in OpenSearch itself.

Query nodes need the same binary quantizer, PQ codebooks, FDE parameters and IDF table that
ingestion used; keeping them in the cluster (index `osneural-codecs`, `_id` = target index) means
nothing has to be copied between machines and an index and its codecs are backed up together.

The document format is owned by `osneural.codecs.bundle` (`store_bundle` / `load_bundle`),
which the query side reads too; this module only adds what ingestion needs on top: "no codecs
yet" as None instead of an exception, an immediate refresh, and deletion.
"""

from __future__ import annotations

import uuid
from typing import Any

from opensearchpy.exceptions import NotFoundError

from osneural.codecs.bundle import CODECS_INDEX, CodecBundle, load_bundle, store_bundle

CODEC_INDEX = CODECS_INDEX


def new_generation() -> str:
    """A fresh codec generation: written to the codec document and `_meta.osneural`, so a
    query node's cached codecs are known stale as soon as the two differ from what it holds."""
    return uuid.uuid4().hex


def save_codecs(client: Any, index: str, bundle: CodecBundle, codec_index: str = CODEC_INDEX,
                *, generation: str | None = None) -> None:
    """Store the bundle of `index` (replacing any older one), visible to searches at once."""
    store_bundle(client, index, bundle, codec_index, generation=generation)  # refreshes


def load_codecs(client: Any, index: str, codec_index: str = CODEC_INDEX) -> CodecBundle | None:
    """The stored bundle of `index`, or None when there is none (a fresh index)."""
    if not client.indices.exists(index=codec_index):
        return None
    try:
        return load_bundle(client, index, codec_index)
    except LookupError:
        return None


def delete_codecs(client: Any, index: str, codec_index: str = CODEC_INDEX) -> bool:
    """Remove the codec document of `index`; True if one existed."""
    try:
        client.delete(index=codec_index, id=index, refresh=True)
    except NotFoundError:
        return False
    return True
