"""Stage types by their spec `type`: how the spec parser and the `Searcher` find a stage.

One `Registry` holds the first stages, another (`osneural.plugin.rescoring.registry`) the
rescoring stages. Registering a type makes its spec model part of the pipeline spec's
discriminated union (the spec parser rebuilds its model: listeners are told), so a stage defined
anywhere -- a module of this package, an application, a test -- is parsed, checked against the
index and run like the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar, Union

from osneural.plugin.stages.base import FirstStageType, StageType
from pydantic import Field

from osneural.errors import SpecError

T = TypeVar("T", bound=StageType)


class Registry(Generic[T]):
    """Stage types of one kind (first or rescoring), in registration order."""

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self.base = base
        self._types: dict[str, T] = {}
        self._listeners: list[Callable[[], None]] = []

    def register(self, stage_type: type[T] | T, *, replace: bool = False) -> type[T] | T:
        """Add a stage type (a class, instantiated once, or an instance); returns it, so it
        works as a class decorator. A name already taken is an error unless `replace`."""
        instance = stage_type() if isinstance(stage_type, type) else stage_type
        if not isinstance(instance, self.base):
            raise TypeError(f"a {self.kind} type must subclass {self.base.__name__}")
        name = instance.type_name()
        if name in self._types and not replace:
            raise ValueError(f"{self.kind} type {name!r} is already registered")
        self._types[name] = instance
        self._changed()
        return stage_type

    def unregister(self, name: str) -> None:
        """Remove a stage type (a test's toy stage, say)."""
        self._types.pop(name, None)
        self._changed()

    def get(self, name: str) -> T:
        """The stage type of a spec's `type`; `SpecError` naming the known ones otherwise."""
        try:
            return self._types[name]
        except KeyError:
            raise SpecError(f"unknown {self.kind} type {name!r} (known: "
                            f"{', '.join(self._types)})") from None

    def of(self, stage: Any) -> T:
        """The stage type of a parsed stage spec."""
        return self.get(stage.type)

    def names(self) -> tuple[str, ...]:
        return tuple(self._types)

    def union(self) -> Any:
        """The spec models as one pydantic type, discriminated by `type`."""
        models = tuple(type(t).spec for t in self._types.values())
        if len(models) == 1:
            return models[0]
        return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - built at runtime

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a type is added or removed (the spec model rebuilds)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()


FIRST_STAGES: Registry[FirstStageType] = Registry("first stage", FirstStageType)


def register_stage(stage_type: Any, *, replace: bool = False) -> Any:
    """Make a first stage type usable in pipeline specs (`{"type": <its name>, ...}`)."""
    return FIRST_STAGES.register(stage_type, replace=replace)


def unregister_stage(name: str) -> None:
    FIRST_STAGES.unregister(name)


def first_stage(name: str) -> FirstStageType:
    """The registered first stage type called `name`."""
    return FIRST_STAGES.get(name)
