"""Keep an old import path answering after its package moved.

Encoders and codecs are shared by ingest, the query side and evaluation, so they live at
`osneural.encoders` and `osneural.codecs`. Code written against `osneural.ingest.encoders...` and
`osneural.ingest.codecs...` keeps working: the old package names alias the new modules in
`sys.modules`, so both paths give the same module objects (one class, one `isinstance`).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType


def alias_package(old: str, new: str) -> ModuleType:
    """Make `old` and every `old.<sub>` the very module objects of `new` and `new.<sub>`."""
    package = importlib.import_module(new)
    for info in pkgutil.iter_modules(package.__path__):
        sys.modules[f"{old}.{info.name}"] = importlib.import_module(f"{new}.{info.name}")
    sys.modules[old] = package
    return package
