"""The ml-commons export flavour: a zip that OpenSearch's ml-commons registers and deploys as it is.

osneural's own exports do not fit ml-commons 3.x, whose bundled onnxruntime is 1.16.3:

* they carry fused contrib ops and an `ai.onnx.ml` opset import newer than ORT 1.16 knows
  ("Current official support for domain ai.onnx.ml is till opset 3") and a recent IR version;
  this flavour is the *plain* traced graph, IR version 8, default-domain opset 17 (ORT 1.16 runs
  up to 19), `ai.onnx.ml` dropped when unused and capped at 3 otherwise;
* the dense export pools inside the graph and takes 2 inputs, whereas ml-commons' TEXT_EMBEDDING
  translator feeds `input_ids`, `attention_mask` and, for BERT/ALBERT, `token_type_ids`, takes
  the first output as token embeddings and pools itself per `model_config.pooling_mode`
  (MEAN or CLS) and `normalize_result`; so this graph returns `last_hidden_state` un-pooled;
* ml-commons' SPARSE_ENCODING translator feeds `input1.input_ids` / `input1.attention_mask`
  (one text at a time, batch-stacked) and turns every non-zero entry of each output into
  `{token: weight}`; a sparse model registered *with* a `model_config` fails at deploy
  ("BaseModelConfig cannot be cast to ... TextEmbeddingModelConfig"), so its register body has none.

The export is checked against osneural's own encoder on the same texts, the way ml-commons runs
it (one text per call, pooling and normalisation done outside the graph), and refused beyond
`DENSE_TOLERANCE` / `SPARSE_TOLERANCE`. Output: `<name>.zip` (model.onnx + tokenizer.json), its
sha256, the register body (`register.json`) and `mlcommons.json` with the parity figures.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from osneural.encoders.errors import CheckpointError, ExportError
from osneural.encoders.manifest import MODEL_NAME, TOKENIZER_NAME

ORT_ML_COMMONS = "1.16.3"  # onnxruntime bundled by ml-commons 3.x
MAX_IR_VERSION = 8  # ORT 1.16 reads IR <= 9; 8 is what opset 17 was released with
DEFAULT_OPSET = 17
MAX_ML_OPSET = 3
DENSE_TOLERANCE = 1e-5
SPARSE_TOLERANCE = 1e-4
INFO_NAME = "mlcommons.json"
REGISTER_NAME = "register.json"
SPARSE_INPUTS = ("input1.input_ids", "input1.attention_mask")
#: ml-commons adds token_type_ids only for these model types (ONNX text-embedding translator)
TOKEN_TYPE_MODEL_TYPES = {"bert", "albert"}
FUNCTION_NAMES = {"dense": "TEXT_EMBEDDING", "sparse": "SPARSE_ENCODING"}
KINDS = tuple(FUNCTION_NAMES)

PARITY_TEXTS = [
    "Vitamin D supplementation reduces the risk of respiratory infections in older adults.",
    "What causes rain?",
    "The mitochondria is the powerhouse of the cell; ATP synthase couples proton flow to "
    "phosphorylation, and uncoupling proteins dissipate the gradient as heat.",
    "Zürich, 1998 — naïve café owners sold 42 crêpes! e.g. U.S. v. 3.5",
    "a",
]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _modules(kind: str, backbone):
    import torch

    class Dense(torch.nn.Module):
        """Token embeddings only: ml-commons pools and normalises outside the graph."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                                 **kwargs).last_hidden_state

    class Sparse(torch.nn.Module):
        """Same SPLADE reduction as osneural's export (log1p∘relu is monotone, so max first)."""

        def __init__(self) -> None:
            super().__init__()
            self.mlm = backbone

        def forward(self, input_ids, attention_mask):
            logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
            masked = logits * attention_mask.unsqueeze(-1).to(logits.dtype)
            return torch.log1p(torch.relu(masked.max(dim=1).values))

    return (Dense() if kind == "dense" else Sparse()).eval()


