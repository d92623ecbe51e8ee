"""The declarative pipeline spec: first stages, fusion, rescoring, paging.

Stage spec models live with their stage type (`osneural.plugin.stages.<type>`,
`osneural.plugin.rescoring.<type>`); the spec's stage lists accept whatever the registries hold,
discriminated by `type`.

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

from osneural.plugin.prf import PRFStage
from osneural.plugin.rescoring import RESCORERS
from osneural.plugin.rescoring.dense import DenseRescore
from osneural.plugin.rescoring.hamming import HammingRescore
from osneural.plugin.rescoring.maxsim import MaxSimRescore
from osneural.plugin.rescoring.pq import PQRescore
from osneural.plugin.stages import FIRST_STAGES
from osneural.plugin.stages.binary import BinaryStage
from osneural.plugin.stages.bm25 import BM25Stage
from osneural.plugin.stages.dense import DenseStage
from osneural.plugin.stages.fde import FDEStage
from osneural.plugin.stages.sparse import SparseStage
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from osneural.errors import SpecError

#: the stage spec models, importable from here as before they moved to their stage's module
__all__ = [
    "BM25Stage", "BinaryStage", "DenseRescore", "DenseStage", "FDEStage", "HammingRescore",
    "LinearFusion", "MaxSimRescore", "PQRescore", "PRFStage", "PipelineSpec", "RRFFusion",
    "SparseStage", "SpecError", "builtin_spec", "builtin_spec_names", "load_spec", "parse_spec",
]

FUSION_TYPES = ("rrf", "linear")


def __getattr__(name: str) -> Any:
    """`STAGE_TYPES` / `RESCORE_TYPES`: the registered type names, as they are now."""
    if name == "STAGE_TYPES":
        return FIRST_STAGES.names()
    if name == "RESCORE_TYPES":
        return RESCORERS.names()
    raise AttributeError(name)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


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

# ---------------------------------------------------------------- pipeline

#: the registered stage spec models, discriminated by `type` (`_rebuild` keeps them current)
FirstStage = FIRST_STAGES.union()
Rescore = RESCORERS.union()


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


def _rebuild() -> None:
    """Re-derive the stage lists' types from the registries: a stage type registered after this
    module loaded (an application's, a test's) is then parsed like the built-in ones."""
    global FirstStage, Rescore
    FirstStage, Rescore = FIRST_STAGES.union(), RESCORERS.union()
    fields = PipelineSpec.__pydantic_fields__
    for name, union in (("first_stages", FirstStage), ("rescore", Rescore)):
        fields[name] = FieldInfo.merge_field_infos(fields[name], annotation=list[union])
    PipelineSpec.model_rebuild(force=True)


FIRST_STAGES.on_change(_rebuild)
RESCORERS.on_change(_rebuild)


def _loc(loc: tuple[Any, ...]) -> str:
    """('first_stages', 1, 'dense', 'k') -> 'first_stages[1].k' (the union tag is noise)."""
    out = ""
    tags = set(FIRST_STAGES.names()) | set(FUSION_TYPES) | set(RESCORERS.names())
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
