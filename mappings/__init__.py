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

Every other field of a document is the app's own: the mapping is `dynamic: true` so OpenSearch maps
them as they come, and `merge_app_mapping` adds a mapping the user gives (or the one of a source
index being enriched). osneural's own field names (`reserved_field`) cannot be taken by an app
field. Indices built before app fields existed mapped them under a stored-only `metadata` object
with `dynamic: strict`; they keep answering (no query reads `metadata`), see `LEGACY_METADATA`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
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

#: Each document's `_id` again, as keyword doc values (text.json): first stages read their hits'
#: ids from it instead of `_id`, a stored field whose every read decompresses the stored block
#: around the hit (osneural.plugin.stages.request says what that costs).
ID_FIELD = "osneural_id"
#: The ingest pipeline an osneural index runs as its `index.final_pipeline`: it writes
#: `ID_FIELD` from the request's `_id` on every write, whoever makes it (an app that copies a
#: document under a new id included), and removes it where the id is not known yet (an
#: auto-generated one). The query side trusts `ID_FIELD` only on an index that has it.
ID_PIPELINE = "osneural-id"
ID_PIPELINE_BODY: dict[str, Any] = {
    "description": f"osneural: copy each document's _id into {ID_FIELD} (keyword doc values)",
    "processors": [
        {"remove": {"field": ID_FIELD, "ignore_missing": True}},
        {"set": {"field": ID_FIELD, "value": "{{{_id}}}", "ignore_empty_value": True}},
    ],
}


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
    # App fields are mapped by OpenSearch as they come (or by the user's mapping, merged later).
    mappings: dict[str, Any] = {"dynamic": True}
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


#: the k-NN plugin's index setting for its derived vector source (OpenSearch 3.0 and later)
KNN_DERIVED_SOURCE = "knn.derived_source.enabled"


def vectors_out_of_source(body: dict[str, Any], *, derived_source_setting: bool = True) -> list[str]:
    """Keep every `knn_vector` field out of `_source` when the mapping excludes any field, and
    turn the k-NN derived source off; returns the vector fields moved (none if nothing changed).

    Why: with any `_source.excludes` (the default excludes `mv_codes`), OpenSearch keeps a
    `_recovery_source`, and the merge that prunes it undoes the k-NN plugin's derived source,
    writing the vectors back into `_source` as JSON (k-NN issue 3316, fixed after 3.6.0): the
    default index held 18,679 B/doc on all of SciFact once merged, 11,007 with the vectors out
    of `_source` (docs/scale.md). The vectors are read from the vector index either way; what a
    document loses is that `_update` / `_update_by_query` (which rebuild it from `_source`) drop
    them with the token codes, which an in-place `--resume` restores (docs/APPS.md).

    A mapping that sets the derived-source setting itself (`--mapping` with settings) is left as
    it is: that is the user's choice. `derived_source_setting=False` for clusters whose k-NN has
    no such setting (before 3.0), where vectors in `_source` are JSON anyway.
    """
    mappings = body.get("mappings") or {}
    excludes = list((mappings.get("_source") or {}).get("excludes") or [])
    index = body.setdefault("settings", {}).setdefault("index", {})
    if not excludes or KNN_DERIVED_SOURCE in index or f"index.{KNN_DERIVED_SOURCE}" in index:
        return []
    vectors = sorted(name for name, prop in (mappings.get("properties") or {}).items()
                     if isinstance(prop, Mapping) and prop.get("type") == "knn_vector"
                     and name not in excludes)
    if not vectors:
        return []
    mappings["_source"]["excludes"] = sorted(set(excludes) | set(vectors))
    if derived_source_setting:
        index[KNN_DERIVED_SOURCE] = False
    return vectors


def field_names(representations: list[str], matryoshka_dims: tuple[int, ...] | list[int] = ()) -> list[str]:
    """Document fields an index of these representations carries (besides `_id`)."""
    reps = normalize_representations(representations)
    names: list[str] = []
    for rep in reps:
        names += list(load_template(rep)["properties"])
        if rep == "dense":
            names += [f"dense_{d}" for d in sorted({int(d) for d in matryoshka_dims})]
    return names


#: The stored-only object earlier releases put every app field under (`enabled: false`).
LEGACY_METADATA = "metadata"

_MATRYOSHKA = re.compile(r"dense_\d+")

#: Top-level mapping keys a user (or source index) mapping may set besides `properties`.
_APP_MAPPING_KEYS = ("dynamic", "dynamic_templates", "date_detection", "numeric_detection",
                     "dynamic_date_formats")