def make_ort16_compatible(path: Path, opset: int) -> dict[str, Any]:
    """Rewrite the graph's header for onnxruntime 1.16: IR version <= 8, `ai.onnx.ml` removed
    when no node uses it (the exporter may import it anyway) and capped at opset 3; raises if
    the default-domain opset is beyond what ORT 1.16 runs."""
    import onnx

    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node}
    imports = []
    for entry in model.opset_import:
        if entry.domain == "ai.onnx.ml":
            if "ai.onnx.ml" not in used:
                continue
            entry.version = min(entry.version, MAX_ML_OPSET)
        if entry.domain in ("", "ai.onnx") and entry.version > 19:
            raise ExportError(f"default-domain opset {entry.version} > 19: onnxruntime "
                              f"{ORT_ML_COMMONS} (ml-commons) cannot run it; export with --opset 17")
        imports.append(onnx.helper.make_opsetid(entry.domain, entry.version))
    foreign = sorted(d for d in used if d not in ("", "ai.onnx", "ai.onnx.ml"))
    if foreign:
        raise ExportError(f"graph uses custom op domains {foreign}; ml-commons' onnxruntime "
                          "cannot be assumed to have them")
    del model.opset_import[:]
    model.opset_import.extend(imports)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"ir_version": int(model.ir_version),
            "opset_import": {e.domain or "ai.onnx": int(e.version) for e in model.opset_import},
            "requested_opset": opset}


