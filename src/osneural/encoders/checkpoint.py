"""Reading a local Hugging Face checkpoint folder without torch.

Export decisions (pooling, max length, projection layer, prefixes) come from the files that
sentence-transformers, PyLate and the original ColBERT leave beside the weights; reading them here,
with plain JSON, lets `osneural export` fail fast with a clear message before torch is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osneural.encoders.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SLOW_TOKENIZER_FILES = ("vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")


@dataclass
class Projection:
    """A ColBERT-style linear layer applied to every token embedding (`out = x @ weight.T + bias`)."""

    source: Path  # file holding the weights
    key: str  # tensor name inside that file
    in_features: int
    out_features: int
    bias_key: str | None = None


@dataclass
class CheckpointInfo:
    path: Path
    config: dict[str, Any]
    weight_files: list[Path]
    tokenizer_json: Path | None
    pooling: str = "mean"  # "mean" | "cls"
    normalize: bool = True
    max_seq_length: int | None = None
    query_prefix: str = ""
    document_prefix: str = ""
    query_length: int | None = None
    document_length: int | None = None
    attend_to_expansion_tokens: bool = False
    projection: Projection | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def architectures(self) -> list[str]:
        return list(self.config.get("architectures") or [])

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from exc


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header, without loading any tensor."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _find_projection(path: Path, modules: list[dict[str, Any]]) -> Projection | None:
    # PyLate / sentence-transformers: a Dense module folder holding `linear.weight`.
    for module in modules:
        if not str(module.get("type", "")).endswith(".Dense"):
            continue
        folder = path / module.get("path", "")
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{folder}: Dense module without model.safetensors")
        shapes = _safetensors_shapes(weights)
        if "linear.weight" not in shapes:
            raise CheckpointError(f"{weights}: no 'linear.weight' tensor (found {sorted(shapes)})")
        out_f, in_f = shapes["linear.weight"]
        cfg = folder / "config.json"
        if cfg.is_file():
            act = str(_read_json(cfg).get("activation_function", "Identity"))
            if not act.endswith("Identity"):
                raise CheckpointError(f"{cfg}: activation {act!r} is not supported (Identity only)")
        return Projection(weights, "linear.weight", in_f, out_f,
                          "linear.bias" if "linear.bias" in shapes else None)
    # Original ColBERT (HF_ColBERT): `linear.weight` inside the main state dict.
    main = path / "model.safetensors"
    if main.is_file():
        shapes = _safetensors_shapes(main)
        if "linear.weight" in shapes:
            out_f, in_f = shapes["linear.weight"]
            return Projection(main, "linear.weight", in_f, out_f,
                              "linear.bias" if "linear.bias" in shapes else None)
    return None


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Describe a checkpoint folder, or raise `CheckpointError` saying what is missing."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder (does not exist or is a file)")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: no config.json; not a Hugging Face checkpoint folder")
    config = _read_json(path / "config.json")
    if not config.get("model_type"):
        raise CheckpointError(f"{path}/config.json: no 'model_type'; unknown architecture")
    weights = [path / n for n in WEIGHT_FILES if (path / n).is_file()]
    if not weights:
        raise CheckpointError(f"{path}: no weights ({' or '.join(WEIGHT_FILES)})")
    tok = path / "tokenizer.json"
    if not tok.is_file():
        if not any((path / n).is_file() for n in SLOW_TOKENIZER_FILES):
            raise CheckpointError(
                f"{path}: no tokenizer files (tokenizer.json, or one of {', '.join(SLOW_TOKENIZER_FILES)})"
            )
        tok = None  # export converts the slow tokenizer to tokenizer.json
    info = CheckpointInfo(path=path, config=config, weight_files=weights[:1], tokenizer_json=tok)

    modules: list[dict[str, Any]] = []
    if (path / "modules.json").is_file():
        modules = list(_read_json(path / "modules.json"))
        info.normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
        for m in modules:
            if str(m.get("type", "")).endswith(".Pooling"):
                pcfg = path / m.get("path", "") / "config.json"
                if pcfg.is_file():
                    p = _read_json(pcfg)
                    if p.get("pooling_mode_cls_token"):
                        info.pooling = "cls"
                    elif p.get("pooling_mode_mean_tokens"):
                        info.pooling = "mean"
                    else:
                        raise CheckpointError(f"{pcfg}: only mean or CLS pooling is supported")
    for name in ("sentence_bert_config.json", "config_sentence_transformers.json"):
        if (path / name).is_file():
            st = _read_json(path / name)
            if st.get("max_seq_length"):
                info.max_seq_length = int(st["max_seq_length"])
            # PyLate keeps its ColBERT settings here.
            info.query_prefix = str(st.get("query_prefix") or info.query_prefix)
            info.document_prefix = str(st.get("document_prefix") or info.document_prefix)
            if isinstance(st.get("prompts"), dict):
                info.query_prefix = str(st["prompts"].get("query") or info.query_prefix)
                info.document_prefix = str(st["prompts"].get("document") or info.document_prefix)
            if st.get("query_length"):
                info.query_length = int(st["query_length"])
            if st.get("document_length"):
                info.document_length = int(st["document_length"])
            if "attend_to_expansion_tokens" in st:
                info.attend_to_expansion_tokens = bool(st["attend_to_expansion_tokens"])
    info.projection = _find_projection(path, modules)
    if info.projection is not None and info.projection.source not in info.weight_files:
        info.weight_files.append(info.projection.source)
    return info
