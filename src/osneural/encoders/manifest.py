"""The `manifest.json` written beside every exported `model.onnx`.

The runtime never looks at the original checkpoint again: everything it needs to tokenise, pool
and post-process is copied here at export time, so an exported folder is self-contained and can be
moved to a machine without torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
INT8_MODEL_NAME = "model.int8.onnx"
TOKENIZER_NAME = "tokenizer.json"
IDF_NAME = "idf.json"
# Extra output of a projection-less multi-vector export: the pooled, normalised sentence vector.
POOLED_OUTPUT = "sentence_embedding"
FORMAT_VERSION = 1
KINDS = ("dense", "sparse", "multivector")


def sha256_files(paths: Iterable[Path]) -> str:
    """One digest over several files, in the order given, so a checkpoint with a separate
    projection layer is identified by both weight files."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and sanity-check a manifest; errors name the folder so a user knows what to re-export."""
    from osneural.encoders.errors import ModelNotFoundError

    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ModelNotFoundError(f"{folder}: no {MANIFEST_NAME}; is this an exported osneural model?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelNotFoundError(f"{path}: not valid JSON ({exc})") from exc
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise ModelNotFoundError(f"{path}: field 'kind' is {kind!r}, expected one of {KINDS}")
    for name in (MODEL_NAME, TOKENIZER_NAME):
        if not (folder / name).is_file():
            raise ModelNotFoundError(f"{folder}: {name} is missing; re-run `osneural export`")
    return manifest
