"""What every pipeline stage is: a spec model plus what it needs from the query and the index.

A stage type is one class: its pydantic `spec` model (whose `type` literal is the name a pipeline
spec uses), the query encodings it needs (`encoder_kinds`, `needs_codecs`: loaded before the
query's deadline starts), the index field it reads (`index_field`, checked by `check_index` so a
spec the index cannot serve is a 400 naming the stage), and its own work. A first stage
(`FirstStageType`) turns the query into an OpenSearch query body and a response into candidates;
a rescoring stage (`osneural.plugin.rescoring.base.RescoreType`) scores a window of candidates.
The `Searcher` and the spec parser find stage types through a registry
(`osneural.plugin.stages.registry`), so adding one is a module and one `register_stage` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from osneural.plugin.stages import request
from pydantic import BaseModel, ConfigDict

from osneural.errors import StageError


class StageSpec(BaseModel):
    """Base of the stage spec models: strict (an unknown key such as `windw` is an error, never a
    silent default) and immutable (one parsed spec is shared by concurrent queries)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class StageType:
    """What the pipeline needs to know of one stage type, first stage or rescoring.

    Subclasses set `spec` (a model with a `type: Literal["name"] = "name"` field) and override
    what differs from these defaults: no encoder, no codecs, the stage's `field` as its index
    field."""

    spec: ClassVar[type[BaseModel]]

    @classmethod
    def type_name(cls) -> str:
        """The spec's `type` value: the default of the spec model's `type` field."""
        default = cls.spec.model_fields["type"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.spec.__name__}.type needs a string default (its type name)")
        return default

    def encoder_kinds(self, stage: Any) -> tuple[str, ...]:
        """Local encoder kinds (`dense`, `sparse`, `multivector`) the stage's query needs."""
        return ()

    def needs_codecs(self, stage: Any) -> bool:
        """Whether the stage reads the index's codec bundle (decoded before the deadline)."""
        return False

    def index_field(self, stage: Any) -> str | None:
        """The document field the stage reads; None when it names no single field."""
        return getattr(stage, "field", None)

    def check_index(self, stage: Any, res: Any, label: str) -> None:
        """Raise `StageError` naming the stage (`label`) when the index cannot serve it."""
        wanted = self.index_field(stage)
        if wanted and not res.has_field(wanted):
            raise StageError(
                f"{label}: index {res.index!r} has no field {wanted!r}; it was not built with "
                "that representation")


@dataclass(frozen=True)
class StageContext:
    """What a stage builds its request from, for one query.

    `enc` is the query's `QueryEncodings` (each representation computed once and shared by the
    stages), `filter` the spec's filter clause, `where` the stage's name for messages
    (`first_stages (dense)`)."""

    client: Any
    index: str
    enc: Any
    filter: dict[str, Any] | None
    where: str
    #: the process's `CodeCache` for doc-value fetches (None: not used), and the caller's
    #: partition of it
    codes: Any = None
    codes_scope: str = ""

    @property
    def text(self) -> str:
        return self.enc.text

    @property
    def res(self) -> Any:
        """The index's `IndexResources` (fields, `_meta`, codecs)."""
        return self.enc.res

    @property
    def id_field(self) -> str | None:
        """The doc-values field the hits' ids are read from (`request.ID_FIELD`), when the index
        this stage searches has it; None reads `_id` (another index, e.g. a SEISMIC companion)."""
        res = self.res
        return res.id_field if res is not None and res.index == self.index else None

    def fetch_codes(self, ids: list[str], field: str, timeout_s: float | None) -> dict[str, bytes]:
        """Raw bytes of the binary doc-values `field` per id that has it: through the code
        cache when the context has one (`osneural.plugin.code_cache`), else one search."""
        from osneural.plugin.rescoring.scores import fetch_codes

        if self.codes is not None and self.codes.enabled:
            fp = self.res.fingerprint
            build = (fp.uuid, fp.generation if fp.generation is not None else repr(fp.codec_version))
            return self.codes.fetch(self.client, self.index, build, ids, field, timeout_s,
                                    self.codes_scope, id_field=self.id_field)
        return fetch_codes(self.client, self.index, ids, field, timeout_s, self.id_field)


class FirstStageType(StageType):
    """A first stage: one OpenSearch query whose hits are candidates.

    `query` is all most stages write; `body` (size, no `_source`) and `run` (one request under
    the stage's timeout, read into (id, score) pairs, ties by id) are shared."""

    def query(self, stage: Any, ctx: StageContext) -> dict[str, Any]:
        """The OpenSearch query clause, the spec's filter (`ctx.filter`) inside it."""
        raise NotImplementedError

    def matched_query(self, stage: Any, ctx: StageContext) -> dict[str, Any]:
        """The stage's clause in the matched-set request (aggregations, exact totals), which
        runs on the pipeline's own index: the stage's query unless it searches elsewhere."""
        return self.query(stage, ctx)

    def body(self, stage: Any, ctx: StageContext) -> dict[str, Any]:
        """The whole search body: `stage.k` hits, ids and scores only."""
        return request.search_body(self.query(stage, ctx), stage.k)

    def run(self, stage: Any, ctx: StageContext, timeout_s: float | None) -> list[tuple[str, float]]:
        """The stage's candidates, best first: one request within `timeout_s`, its hits' ids
        read from the id field's doc values where the index has it."""
        return request.run_query(ctx.client, ctx.index, self.body(stage, ctx), timeout_s,
                                 ctx.id_field)
