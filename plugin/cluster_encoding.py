"""Query encoding through the cluster's deployed ml-commons model (`"encode": "cluster"`).

A query node then needs no ONNX files: the dense or sparse stage asks ml-commons `_predict` for
the query's vector and runs osneural's own first-stage query with it, so the candidates are the
ones local encoding gives (the registered model is the same graph: embeddings agree to ~1e-7)
and every later stage (fusion, rescoring) works unchanged. `_predict` rather than the native
`neural` query, because the dense vector is also what dense / binary rescoring reuse.

The model is the one recorded in the index's `_meta.osneural.ml_commons.<kind>` by
`osneural models register --index`, or the stage's `model_id`. Its weights digest must equal
the one the index's vectors came from (`_meta.osneural.encoders.<kind>.sha256`): a different
model would give vectors of another space and silently meaningless neighbours.

Token names: neural-search's `neural_sparse` ignores query tokens containing "." (checked on
3.6: `{"hello": 1, ".": 5}` scores `hello` alone), while osneural escapes "." to "%2E" in
`rank_features` keys and matches it. On an index registered for ml-commons interop, osneural's
sparse stage (local or cluster encoding) drops those tokens too, so a native `neural_sparse`
query and osneural's sparse spec give the same scores on the same index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osneural.errors import StageError


def interop(res: Any, kind: str) -> dict[str, Any] | None:
    """`_meta.osneural.ml_commons.<kind>` of the index, or None."""
    return ((getattr(res, "meta", None) or {}).get("ml_commons") or {}).get(kind)


def model_for(stage: Any, res: Any, kind: str, where: str) -> str:
    """The ml-commons model id a cluster-encoded stage uses, checked against the index."""
    entry = interop(res, kind) or {}
    model_id = getattr(stage, "model_id", None) or entry.get("model_id")
    if not model_id:
        raise StageError(f"{where}: encode 'cluster' needs a model: the index records no "
                         f"ml-commons {kind} model (run `osneural models register --index "
                         f"{res.index} ...`) and the stage names no model_id")
    indexed = ((res.meta.get("encoders") or {}).get(kind) or {}).get("sha256")
    recorded = entry.get("weights_sha256") if entry.get("model_id") == model_id else None
    if indexed and recorded and indexed != recorded:
        raise StageError(f"{where}: ml-commons model {model_id} has weights {recorded[:12]}, the "
                         f"index's {kind} vectors come from {indexed[:12]}")
    return model_id


def neural_search_tokens(weights: dict[str, float]) -> dict[str, float]:
    """The query tokens neural-search's `neural_sparse` uses: those without '.'."""
    return {t: w for t, w in weights.items() if "." not in t}


def dense(client: Any, enc: Any, stage: Any, where: str) -> np.ndarray:
    """The dense query vector for `stage`: local encoder, or ml-commons when encode=cluster."""
    if getattr(stage, "encode", "local") != "cluster":
        return enc.dense(where)
    model_id = model_for(stage, enc.res, "dense", where)

    def compute() -> np.ndarray:
        from osneural.encoders.registry import RegistryError, predict_dense

        try:
            return np.asarray(predict_dense(client, model_id, [enc.text])[0], dtype=np.float32)
        except RegistryError as exc:
            raise StageError(f"{where}: ml-commons _predict failed: {exc}") from exc

    return enc._memo(f"cluster.dense.{model_id}", compute)


def sparse(client: Any, enc: Any, stage: Any, where: str) -> dict[str, float]:
    """The sparse query weights for `stage` (local or ml-commons), in neural-search's token
    convention when the index is registered for interop."""
    if getattr(stage, "encode", "local") != "cluster":
        weights = enc.sparse(stage.mode, where)
    else:
        if stage.mode != "model":
            raise StageError(f"{where}: encode 'cluster' runs the sparse model; mode "
                             f"{stage.mode!r} encodes with the tokenizer locally")
        model_id = model_for(stage, enc.res, "sparse", where)

        def compute() -> dict[str, float]:
            from osneural.encoders.registry import RegistryError, predict_sparse

            try:
                return predict_sparse(client, model_id, [enc.text])[0]
            except RegistryError as exc:
                raise StageError(f"{where}: ml-commons _predict failed: {exc}") from exc

        weights = enc._memo(f"cluster.sparse.{model_id}", compute)
    return neural_search_tokens(weights) if interop(enc.res, "sparse") else weights
