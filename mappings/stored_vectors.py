"""Read a document's stored vectors back, wherever the index keeps them.

An index keeps a `knn_vector` field's values in `_source` (as JSON, or through the k-NN
plugin's derived source) unless its mapping excludes the field (`_source.excludes`, as
`osneural.mappings.vectors_out_of_source` does by default): then only the vector index holds
them, and a `script_fields` entry that copies `doc['dense'].value` (which the k-NN plugin
answers from the vector values) reads them back. Whoever reads stored vectors (`osneural
recode`'s partial updates, the dense `prf` stage, the benchmarks that derive bigger collections
from a real one) reads through here, so the layout is decided in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VectorField:
    name: str
    byte: bool  # `data_type: byte` (int8 values) rather than float
    in_source: bool


def vector_fields(mappings: Mapping[str, Any]) -> dict[str, VectorField]:
    """Every top-level `knn_vector` field of an index's mappings, and where its values live."""
    excludes = set((mappings.get("_source") or {}).get("excludes") or ())
    enabled = (mappings.get("_source") or {}).get("enabled", True) is not False
    out = {}
    for name, prop in (mappings.get("properties") or {}).items():
        if isinstance(prop, Mapping) and prop.get("type") == "knn_vector":
            byte = str(prop.get("data_type", "float")).lower() == "byte"
            out[name] = VectorField(name, byte, enabled and name not in excludes)
    return out


def index_vector_fields(client: Any, index: str) -> dict[str, VectorField]:
    """`vector_fields` of an index as the cluster maps it now (an alias: its one index)."""
    return vector_fields(next(iter(client.indices.get_mapping(index=index).values()))["mappings"])


#: A copy of the document's vector, element by element. `doc['dense'].value` alone is not
#: enough: on OpenSearch 3.6 every hit's script field then holds the last hit's vector (the
#: k-NN plugin hands out one reused array, which the fetch phase serializes at the end; checked
#: on 100 hits, floats and bytes). The field comes as a parameter: one compiled script serves
#: every field, and no field name is ever spliced into script text.
COPY_SCRIPT = ("List out = new ArrayList(); if (doc[params.field].size() == 0) { return out; } "
               "def v = doc[params.field].value; for (int i = 0; i < v.length; ++i) { out.add(v[i]); } "
               "return out;")


def request_parts(fields: Mapping[str, VectorField], names: list[str]) -> tuple[list[str], dict]:
    """(`_source` includes, `script_fields`) that read `names` back, each from where it lives."""
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(f"no knn_vector field {missing} in the index mapping")
    source = [n for n in names if fields[n].in_source]
    scripts = {n: {"script": {"source": COPY_SCRIPT, "params": {"field": n}}}
               for n in names if not fields[n].in_source}
    return source, scripts


def read_vector(hit: Mapping[str, Any], field: VectorField) -> list[float] | list[int] | None:
    """The field's vector in one search hit made with `request_parts`, or None if the document
    has none (a float list, or int8 values for byte vectors)."""
    if field.in_source:
        return (hit.get("_source") or {}).get(field.name)
    values = (hit.get("fields") or {}).get(field.name)
    if not values:
        return None
    return [int(x) for x in values] if field.byte else [float(x) for x in values]
