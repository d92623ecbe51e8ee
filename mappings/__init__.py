"""OpenSearch index templates shipped as JSON package data, and the loader that composes them.

Each representation has its own template (`text.json`, `dense.json`, ...) so an index carries only
the fields it was built with; `default.json` names the representations of the composed default.
Templates hold `"{{name}}"` placeholders (a whole JSON string) that `compose_index_body` replaces
with typed values, so a dimension stays an integer in the request body.

The index `_meta.osneural` written here is the contract the query side reads:

    {"schema_version": 1,
     "representations": ["text", "dense", ...],
     "encoders": {"dense": {"name", "kind", "sha256", "dim"}, "sparse": {...}, "multivector": {...}},
     "codecs": {...kinds and parameters, see osneural.ingest.indexer...},
     "fields": {"dense": {"dim", "space_type", "engine"}, "matryoshka": [dims], "fde": {"dim"},
                "text_analyzer": "english"},
     "codec_store": {"index": "osneural-codecs", "id": <index name>}}
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1

#: Every representation a template exists for, in composition order. `text` is always present.
#: `float_tokens` (the pooled token vectors as float16, 2 x dim bytes per token, 4x the PQ codes
#: at 384-d) is not in the default: it is for exact MaxSim, and the reference PQ is measured by.
REPRESENTATIONS: tuple[str, ...] = (
    "text", "dense", "sparse", "binary", "pq", "multivector", "float_tokens")

#: Representations computed from the multi-vector encoder's token embeddings.
NEEDS_TOKENS = frozenset({"multivector", "float_tokens"})

#: Representations that need the dense encoder's output (binary codes and PQ are codecs of it).
NEEDS_DENSE = frozenset({"dense", "binary", "pq"})

SPACE_TYPES = ("cosinesimil", "innerproduct")
ENGINES = ("lucene", "faiss")
TEXT_ANALYZERS = ("english", "standard")

#: English beat standard on SciFact BM25 (nDCG@10 measured by bench/ingest.py --analyzers).
DEFAULT_TEXT_ANALYZER = "english"


def load_template(name: str) -> dict[str, Any]:
    """One JSON template by name (`text`, `dense`, ..., `settings`, `default`), freshly parsed."""
    try:
        raw = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no mapping template named {name!r}; known: {', '.join(REPRESENTATIONS)}") from None
    return json.loads(raw)


def default_representations() -> list[str]:
    """The representations of the composed default template."""
    return list(load_template("default")["compose"])


def normalize_representations(representations: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate a representation list (comma string or sequence), add `text`, keep template order.

    Unknown names are an error rather than ignored: a typo would silently build an index that
    lacks the field a pipeline later asks for.
    """
    if representations is None:
        return default_representations()
    names = representations.split(",") if isinstance(representations, str) else list(representations)
    names = [n.strip().lower() for n in names if n and n.strip()]
    if "all" in names:
        return list(REPRESENTATIONS)
    unknown = sorted(set(names) - set(REPRESENTATIONS))
    if unknown:
        raise ValueError(
            f"unknown representation(s) {', '.join(unknown)}; choose from {', '.join(REPRESENTATIONS)}"
        )
    wanted = {"text", *names}
    return [r for r in REPRESENTATIONS if r in wanted]


def _fill(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str) and node.startswith("{{") and node.endswith("}}"):
        key = node[2:-2]
        if key not in values:
            raise ValueError(f"mapping template needs a value for {key!r}")
        return values[key]
    return node


def _merge_mapping(into: dict[str, Any], part: dict[str, Any]) -> None:
    into.setdefault("properties", {}).update(part.get("properties", {}))
    excludes = part.get("_source", {}).get("excludes", [])
    if excludes:
        src = into.setdefault("_source", {"excludes": []})
        src["excludes"] = sorted(set(src["excludes"]) | set(excludes))


def _knn_field(template: dict[str, Any], dim: int) -> dict[str, Any]:
    field = copy.deepcopy(template)
    field["dimension"] = dim
    return field


def compose_index_body(
    representations: list[str] | None = None,
    *,
    dense_dim: int = 384,
    fde_dim: int | None = None,
    fde_data_type: str = "float",
    space_type: str = "cosinesimil",
    engine: str = "lucene",
    matryoshka_dims: tuple[int, ...] | list[int] = (),
    text_analyzer: str = DEFAULT_TEXT_ANALYZER,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 100,
    meta: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `indices.create` body (settings + mappings) for the chosen representations.

    `meta` becomes `mappings._meta.osneural`. `settings` is merged over the template's `index`
    settings (shards, replicas, refresh interval are the cluster owner's business).
    """
    reps = normalize_representations(representations)
    if space_type not in SPACE_TYPES:
        raise ValueError(f"space_type must be one of {SPACE_TYPES}, got {space_type!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if text_analyzer not in TEXT_ANALYZERS:
        raise ValueError(f"text_analyzer must be one of {TEXT_ANALYZERS}, got {text_analyzer!r}")
    if dense_dim <= 0:
        raise ValueError(f"dense_dim must be positive, got {dense_dim}")
    if fde_data_type not in ("float", "byte"):
        raise ValueError(f"fde_data_type must be 'float' or 'byte', got {fde_data_type!r}")
    bad = [d for d in matryoshka_dims if not 0 < int(d) < dense_dim]
    if bad:
        raise ValueError(f"Matryoshka dims must lie in (0, {dense_dim}), got {bad}")
    if "multivector" in reps and not fde_dim:
        raise ValueError("the multivector representation needs fde_dim (from the FDE codec)")
    values = {
        "dense_dim": int(dense_dim),
        "fde_dim": int(fde_dim or 0),
        "fde_data_type": fde_data_type,
        "space_type": space_type,
        "engine": engine,
        "text_analyzer": text_analyzer,
        "hnsw_m": int(hnsw_m),
        "hnsw_ef_construction": int(hnsw_ef_construction),
    }
    mappings: dict[str, Any] = {"dynamic": "strict"}
    for rep in reps:
        part = _fill(load_template(rep), values)
        _merge_mapping(mappings, part)
        if rep == "dense":
            for dim in sorted({int(d) for d in matryoshka_dims}):
                mappings["properties"][f"dense_{dim}"] = _knn_field(part["properties"]["dense"], dim)
    if meta is not None:
        mappings["_meta"] = {"osneural": meta}
    index_settings = load_template("settings")
    index_settings["index"].update(settings or {})
    return {"settings": index_settings, "mappings": mappings}


def field_names(representations: list[str], matryoshka_dims: tuple[int, ...] | list[int] = ()) -> list[str]:
    """Document fields an index of these representations carries (besides `_id`)."""
    reps = normalize_representations(representations)
    names: list[str] = []
    for rep in reps:
        names += list(load_template(rep)["properties"])
        if rep == "dense":
            names += [f"dense_{d}" for d in sorted({int(d) for d in matryoshka_dims})]
    return names