def _tokenizer_for_mlcommons(src: Path, dst: Path, max_length: int) -> None:
    """ml-commons builds its DJL tokenizer from tokenizer.json with padding on: truncation is
    written into the file so long texts are cut where osneural cuts them."""
    data = json.loads(src.read_text(encoding="utf-8"))
    data["truncation"] = {"direction": "Right", "max_length": int(max_length),
                          "strategy": "LongestFirst", "stride": 0}
    data["padding"] = None
    dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _ids(tokenizer, text: str, max_length: int, token_types: bool) -> dict[str, np.ndarray]:
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    enc = tokenizer.encode(text)
    feeds = {"input_ids": np.asarray([enc.ids], dtype=np.int64),
             "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64)}
    if token_types:
        feeds["token_type_ids"] = np.asarray([enc.type_ids], dtype=np.int64)
    return feeds


def run_like_mlcommons(folder: Path, texts: list[str]) -> list[Any]:
    """What ml-commons computes from this export: per text, the graph on the un-padded ids,
    then (dense) mean/CLS pooling over the attention mask and L2 normalisation, or (sparse)
    `{token: weight}` over the non-zero entries, tokens decoded as single vocabulary ids."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    info = json.loads((folder / INFO_NAME).read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_NAME))
    sess = ort.InferenceSession(str(folder / MODEL_NAME), providers=["CPUExecutionProvider"])
    out: list[Any] = []
    vocab = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    special = set(info.get("special_ids", []))
    for text in texts:
        feeds = _ids(tokenizer, text, info["max_length"], info["token_type_ids"])
        if info["kind"] == "sparse":
            feeds = {SPARSE_INPUTS[0]: feeds["input_ids"], SPARSE_INPUTS[1]: feeds["attention_mask"]}
            row = sess.run(None, feeds)[0][0]
            out.append({vocab[int(i)]: float(row[i]) for i in np.flatnonzero(row)
                        if int(i) not in special})
            continue
        hidden = sess.run(None, feeds)[0][0]
        if info["pooling_mode"] == "CLS":
            vec = hidden[0]
        else:
            mask = feeds["attention_mask"][0].astype(np.float32)[:, None]
            vec = (hidden * mask).sum(0) / max(float(mask.sum()), 1e-9)
        if info["normalize_result"]:
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        out.append(vec.astype(np.float32))
    return out


def parity_against(folder: Path, reference_folder: Path, texts: list[str]) -> float:
    """Max abs difference between this export run the ml-commons way and osneural's encoder
    (all non-zero sparse terms, union of both key sets, missing = 0)."""
    from osneural.encoders.runtime import load_encoder

    info = json.loads((folder / INFO_NAME).read_text(encoding="utf-8"))
    got = run_like_mlcommons(folder, texts)
    if info["kind"] == "dense":
        enc = load_encoder(reference_folder)
        want = enc.encode_documents(texts)
        return float(np.max(np.abs(np.stack(got) - want)))
    enc = load_encoder(reference_folder, doc_top_k=0)
    want = enc.encode_documents(texts)
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        for tok in set(g) | set(w):
            worst = max(worst, abs(g.get(tok, 0.0) - w.get(tok, 0.0)))
    return worst


def register_body(info: dict[str, Any], *, name: str | None = None,
                  chunk_bytes: int | None = None) -> dict[str, Any]:
    """The `_plugins/_ml/models/_register` body for this export (chunked upload form when
    `chunk_bytes` is given); `model_config` for TEXT_EMBEDDING only."""
    body: dict[str, Any] = {
        "name": name or info["name"],
        "version": info["version"],
        "description": f"osneural {info['kind']} export of {info['source']} "
                       f"(weights sha256 {info['weights_sha256'][:12]})",
        "model_format": "ONNX",
        "function_name": info["function_name"],
        "model_content_hash_value": info["zip_sha256"],
        "model_content_size_in_bytes": info["zip_bytes"],
    }
    if chunk_bytes:
        body["total_chunks"] = max(1, -(-int(info["zip_bytes"]) // int(chunk_bytes)))
    if info["kind"] == "dense":
        body["model_config"] = {
            "model_type": info["model_type"],
            "embedding_dimension": info["dim"],
            "framework_type": "sentence_transformers",
            "pooling_mode": info["pooling_mode"],
            "normalize_result": info["normalize_result"],
        }
    return body


def export_mlcommons(
    kind: str,
    model: str | Path | None = None,
    out: str | Path | None = None,
    *,
    reference: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    max_length: int | None = None,
    pooling: str | None = None,
    name: str | None = None,
    version: str = "1.0.0",
) -> dict[str, Any]:
    """Export `model` (default: the embedded default of `kind`) for ml-commons into `out`
    (default `<models>/<default dir>-mlcommons`); return the info written to mlcommons.json.

    `reference` is the osneural export to check against (default: the default export of `kind`,
    when it comes from the same weights); ExportError when the two disagree beyond tolerance.
    """
    if kind not in KINDS:
        raise CheckpointError(f"ml-commons export: kind {kind!r} is not one of {KINDS}")
    from osneural.encoders.checkpoint import inspect_checkpoint
    from osneural.encoders.defaults import (
        DEFAULT_DIRS,
        default_checkpoint,
        default_export_dir,
        is_exported,
    )
    from osneural.encoders.export import (
        _load_backbone,
        _max_length,
        _require_torch,
        _write_tokenizer,
    )
    from osneural.encoders.manifest import read_manifest, sha256_files
    from osneural.paths import models_dir

    torch, _ = _require_torch()
    from tokenizers import Tokenizer

    checkpoint = Path(model) if model is not None else default_checkpoint(kind)
    info_ck = inspect_checkpoint(checkpoint)
    weights_sha = sha256_files(info_ck.weight_files)
    default_name = DEFAULT_DIRS[kind] if model is None else f"{Path(checkpoint).resolve().name}-{kind}"
    out = Path(out).expanduser() if out is not None else models_dir() / f"{default_name}-mlcommons"
    out.mkdir(parents=True, exist_ok=True)
    pooling_mode = (pooling or info_ck.pooling or "mean").upper()
    if kind == "dense" and pooling_mode not in ("MEAN", "CLS"):
        raise CheckpointError(f"pooling {pooling!r}: ml-commons' ONNX translator pools MEAN or CLS")
    length = _max_length(info_ck, kind, max_length)
    if reference is None:
        cand = default_export_dir(kind)
        if is_exported(cand) and read_manifest(cand).get("sha256") == weights_sha:
            reference = cand
    reference_manifest = read_manifest(reference) if reference is not None else None
    if reference_manifest is not None:
        if reference_manifest["kind"] != kind:
            raise CheckpointError(f"{reference}: a {reference_manifest['kind']} export, not {kind}")
        length = int(reference_manifest["max_length"])

    backbone = _load_backbone(info_ck, kind)
    work = out / ".build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _write_tokenizer(info_ck, work)
    tok_raw = work / TOKENIZER_NAME
    tokenizer = Tokenizer.from_file(str(tok_raw))
    model_type = str(info_ck.model_type or "")
    token_types = kind == "dense" and model_type.lower() in TOKEN_TYPE_MODEL_TYPES
    module = _modules(kind, backbone)

    feeds = _ids(tokenizer, PARITY_TEXTS[0], length, token_types)
    args = tuple(torch.from_numpy(feeds[k]) for k in feeds)
    if kind == "dense":
        input_names = list(feeds)
        output_names = ["last_hidden_state"]
        axes = {n: {0: "batch", 1: "sequence"} for n in [*input_names, *output_names]}
    else:
        input_names = list(SPARSE_INPUTS)
        output_names = ["output"]
        axes = {input_names[0]: {0: "batch", 1: "sequence"},
                input_names[1]: {0: "batch", 1: "sequence"}, "output": {0: "batch"}}
    graph = work / MODEL_NAME
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(graph), input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    header = make_ort16_compatible(graph, opset)
    _tokenizer_for_mlcommons(tok_raw, work / TOKENIZER_NAME, length)

    # ml-commons decodes each id with skip_special_tokens: these never reach its output
    specials = sorted(int(t["id"]) for t in json.loads(tok_raw.read_text(encoding="utf-8"))
                      .get("added_tokens", []) if t.get("special"))
    cfg = backbone.config
    zip_name = f"{default_name}-mlcommons.zip"
    info: dict[str, Any] = {
        "kind": kind,
        "function_name": FUNCTION_NAMES[kind],
        "name": f"osneural/{default_name}",
        "version": version,
        "source": str(info_ck.path),
        "weights_sha256": weights_sha,
        "model_type": model_type,
        "dim": int(cfg.hidden_size) if kind == "dense" else int(cfg.vocab_size),
        "pooling_mode": pooling_mode if kind == "dense" else None,
        "normalize_result": kind == "dense",
        "max_length": length,
        "inputs": input_names,
        "outputs": output_names,
        "token_type_ids": token_types,
        "special_ids": specials,
        "onnx": header,
        "onnxruntime_target": ORT_ML_COMMONS,
        "zip": zip_name,
        "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    # the files the zip holds also sit beside it, so parity runs on exactly what ships
    for name_ in (MODEL_NAME, TOKENIZER_NAME):
        (work / name_).replace(out / name_)
    shutil.rmtree(work, ignore_errors=True)
    (out / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    if reference is not None:
        parity = parity_against(out, Path(reference), PARITY_TEXTS)
        tol = DENSE_TOLERANCE if kind == "dense" else SPARSE_TOLERANCE
        info["parity"] = {"reference": str(reference), "texts": len(PARITY_TEXTS),
                          "max_abs_diff": parity, "tolerance": tol,
                          "reference_sha256": reference_manifest["sha256"]}
        if not parity <= tol:
            raise ExportError(f"ml-commons export of {checkpoint} differs from osneural's "
                              f"encoder {reference} by {parity:.3g} (> {tol:g})")
    else:
        info["parity"] = None

    zip_path = out / zip_name
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(out / MODEL_NAME, MODEL_NAME)
        zf.write(out / TOKENIZER_NAME, TOKENIZER_NAME)
    info["zip_sha256"] = sha256_file(zip_path)
    info["zip_bytes"] = zip_path.stat().st_size
    (out / f"{zip_name}.sha256").write_text(f"{info['zip_sha256']}  {zip_name}\n")
    (out / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out / REGISTER_NAME).write_text(json.dumps(register_body(info, name=name), indent=2) + "\n",
                                     encoding="utf-8")
    return info


def read_info(folder: str | Path) -> dict[str, Any]:
    """mlcommons.json of an ml-commons export, with an error that says how to make one."""
    path = Path(folder) / INFO_NAME
    if not path.is_file():
        raise ExportError(f"{folder}: no {INFO_NAME}; run `osneural export --kind dense|sparse "
                          "--ml-commons` first")
    info = json.loads(path.read_text(encoding="utf-8"))
    if not (Path(folder) / info["zip"]).is_file():
        raise ExportError(f"{folder}: {info['zip']} is missing; re-run the ml-commons export")
    return info
