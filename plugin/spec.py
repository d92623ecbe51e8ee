"""The declarative pipeline spec: first stages, fusion, rescoring, paging.

A spec arrives from untrusted places (an HTTP body, a JSON file), so every field is validated and
every error names the offending field in the caller's own terms (`first_stages[1].k`), never a
pydantic traceback. Unknown keys are errors too: a typo such as `windw` must not silently fall back
to a default.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

STAGE_TYPES = ("bm25", "dense", "sparse", "binary", "fde")
FUSION_TYPES = ("rrf", "linear")
RESCORE_TYPES = ("hamming", "pq", "dense", "maxsim", "prf")


class SpecError(ValueError):
    """A malformed pipeline spec; the message names the bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# ---------------------------------------------------------------- first stages


class BM25Stage(_Strict):
    type: Literal["bm25"] = "bm25"
    k: int = Field(100, ge=1, le=10_000)
    fields: list[str] = Field(default_factory=lambda: ["title^1.2", "text"], min_length=1)


class DenseStage(_Strict):
    type: Literal["dense"] = "dense"
    k: int = Field(100, ge=1, le=10_000)
    # HNSW beam width (ef_search); at least k, as a smaller beam cannot return k neighbours.
    num_candidates: int | None = Field(None, ge=1, le=10_000)
    field: str = "dense"
    # "cluster": the query is encoded by the index's ml-commons model (plugin/cluster_encoding.py)
    encode: Literal["local", "cluster"] = "local"
    model_id: str | None = None

    @model_validator(mode="after")
    def _candidates_cover_k(self) -> DenseStage:
        if self.num_candidates is not None and self.num_candidates < self.k:
            raise ValueError(f"num_candidates ({self.num_candidates}) must be >= k ({self.k})")
        return self


class SparseStage(_Strict):
    type: Literal["sparse"] = "sparse"
    k: int = Field(100, ge=1, le=10_000)
    mode: Literal["model", "inference_free"] = "model"
    # Query terms kept (highest weight first); bounds the bool clause count.
    max_terms: int = Field(64, ge=1, le=1024)
    field: str = "sparse"
    # "cluster": the query is encoded by the index's ml-commons model (plugin/cluster_encoding.py)
    encode: Literal["local", "cluster"] = "local"
    model_id: str | None = None
    # "seismic": neural-search's sparse ANN on the `<index>-sparse-ann` companion index
    # (plugin/sparse_ann.py); top_n / heap_factor are its query-time method_parameters
    method: Literal["rank_features", "seismic"] = "rank_features"
    top_n: int | None = Field(None, ge=1, le=1024)
    heap_factor: float | None = Field(None, gt=0)


class BinaryStage(_Strict):
    type: Literal["binary"] = "binary"
    k: int = Field(200, ge=1, le=10_000)
    radius: int = Field(1, ge=0, le=2)
    field: str = "bin_tokens"


class FDEStage(_Strict):
    type: Literal["fde"] = "fde"
    k: int = Field(100, ge=1, le=10_000)
    num_candidates: int | None = Field(None, ge=1, le=10_000)
    field: str = "fde"

    @model_validator(mode="after")
    def _candidates_cover_k(self) -> FDEStage:
        if self.num_candidates is not None and self.num_candidates < self.k:
            raise ValueError(f"num_candidates ({self.num_candidates}) must be >= k ({self.k})")
        return self


FirstStage = Annotated[
    BM25Stage | DenseStage | SparseStage | BinaryStage | FDEStage, Field(discriminator="type")
]

# ---------------------------------------------------------------- fusion


class RRFFusion(_Strict):
    type: Literal["rrf"] = "rrf"
    rank_constant: int = Field(60, ge=1)
    weights: list[float] | None = None


class LinearFusion(_Strict):
    type: Literal["linear"] = "linear"
    normalization: Literal["minmax", "zscore"] = "minmax"
    weights: list[float] | None = None


Fusion = Annotated[RRFFusion | LinearFusion, Field(discriminator="type")]

# ---------------------------------------------------------------- rescoring


class _Rescore(_Strict):
    """How a rescoring stage's score meets the ranking it re-ranks.

    `replace` orders the window by the new score alone (right when the new score is strictly
    better, e.g. exact dense after PQ). `rrf` and `linear` blend it with the incoming ranking,
    `weight` being the new score's share: a late-interaction model that was never trained for
    the corpus (MiniLM tokens) then refines a strong hybrid instead of overriding it.
    """

    combine: Literal["replace", "rrf", "linear"] = "replace"
    weight: float = Field(0.5, ge=0.0, le=1.0)
    rank_constant: int = Field(60, ge=0)


