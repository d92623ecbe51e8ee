"""The SEISMIC sparse first stage: a `neural_sparse` query with raw `query_tokens` on the
companion index's `sparse_vector` field (see `osneural.mappings.sparse_ann`).

osneural encodes the query itself (model or inference-free, as for the `rank_features` stage) and
sends the weights keyed by vocabulary id, which is what neural-search's sparse_vector field and
query take (string keys that parse as non-negative integers). `method_parameters` carry the
query-time knobs: `k` (how many neighbours SEISMIC returns per shard), `top_n` (query terms
kept, highest weight first) and `heap_factor` (recall against speed: above 1 widens the search),
40 and 1.5 unless the spec says otherwise (`DEFAULT_TOP_N`, `DEFAULT_HEAP_FACTOR`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from osneural.errors import OsneuralError, StageError

#: neural-search added the sparse_vector field and SEISMIC in 3.3
MIN_NEURAL_SEARCH = (3, 3)
#: `top_n` / `heap_factor` a stage sends when its spec leaves them out. neural-search's own (10,
#: 1.0) kept 59% of the exact stage's top 100 at 100,000 documents; these keep 79% and 0.888
#: recall of SciFact's relevant documents (exact: 0.898) at the same p50, 0.51x the exact
#: stage's (docs/scale.md, `bench/sparse_ann.py --top-n 10,20,40 --heap-factor 1.0,1.5`).
DEFAULT_TOP_N = 40
DEFAULT_HEAP_FACTOR = 1.5
PLUGIN = "opensearch-neural-search"


class SparseAnnUnavailable(OsneuralError, RuntimeError):
    """The cluster cannot hold or query SEISMIC vectors (no neural-search >= 3.3 on a node)."""


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_cluster(client: Any) -> str:
    """The neural-search version every node has; `SparseAnnUnavailable` naming what is missing.

    Every data node must have the plugin: a node without it cannot hold a shard of an index with
    a sparse_vector field."""
    rows = client.cat.plugins(format="json", h="name,component,version")
    nodes = {r["name"] for r in client.cat.nodes(format="json", h="name")}
    have = {r["name"]: r["version"] for r in rows if r.get("component") == PLUGIN}
    missing = sorted(nodes - set(have))
    if missing:
        raise SparseAnnUnavailable(
            f"the SEISMIC sparse stage needs the neural-search plugin (>= "
            f"{'.'.join(map(str, MIN_NEURAL_SEARCH))}) on every node; {', '.join(missing)} "
            "lack it (install it with `osneural opensearch start --plugins neural-search`, or "
            "use the sparse stage without method: seismic)")
    old = {n: v for n, v in have.items() if _version(v)[:2] < MIN_NEURAL_SEARCH}
    if old:
        raise SparseAnnUnavailable(
            f"the SEISMIC sparse stage needs neural-search >= "
            f"{'.'.join(map(str, MIN_NEURAL_SEARCH))} (the sparse_vector field); found "
            + ", ".join(f"{n}: {v}" for n, v in sorted(old.items())))
    return min(have.values(), key=_version)


def token_ids(weights: Mapping[str, float], vocab: Mapping[str, int],
              where: str = "sparse") -> dict[str, float]:
    """`{token: weight}` -> `{str(vocabulary id): weight}`, positive finite weights only.

    A token outside the vocabulary cannot come from the encoder that wrote the index; it is an
    error (naming it) rather than a silently dropped term."""
    from osneural.plugin.stages.sparse import positive_weights

    out: dict[str, float] = {}
    for token, w in positive_weights(weights):
        tid = vocab.get(token)
        if tid is None:
            raise ValueError(f"{where}: token {token!r} is not in the sparse encoder's vocabulary")
        key = str(int(tid))
        out[key] = out.get(key, 0.0) + w
    return out


def seismic_query(field: str, query_tokens: Mapping[str, float], k: int, *,
                  top_n: int | None = None, heap_factor: float | None = None,
                  max_terms: int | None = None) -> dict[str, Any]:
    """The `neural_sparse` query body part for a sparse_vector field.

    `max_terms` keeps the highest-weight terms before sending (the same cut the rank_features
    stage makes); `top_n` is SEISMIC's own query-term cut on the node."""
    items = sorted(query_tokens.items(), key=lambda kv: (-kv[1], kv[0]))
    if max_terms is not None:
        items = items[:max_terms]
    if not items:
        raise ValueError("sparse: the query has no positive-weight terms")
    params: dict[str, Any] = {"k": int(k)}
    if top_n is not None:
        params["top_n"] = int(top_n)
    if heap_factor is not None:
        params["heap_factor"] = float(heap_factor)
    return {"neural_sparse": {field: {"query_tokens": dict(items), "method_parameters": params}}}


_VOCABS: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()


def _vocab(encoder: Any) -> dict[str, int]:
    """The encoder's token -> id map, built once per encoder (30k entries: ~3 ms a query)."""
    vocab = _VOCABS.get(encoder)
    if vocab is None:
        vocab = _VOCABS[encoder] = dict(encoder.tokenizer.get_vocab(with_added_tokens=True))
    return vocab


def stage_index(index: str) -> str:
    """The index a `method: seismic` sparse stage searches: the companion of `index`."""
    from osneural.mappings.sparse_ann import companion_index

    return companion_index(index)


def stage_query(stage: Any, weights: Mapping[str, float], encoder: Any,
                filter_clause: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The query of a `sparse` stage with `method: seismic` (spec fields `k`, `max_terms`,
    `top_n`, `heap_factor`), weights from the stage's own encoding (model or inference-free).

    The companion index holds only the weights, so a spec filter on the main index's fields
    cannot be applied there: it is refused, naming the stage, instead of being ignored."""
    from osneural.mappings.sparse_ann import FIELD

    if filter_clause is not None:
        raise StageError(f"{where}: method 'seismic' searches the sparse-ann companion index, "
                         "which holds no document fields, so it cannot apply the spec's filter; "
                         "use method 'rank_features' for filtered searches")
    vocab = _vocab(encoder)
    ids = token_ids(weights, vocab, where)
    top_n = DEFAULT_TOP_N if stage.top_n is None else stage.top_n
    heap = DEFAULT_HEAP_FACTOR if stage.heap_factor is None else stage.heap_factor
    return seismic_query(FIELD, ids, stage.k, top_n=top_n, heap_factor=heap,
                         max_terms=stage.max_terms)
