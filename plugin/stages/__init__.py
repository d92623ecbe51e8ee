"""First stages: one module per stage type, found through the registry.

A first stage turns the query into one OpenSearch query whose hits are candidates (`bm25`,
`dense`, `sparse`, `binary`, `fde`). Each module holds the stage's spec model, its query body
and what it needs of the query and the index (`osneural.plugin.stages.base`); `register_stage`
makes a type usable in pipeline specs (`osneural.plugin.stages.registry`). Body builders are pure
functions of the stage spec and the already encoded query, so they are unit-testable without a
node and the same body is sent by every interface.
"""

from __future__ import annotations

from osneural.plugin.stages.base import FirstStageType, StageContext, StageSpec, StageType
from osneural.plugin.stages.binary import Binary, BinaryStage, binary_query
from osneural.plugin.stages.bm25 import BM25, BM25Stage, bm25_query
from osneural.plugin.stages.dense import Dense, DenseStage, dense_query
from osneural.plugin.stages.fde import FDE, FDEStage, fde_query
from osneural.plugin.stages.knn import knn_query as _knn_query
from osneural.plugin.stages.registry import (
    FIRST_STAGES,
    Registry,
    first_stage,
    register_stage,
    unregister_stage,
)
from osneural.plugin.stages.request import (
    STAGE_FILTER,
    PartialResultsError,
    candidates,
    complete,
    encode_body,
    run_query,
    search_body,
    send,
    with_filter,
)
from osneural.plugin.stages.sparse import Sparse, SparseStage, sparse_query

# the built-in first stages, in the order spec errors list them
for _type in (BM25, Dense, Sparse, Binary, FDE):
    register_stage(_type)

__all__ = [
    "FIRST_STAGES", "STAGE_FILTER", "BM25Stage", "BinaryStage", "DenseStage", "FDEStage",
    "FirstStageType", "PartialResultsError", "Registry", "SparseStage", "StageContext",
    "StageSpec", "StageType", "binary_query", "bm25_query", "candidates", "complete",
    "dense_query", "encode_body", "fde_query", "first_stage", "register_stage", "run_query",
    "search_body", "send", "sparse_query", "unregister_stage", "with_filter", "_knn_query",
]