class HammingRescore(_Rescore):
    type: Literal["hamming"] = "hamming"
    window: int = Field(1000, ge=1, le=10_000)


class PQRescore(_Rescore):
    type: Literal["pq"] = "pq"
    window: int = Field(200, ge=1, le=10_000)


class DenseRescore(_Rescore):
    type: Literal["dense"] = "dense"
    window: int = Field(100, ge=1, le=10_000)


class MaxSimRescore(_Rescore):
    """`tokens` picks the stored token form: the PQ codes every multi-vector index has, or the
    float16 copies an index built with the `float_tokens` representation also holds."""

    type: Literal["maxsim"] = "maxsim"
    window: int = Field(100, ge=1, le=10_000)
    tokens: Literal["pq", "float16"] = "pq"


# Pseudo-relevance feedback runs in the rescoring sequence; its model lives with its logic.
from osneural.plugin.prf import PRFStage  # noqa: E402

Rescore = Annotated[
    HammingRescore | PQRescore | DenseRescore | MaxSimRescore | PRFStage,
    Field(discriminator="type")
]

# ---------------------------------------------------------------- pipeline


class PipelineSpec(_Strict):
    first_stages: list[FirstStage] = Field(default_factory=lambda: [BM25Stage()], min_length=1)
    filter: dict[str, Any] | None = None
    fusion: Fusion = Field(default_factory=RRFFusion)
    rescore: list[Rescore] = Field(default_factory=list)
    size: int = Field(10, ge=0, le=10_000)
    from_: int = Field(0, ge=0, le=10_000, alias="from")
    timeout_ms: int = Field(2000, ge=1, le=600_000)
    explain: bool = False
    source: bool | list[str] = Field(True, alias="_source")

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        weights = self.fusion.weights
        if weights is not None:
            if len(weights) != len(self.first_stages):
                raise ValueError(
                    f"fusion.weights has {len(weights)} entries but there are "
                    f"{len(self.first_stages)} first stages"
                )
            if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
                raise ValueError("fusion.weights must be non-negative with at least one > 0")
        if self.filter is not None and len(self.filter) != 1:
            raise ValueError("filter must be one OpenSearch query clause, e.g. {'term': {...}}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def _loc(loc: tuple[Any, ...]) -> str:
    """('first_stages', 1, 'dense', 'k') -> 'first_stages[1].k' (the union tag is noise)."""
    out = ""
    tags = set(STAGE_TYPES) | set(FUSION_TYPES) | set(RESCORE_TYPES)
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in tags and i > 0 and (isinstance(loc[i - 1], int) or loc[i - 1] == "fusion"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "spec"


def _message(err: dict[str, Any]) -> str:
    where = _loc(tuple(err["loc"]))
    kind = err["type"]
    if kind == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        tag = err.get("ctx", {}).get("tag")
        return f"{where}: unknown type {tag!r} (expected one of {expected})"
    if kind == "union_tag_not_found":
        return f"{where}: missing 'type'"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{where}: {msg}"


def parse_spec(data: PipelineSpec | dict[str, Any] | str | None) -> PipelineSpec:
    """Validate a spec given as a model, a dict, a JSON string, a built-in name or spec file path,
    or None (the default pipeline)."""
    if isinstance(data, PipelineSpec):
        return data
    if data is None:
        data = {}
    if isinstance(data, str):
        if not data.lstrip().startswith(("{", "[")):
            return load_spec(data)
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec must be a JSON object, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError("invalid spec: " + "; ".join(_message(e) for e in exc.errors())) from None


def builtin_spec_names() -> list[str]:
    folder = resources.files("osneural.plugin") / "specs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


@functools.lru_cache(maxsize=32)
def builtin_spec(name: str) -> PipelineSpec:
    """A built-in spec by name, read from the package only (never a file path)."""
    if name not in builtin_spec_names():
        raise SpecError(f"unknown built-in spec {name!r}; built-in specs: "
                        f"{', '.join(builtin_spec_names())}")
    resource = resources.files("osneural.plugin") / "specs" / f"{name}.json"
    return parse_spec(resource.read_text(encoding="utf-8"))


def load_spec(name_or_path: str | Path) -> PipelineSpec:
    """A built-in spec by name (`hybrid`) or a JSON file path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise SpecError(f"spec file not found: {path}")
        return parse_spec(path.read_text(encoding="utf-8"))
    resource = resources.files("osneural.plugin") / "specs" / f"{text}.json"
    if not resource.is_file():
        raise SpecError(f"unknown spec {text!r}; built-in specs: {', '.join(builtin_spec_names())}")
    return parse_spec(resource.read_text(encoding="utf-8"))