def osneural_fields() -> frozenset[str]:
    """Every field name any representation template defines."""
    return frozenset(n for rep in REPRESENTATIONS for n in load_template(rep)["properties"])


#: The reserved fields that hold a document's own text rather than a representation of it.
DOCUMENT_FIELDS = frozenset({"title", "text"})


def reserved_field(name: str) -> bool:
    """True for a top-level field name osneural writes itself (an app field may not use it)."""
    return name in _RESERVED or bool(_MATRYOSHKA.fullmatch(name))


_RESERVED = osneural_fields()


class MappingConflict(ValueError):
    """An app mapping names one of osneural's own fields."""


def app_mapping_from_json(data: Any, origin: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mappings, index settings) of a user mapping file's JSON.

    Accepted: a mappings object (`{"properties": ...}`), or an index body (`{"mappings": ...,
    "settings": ...}`) whose settings (analysis, similarity) the app fields' mapping may need.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{origin}: a mapping must be a JSON object, got {type(data).__name__}")
    settings: dict[str, Any] = {}
    if "mappings" in data:
        unknown = sorted(set(data) - {"mappings", "settings", "aliases"})
        if unknown:
            raise ValueError(f"{origin}: unknown top-level key(s) {unknown} (expected mappings, "
                             "settings)")
        raw_settings = data.get("settings") or {}
        if not isinstance(raw_settings, Mapping):
            raise ValueError(f"{origin}: 'settings' must be an object")
        settings = dict(raw_settings.get("index", raw_settings))
        data = data["mappings"]
        if not isinstance(data, Mapping):
            raise ValueError(f"{origin}: 'mappings' must be an object")
    props = data.get("properties", {})
    if not isinstance(props, Mapping):
        raise ValueError(f"{origin}: 'properties' must be an object")
    unknown = sorted(set(data) - {"properties", "_meta", "_source", *_APP_MAPPING_KEYS})
    if unknown:
        raise ValueError(f"{origin}: unknown mapping key(s) {unknown} (expected properties, "
                         f"{', '.join(_APP_MAPPING_KEYS)})")
    check_app_properties(props, origin)
    return dict(data), settings


def check_app_properties(props: Mapping[str, Any], origin: str) -> None:
    """Raise `MappingConflict` naming the first app field that takes one of osneural's names.

    `title` and `text` mapped as `text` are let through: that is an app's own definition of the
    BM25 fields (its analyzer, its sub-fields), which osneural's BM25 stage searches as well."""
    for name, prop in props.items():
        if name in ("title", "text") and isinstance(prop, Mapping) and prop.get("type") == "text":
            continue
        if reserved_field(name):
            raise MappingConflict(
                f"{origin}: field {name!r} is one of osneural's own fields "
                f"({', '.join(sorted(_RESERVED))}, dense_<dim>); rename it in the app's mapping")


def merge_app_mapping(body: dict[str, Any], app: Mapping[str, Any] | None,
                      app_settings: Mapping[str, Any] | None = None, origin: str = "mapping",
                      ) -> dict[str, Any]:
    """`body` (from `compose_index_body`) with the app's mapping and settings merged in.

    The app's properties are added beside osneural's, its `dynamic`-family keys win, its `_meta`
    keys other than `osneural` are kept, and its `_source.excludes` are unioned. Analysis and
    similarity settings are merged into the index settings (osneural's own analyzers are built in).
    """
    if app:
        props = app.get("properties") or {}
        check_app_properties(props, origin)
        mappings = body["mappings"]
        mappings["properties"].update(copy.deepcopy(dict(props)))
        for key in _APP_MAPPING_KEYS:
            if key in app:
                mappings[key] = copy.deepcopy(app[key])
        meta = {k: v for k, v in (app.get("_meta") or {}).items() if k != "osneural"}
        if meta:
            mappings["_meta"] = {**meta, **mappings.get("_meta", {})}
        excludes = (app.get("_source") or {}).get("excludes") or []
        if excludes:
            src = mappings.setdefault("_source", {"excludes": []})
            src["excludes"] = sorted(set(src.get("excludes", [])) | set(excludes))
    if app_settings:
        index = body["settings"]["index"]
        for key, value in app_settings.items():
            key = key.removeprefix("index.")
            if key in ("knn",):
                continue
            index[key] = copy.deepcopy(value)
    return body
