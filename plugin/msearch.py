"""`_msearch` bodies: NDJSON split into (header, body) items, and the pipeline work they ask for
(capped per request, so one `_msearch` cannot ask for unbounded neural work)."""

from __future__ import annotations

from typing import Any

from osneural.plugin import request_guard as rg
from osneural.plugin.neural_handler import is_neural
from osneural.plugin.spec import builtin_spec, builtin_spec_names

from osneural.errors import GuardError


def split_msearch(raw: bytes, max_depth: int, max_items: int) -> list[tuple[dict, dict]]:
    """NDJSON `_msearch` lines as (header, body) pairs; a 400 naming the line otherwise."""
    lines = [line for line in raw.split(b"\n") if line.strip()]
    if not lines:
        raise GuardError(400, "osneural_parse_error", "_msearch: the request body is empty")
    if len(lines) % 2:
        raise GuardError(400, "osneural_parse_error",
                         f"_msearch: {len(lines)} lines; each item is a header line and a body "
                         "line (the last item has no body)")
    if len(lines) // 2 > max_items:
        raise GuardError(400, "osneural_request_too_large",
                         f"_msearch: {len(lines) // 2} items, more than this service's limit of "
                         f"{max_items}")
    items = []
    for i in range(0, len(lines), 2):
        pair = []
        for j, what in ((i, "header"), (i + 1, "body")):
            try:
                value = rg.parse_json_body(lines[j], max_depth)
            except GuardError as exc:
                raise GuardError(exc.status, exc.kind,
                                 f"_msearch line {j + 1} (item {i // 2} {what}): {exc.reason}") from None
            if not isinstance(value, dict):
                raise GuardError(400, "osneural_parse_error",
                                 f"_msearch line {j + 1} (item {i // 2} {what}): must be a JSON object")
            pair.append(value)
        items.append((pair[0], pair[1]))
    return items


def stage_count(body: dict[str, Any]) -> int:
    """Pipeline stages an `_msearch` item asks for (0 for a pass-through item), for the cap on
    one request's total work; a built-in spec counts its own stages, no spec the default's."""
    if not is_neural(body):
        return 0
    block = body["ext"]["osneural"]
    spec = block.get("spec") if isinstance(block, dict) else None
    if isinstance(spec, dict):
        stages = spec.get("first_stages"), spec.get("rescore")
        return sum(len(x) for x in stages if isinstance(x, list)) or 1
    name = spec if isinstance(spec, str) and spec in builtin_spec_names() else "hybrid"
    parsed = builtin_spec(name)
    return len(parsed.first_stages) + len(parsed.rescore)


def check_work(items: list[tuple[dict, dict]], max_stages: int) -> None:
    """A 400 when the items' neural searches ask for more stages in all than `max_stages`."""
    work = sum(stage_count(body) for _header, body in items)
    if work > max_stages:
        raise GuardError(400, "osneural_request_too_large",
                         f"_msearch: its neural items ask for {work} pipeline stages in all, "
                         f"more than this service's limit of {max_stages}")
