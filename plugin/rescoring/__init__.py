"""Rescoring stages: re-rank the top `window` candidates with a finer (costlier) score.

One module per stage type (`hamming`, `pq`, `dense`, `maxsim`, `prf`), each with its spec model
and its score (`osneural.plugin.rescoring.base`), found through `register_rescorer`'s registry;
the fetching and the compiled-kernel scoring they share are in `osneural.plugin.rescoring.scores`.
"""

from __future__ import annotations

from osneural.plugin.rescoring.base import RescoreSpec, RescoreType
from osneural.plugin.rescoring.dense import DenseExact, DenseRescore
from osneural.plugin.rescoring.hamming import Hamming, HammingRescore
from osneural.plugin.rescoring.maxsim import TOKEN_FIELDS, MaxSim, MaxSimRescore
from osneural.plugin.rescoring.pq import PQ, PQRescore
from osneural.plugin.rescoring.prf import PRF
from osneural.plugin.rescoring.registry import (
    RESCORERS,
    register_rescorer,
    rescorer,
    unregister_rescorer,
)
from osneural.plugin.rescoring.scores import (
    combine_scores,
    decode_doc_value,
    dense_exact_scores,
    fetch_codes,
    hamming_scores,
    maxsim_float16_scores,
    maxsim_scores,
    pq_scores,
    reorder,
)

# the built-in rescoring stages, in the order spec errors list them
for _type in (Hamming, PQ, DenseExact, MaxSim, PRF):
    register_rescorer(_type)

__all__ = [
    "RESCORERS", "TOKEN_FIELDS", "DenseRescore", "HammingRescore", "MaxSimRescore", "PQRescore",
    "RescoreSpec", "RescoreType", "combine_scores", "decode_doc_value", "dense_exact_scores",
    "fetch_codes", "hamming_scores", "maxsim_float16_scores", "maxsim_scores", "pq_scores",
    "register_rescorer", "reorder", "rescorer", "unregister_rescorer",
]
