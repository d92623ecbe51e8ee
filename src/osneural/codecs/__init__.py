"""Codecs: what encoder outputs become before OpenSearch indexes them and kernels read them.

Every trained codec round-trips through `to_dict()` / `from_dict()` (JSON-safe, pickle-free);
`CodecBundle` groups an index's codecs and `store_bundle` / `load_bundle` keep them in the
`osneural-codecs` companion index.
"""

from osneural.codecs.binary import BinaryQuantizer, hamming_distances
from osneural.codecs.bundle import CODECS_INDEX, CodecBundle, load_bundle, store_bundle
from osneural.codecs.mih import code_tokens, guaranteed_distance, query_tokens
from osneural.codecs.muvera import MuveraFDE, chamfer
from osneural.codecs.pooling import pool_tokens
from osneural.codecs.pq import ProductQuantizer
from osneural.codecs.residual import ResidualCodec
from osneural.codecs.serialization import array_to_b64, b64_to_array
from osneural.codecs.tokens import TokenCodec, maxsim_blobs

__all__ = [
    "CODECS_INDEX",
    "BinaryQuantizer",
    "CodecBundle",
    "MuveraFDE",
    "ProductQuantizer",
    "ResidualCodec",
    "TokenCodec",
    "array_to_b64",
    "b64_to_array",
    "chamfer",
    "code_tokens",
    "guaranteed_distance",
    "hamming_distances",
    "load_bundle",
    "maxsim_blobs",
    "pool_tokens",
    "query_tokens",
    "store_bundle",
]
