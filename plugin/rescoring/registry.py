"""Rescoring stage types by their spec `type` (see `osneural.plugin.stages.registry`)."""

from __future__ import annotations

from typing import Any

from osneural.plugin.rescoring.base import RescoreType
from osneural.plugin.stages.registry import Registry

RESCORERS: Registry[RescoreType] = Registry("rescoring stage", RescoreType)


def register_rescorer(rescore_type: Any, *, replace: bool = False) -> Any:
    """Make a rescoring stage type usable in pipeline specs' `rescore` lists."""
    return RESCORERS.register(rescore_type, replace=replace)


def unregister_rescorer(name: str) -> None:
    RESCORERS.unregister(name)


def rescorer(name: str) -> RescoreType:
    """The registered rescoring stage type called `name`."""
    return RESCORERS.get(name)
