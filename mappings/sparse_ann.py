"""The index that holds SEISMIC sparse vectors (neural-search's `sparse_vector` field, >= 3.3).

Why an index of its own beside the main one: SEISMIC needs the index setting `index.sparse:
true`, which installs neural-search's codec, and an index with `knn_vector` fields has the k-NN
plugin's codec; OpenSearch lets one plugin own an index's codec, so creating an index with both
fails ("existing codec service factory already overridden in: ...KNNPlugin"). The companion
index holds only `_id` and the weights; the `sparse` first stage queries it and its ids are the
main index's ids, so fusion and rescoring are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: the companion index of `index` is `index + COMPANION_SUFFIX`
COMPANION_SUFFIX = "-sparse-ann"
#: the sparse_vector field of the companion index
FIELD = "sparse_ann"


def companion_index(index: str) -> str:
    """The name of the index that holds `index`'s SEISMIC sparse vectors."""
    return f"{index}{COMPANION_SUFFIX}"


@dataclass(frozen=True)
class SeismicParams:
    """`method.parameters` of the sparse_vector field (neural-search's names and defaults).

    `approximate_threshold`: segments with fewer documents are scored exactly (SEISMIC's
    clustered postings are built only at or above it; neural-search's default is 1,000,000).
    `n_postings`: documents kept per posting list (None: neural-search's 0.0005 x segment docs).
    `quantization_ceiling_ingest`: document weights are quantized to a byte up to this value and
    clipped above it; SPLADE document weights reach about 3, hence neural-search's default 3.
    """

    approximate_threshold: int = 1_000_000
    n_postings: int | None = None
    cluster_ratio: float = 0.1
    summary_prune_ratio: float = 0.4
    quantization_ceiling_ingest: float = 3.0
    quantization_ceiling_search: float = 16.0

    def __post_init__(self) -> None:
        if self.approximate_threshold < 0:
            raise ValueError(f"approximate_threshold must be >= 0, got {self.approximate_threshold}")
        if self.n_postings is not None and self.n_postings <= 0:
            raise ValueError(f"n_postings must be > 0, got {self.n_postings}")
        if not 0 < self.cluster_ratio < 1:
            raise ValueError(f"cluster_ratio must be in (0, 1), got {self.cluster_ratio}")
        if not 0 < self.summary_prune_ratio <= 1:
            raise ValueError(f"summary_prune_ratio must be in (0, 1], got {self.summary_prune_ratio}")
        for name in ("quantization_ceiling_ingest", "quantization_ceiling_search"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def parameters(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def seismic_index_body(params: SeismicParams = SeismicParams(), shards: int = 1,
                       replicas: int = 0) -> dict[str, Any]:
    """Settings and mappings of a companion index (`PUT <index>-sparse-ann`)."""
    return {
        "settings": {"index": {"sparse": True, "number_of_shards": shards,
                               "number_of_replicas": replicas}},
        "mappings": {
            "dynamic": "strict",
            "_meta": {"osneural": {"sparse_ann": {"method": "seismic", **params.parameters()}}},
            "properties": {FIELD: {"type": "sparse_vector",
                                   "method": {"name": "seismic",
                                              "parameters": params.parameters()}}},
        },
    }
