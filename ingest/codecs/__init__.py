"""Codecs: what encoder outputs become before OpenSearch indexes them and kernels read them.

Every trained codec round-trips through `to_dict()` / `from_dict()` (JSON-safe, pickle-free);
`CodecBundle` groups an index's codecs and `store_bundle` / `load_bundle` keep them in the
`osneural-codecs` companion index.
"""

from osneural.ingest.codecs.binary import BinaryQuantizer, hamming_distances
from osneural.ingest.codecs.bundle import CODECS_INDEX, CodecBundle, load_bundle, store_bundle
from osneural.ingest.codecs.mih import code_tokens, guaranteed_distance, query_tokens
from osneural.ingest.codecs.muvera import MuveraFDE, chamfer
from osneural.ingest.codecs.pooling import pool_tokens
from osneural.ingest.codecs.pq import ProductQuantizer
from osneural.ingest.codecs.serialization import array_to_b64, b64_to_array

__all__ = [
    "CODECS_INDEX",
    "BinaryQuantizer",
    "CodecBundle",
    "MuveraFDE",
    "ProductQuantizer",
    "array_to_b64",
    "b64_to_array",
    "chamfer",
    "code_tokens",
    "guaranteed_distance",
    "hamming_distances",
    "load_bundle",
    "pool_tokens",
    "query_tokens",
    "store_bundle",
]
