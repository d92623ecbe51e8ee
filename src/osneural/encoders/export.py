"""Export a local Hugging Face checkpoint to ONNX (needs the `export` extra: torch + transformers).

Pooling, normalisation and the SPLADE / ColBERT post-processing are traced into the graph, so the
runtime only tokenises, pads and runs one session: the torch-free side stays small and the parity
measured here covers everything the runtime does with the model's numbers.

The legacy TorchScript exporter (`dynamo=False`) is used: with torch 2.x and transformers 5 it
traces BERT-family encoders with dynamic batch and sequence axes and matches torch to ~1e-7,
whereas the dynamo exporter's opset down-conversion fails on these graphs.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from osneural.encoders.checkpoint import CheckpointInfo, inspect_checkpoint
from osneural.encoders.errors import CheckpointError, ExportError
from osneural.encoders.manifest import (
    FORMAT_VERSION,
    INT8_MODEL_NAME,
    KINDS,
    MODEL_NAME,
    POOLED_OUTPUT,
    TOKENIZER_NAME,
    read_manifest,
    sha256_files,
    write_manifest,
)
from osneural.encoders.runtime import SESSION_DISABLED_OPTIMIZERS

DEFAULT_OPSET = 17
DEFAULT_QUERY_LENGTH = 32
#: Sparse terms kept per document (the heaviest). SPLADE gives SciFact and NFCorpus documents
#: about 250 non-zero terms; the top 160 cost nothing measurable (exact sparse retrieval,
#: nDCG@10 against the top 256: SciFact +0.21, NFCorpus -0.15 points; top 128: -0.32 / -0.66)
#: and make `sparse` about a third smaller, in `_source` and in postings (docs/scale.md).
DEFAULT_DOC_TOP_K = 160
#: The cap exports wrote before; `osneural export` moves such a default export to the one above.
PREVIOUS_DOC_TOP_K = 256
DEFAULT_SPARSE_MAX_LENGTH = 256
PARITY_TOLERANCE = 1e-4

# Texts used to trace the graph and to measure parity: different lengths so the batch is padded,
# one empty string (only special tokens), punctuation, digits and non-ASCII characters.
PARITY_TEXTS = [
    "Vitamin D supplementation reduces the risk of respiratory infections in older adults.",
    "",
    "What causes rain?",
    "The mitochondria is the powerhouse of the cell; ATP synthase couples proton flow to "
    "phosphorylation, and uncoupling proteins dissipate the gradient as heat (thermogenesis).",
    "Zürich, 1998 — naïve café owners sold 42 crêpes!",
    "a",
]


def update_doc_top_k(folder: Path) -> bool:
    """Move a sparse export written with the cap exports used before (`PREVIOUS_DOC_TOP_K`) to
    today's default; the cap is applied at run time, so only the manifest changes. True when
    it did (an export with another cap, chosen by its user, is left alone)."""
    manifest = read_manifest(folder)
    if manifest.get("kind") != "sparse" or manifest.get("doc_top_k") != PREVIOUS_DOC_TOP_K:
        return False
    manifest["doc_top_k"] = DEFAULT_DOC_TOP_K
    write_manifest(folder, manifest)
    return True


def _require_torch():
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ExportError(
            "exporting needs torch and transformers: pip install 'osneural[export]'"
        ) from exc
    return torch, transformers


def _load_backbone(info: CheckpointInfo, kind: str):
    """Load the transformer with eager attention (traces cleanly) and refuse partial loads, which
    would otherwise export random weights silently."""
    torch, transformers = _require_torch()
    try:
        transformers.AutoConfig.from_pretrained(str(info.path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises ValueError/KeyError/OSError
        raise CheckpointError(
            f"{info.path}: unknown architecture (model_type={info.model_type!r}): {exc}"
        ) from exc
    transformers.utils.logging.disable_progress_bar()
    auto = transformers.AutoModelForMaskedLM if kind == "sparse" else transformers.AutoModel
    try:
        model, loading = auto.from_pretrained(
            str(info.path), local_files_only=True, attn_implementation="eager",
            output_loading_info=True,
        )
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{info.path}: cannot load as {auto.__name__}: {exc}") from exc
    missing = sorted(k for k in loading.get("missing_keys", ()) if ".pooler." not in f".{k}")
    if missing:
        what = "the masked-language-model head" if kind == "sparse" else "the encoder"
        raise CheckpointError(
            f"{info.path}: weights for {what} are missing ({len(missing)} tensors, e.g. "
            f"{missing[:3]}); a {kind} export needs "
            + ("a *ForMaskedLM checkpoint" if kind == "sparse" else "a complete encoder")
        )
    model.eval()
    return model


def _write_tokenizer(info: CheckpointInfo, out: Path) -> None:
    if info.tokenizer_json is not None:
        shutil.copyfile(info.tokenizer_json, out / TOKENIZER_NAME)
        return
    _, transformers = _require_torch()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(info.path), use_fast=True,
                                                         local_files_only=True)
        tok.backend_tokenizer.save(str(out / TOKENIZER_NAME))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{info.path}: cannot build tokenizer.json: {exc}") from exc


def _mlm_head(model):
    """The masked-language-model head of a *ForMaskedLM model (BERT's `cls`, RoBERTa's
    `lm_head`), applied per position to the base model's hidden states; None when the
    architecture names it otherwise (the sparse graph then masks the logits instead)."""
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if head is not None and getattr(model, "base_model", model) is not model:
            return head
    return None


#: vocabulary entries per chunk of the sparse graph's MLM projection (`_split_vocab_projection`).
#: SciFact passages, int8, 2 streams, batch 32 (512 tokens per run): 265 docs/s at 512, 280 at
#: 256, 244 at 2048, against 111-115 with the whole vocabulary at once; a query (one run of ~20
#: tokens) takes 1.18 ms at 512, as before the split, and 1.5 ms at 256 (more nodes to run).
VOCAB_CHUNK = 512


def _split_vocab_projection(head):
    """(the head up to its vocabulary projection, that projection's [vocab, hidden] weight,
    its [vocab] bias) for a BERT- or RoBERTa-style MLM head, whose last step is one Linear onto
    the vocabulary called as `decoder`; None for any other head (the graph then projects the
    whole vocabulary at once)."""
    import copy

    torch, _ = _require_torch()
    owner = getattr(head, "predictions", head)  # BERT's cls.predictions, RoBERTa's lm_head
    decoder = getattr(owner, "decoder", None)
    if not isinstance(decoder, torch.nn.Linear):
        return None
    weight = decoder.weight.detach().clone()
    bias = (decoder.bias.detach().clone() if decoder.bias is not None
            else torch.zeros(weight.shape[0], dtype=weight.dtype))
    features = copy.deepcopy(head)
    getattr(features, "predictions", features).decoder = torch.nn.Identity()
    # The split must be the head: a head that adds anything after `decoder` (or applies it
    # otherwise) projects the whole vocabulary at once instead.
    probe = torch.randn(2, 3, weight.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = head(probe)
        split = features(probe) @ weight.t() + bias
    if whole.shape != split.shape or not torch.allclose(whole, split, atol=1e-4, rtol=1e-4):
        return None
    return features, weight, bias


def _build_module(kind: str, model, info: CheckpointInfo, pooling: str):
    torch, _ = _require_torch()
    nn = torch.nn
    functional = torch.nn.functional

    def pool(hidden, attention_mask):
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return functional.normalize(pooled, p=2.0, dim=-1, eps=1e-12)

    class Dense(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model

        def forward(self, input_ids, attention_mask):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return pool(hidden, attention_mask)

    head = _mlm_head(model)
    split = _split_vocab_projection(head) if head is not None else None

    class Sparse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlm = model
            if split is not None:
                features, weight, bias = split
                self.features = features
                # [hidden, chunk] weight slices and [chunk] biases, one pair per vocabulary chunk
                starts = range(0, weight.shape[0], VOCAB_CHUNK)
                self.slices = nn.ParameterList(
                    nn.Parameter(weight[c:c + VOCAB_CHUNK].t().contiguous(), requires_grad=False)
                    for c in starts)
                self.biases = nn.ParameterList(
                    nn.Parameter(bias[c:c + VOCAB_CHUNK].contiguous(), requires_grad=False)
                    for c in starts)

        def _max_logits(self, rows):
            """max over positions of the MLM head's logits, [batch, vocab]. With the head split,
            the vocabulary is projected a chunk at a time and each chunk reduced at once, so the
            [batch, seq, vocab] logits (31 MB per 256-token text) never exist: each chunk's
            [batch, seq, chunk] block stays in cache between the projection that writes it and
            the max that reads it. The bias is added after the max (max(x + b) == max(x) + b,
            rounding being monotone)."""
            if split is None:
                return head(rows).max(dim=1).values
            feats = self.features(rows)
            # Each text as two halves of ceil(seq/2) rows (overlapping by one row when seq is
            # odd, which a max does not mind): onnxruntime reduces [2 x batch, rows, chunk] on
            # its fast path, where a batch of one (every query) takes a path 3-4x slower.
            seq = feats.shape[1]
            half = torch.div(seq + 1, 2, rounding_mode="floor")
            halves = torch.cat([feats[:, :half], feats[:, seq - half:]], dim=0)
            n = feats.shape[0]
            out = []
            for w, b in zip(self.slices, self.biases, strict=True):
                m = torch.matmul(halves, w).amax(dim=1)
                out.append(torch.maximum(m[:n], m[n:]) + b)
            return torch.cat(out, dim=-1)

        def forward(self, input_ids, attention_mask):
            # max_t log1p(relu(x_t)) == log1p(relu(max_t x_t)) because log1p∘relu is monotone;
            # reducing first saves two [batch, seq, vocab] temporaries.
            if head is None:
                logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
                # Masked positions become 0, which relu maps to the 0 of the textbook formula.
                logits = logits * attention_mask.unsqueeze(-1).to(logits.dtype)
            else:
                hidden = self.mlm.base_model(input_ids=input_ids,
                                             attention_mask=attention_mask).last_hidden_state
                # Padding rows take the hidden state of the text's first attended token, whose
                # logits are in the max already, so the max over all rows is the max over
                # attended rows. That masks [batch, seq, hidden] instead of multiplying the
                # [batch, seq, vocab] logits: one pass over 31 MB per 256-token text less (a
                # quarter of SPLADE's time).
                first = attention_mask.argmax(dim=1)
                rows = hidden[torch.arange(hidden.shape[0]), first].unsqueeze(1)
                return torch.log1p(torch.relu(self._max_logits(
                    torch.where(attention_mask.unsqueeze(-1).bool(), hidden, rows))))
            return torch.log1p(torch.relu(logits.max(dim=1).values))

    class MultiVector(nn.Module):
        def __init__(self, projection) -> None:
            super().__init__()
            self.backbone = model
            self.linear = projection

        def forward(self, input_ids, attention_mask):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if self.linear is not None:
                tokens = functional.normalize(self.linear(hidden), p=2.0, dim=-1, eps=1e-12)
                return tokens, m.squeeze(-1)
            # Rows are not multiplied by the mask: ColBERT queries keep the embeddings of [MASK]
            # expansion tokens that nothing attends to; the runtime drops padding itself.
            tokens = functional.normalize(hidden, p=2.0, dim=-1, eps=1e-12)
            # Without a projection the tokens come from the same encoder as the dense vector, so
            # the graph also pools: ingestion then gets both from one forward pass.
            return tokens, m.squeeze(-1), pool(hidden, attention_mask)

    if kind == "dense":
        return Dense().eval()
    if kind == "sparse":
        return Sparse().eval()
    projection = None
    if info.projection is not None:
        from safetensors.numpy import load_file

        p = info.projection
        tensors = load_file(str(p.source))
        projection = nn.Linear(p.in_features, p.out_features, bias=p.bias_key is not None)
        with torch.no_grad():
            projection.weight.copy_(torch.from_numpy(np.ascontiguousarray(tensors[p.key])))
            if p.bias_key is not None:
                projection.bias.copy_(torch.from_numpy(np.ascontiguousarray(tensors[p.bias_key])))
        hidden = int(model.config.hidden_size)
        if p.in_features != hidden:
            raise CheckpointError(
                f"{p.source}: projection expects {p.in_features} features, encoder gives {hidden}"
            )
    return MultiVector(projection).eval()


def _batch(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    enc = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in enc)
    ids = np.zeros((len(enc), width), dtype=np.int64)
    mask = np.zeros((len(enc), width), dtype=np.int64)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def _max_length(info: CheckpointInfo, kind: str, requested: int | None) -> int:
    limit = int(info.config.get("max_position_embeddings") or 512)
    if requested is not None:
        if requested > limit:
            raise CheckpointError(f"--max-length {requested} exceeds the model's {limit} positions")
        return requested
    if info.document_length and kind == "multivector":
        return min(info.document_length, limit)
    if info.max_seq_length:
        return min(info.max_seq_length, limit)
    if kind == "sparse":
        return min(DEFAULT_SPARSE_MAX_LENGTH, limit)
    return min(512, limit)


def quantize_int8(folder: str | Path) -> float:
    """Write `model.int8.onnx` (dynamic int8 weights) next to `model.onnx`; return its max abs
    difference to the fp32 model on the parity batch and record it in the manifest."""
    import onnxruntime as ort
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer

    folder = Path(folder)
    manifest = read_manifest(folder)
    # Per-channel scales: with one scale per tensor, MiniLM's embeddings drift to cosine ~0.9 of
    # fp32; per output channel they stay above 0.99 at the same speed.
    quantize_dynamic(str(folder / MODEL_NAME), str(folder / INT8_MODEL_NAME),
                     weight_type=QuantType.QInt8, per_channel=True,
                     # fused contrib ops (Attention, ...) defeat shape inference of their outputs
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})
    tok = Tokenizer.from_file(str(folder / TOKENIZER_NAME))
    ids, mask = _batch(tok, PARITY_TEXTS, manifest["max_length"])
    feeds = {"input_ids": ids, "attention_mask": mask}
    outs = []
    for name in (MODEL_NAME, INT8_MODEL_NAME):
        sess = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"],
                                    disabled_optimizers=SESSION_DISABLED_OPTIMIZERS)
        outs.append(sess.run(None, feeds)[0])
    delta = np.abs(outs[0] - outs[1])
    if delta.ndim == 3:  # multivector: padding rows are never used, compare real tokens only
        delta = delta[mask.astype(bool)]
    diff = float(np.max(delta))
    manifest.setdefault("variants", {})["int8"] = {
        "file": INT8_MODEL_NAME, "quantization": "dynamic int8 weights, per channel (onnxruntime)",
        "parity_max_abs_diff_vs_fp32": diff,
    }
    write_manifest(folder, manifest)
    return diff


def export_model(
    model: str | Path,
    kind: str,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    max_length: int | None = None,
    pooling: str | None = None,
    matryoshka_dims: list[int] | None = None,
    query_prefix: str | None = None,
    document_prefix: str | None = None,
    query_length: int | None = None,
    doc_top_k: int = DEFAULT_DOC_TOP_K,
    parity_tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Export `model` (a local checkpoint folder) as `kind` into `out`; return the manifest.

    Raises `ExportError` when onnxruntime disagrees with torch by more than `parity_tolerance`
    on a padded batch, because a silently wrong encoder corrupts a whole index.
    """
    if kind not in KINDS:
        raise CheckpointError(f"kind {kind!r} is not one of {KINDS}")
    if quantize not in (None, "int8"):
        raise ExportError(f"quantize {quantize!r}: only 'int8' is supported")
    if pooling not in (None, "mean", "cls"):
        raise CheckpointError(f"pooling {pooling!r}: use 'mean' or 'cls'")
    info = inspect_checkpoint(model)
    if kind != "multivector" and info.projection is not None:
        info.notes.append(f"projection layer ignored for a {kind} export")
    torch, transformers = _require_torch()
    from tokenizers import Tokenizer

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    backbone = _load_backbone(info, kind)
    _write_tokenizer(info, out)
    tokenizer = Tokenizer.from_file(str(out / TOKENIZER_NAME))
    if kind == "multivector" and tokenizer.token_to_id("[MASK]") is None and \
            tokenizer.token_to_id("<mask>") is None:
        raise CheckpointError(f"{info.path}: tokenizer has no [MASK] token for query expansion")
    pooling = pooling or info.pooling
    length = _max_length(info, kind, max_length)
    module = _build_module(kind, backbone, info, pooling)

    ids, mask = _batch(tokenizer, PARITY_TEXTS, length)
    outputs = {"dense": ["embedding"], "sparse": ["term_weights"],
               "multivector": ["token_embeddings", "token_mask"]}[kind]
    if kind == "multivector" and info.projection is None:
        outputs = [*outputs, POOLED_OUTPUT]
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "sequence"},
                                       "attention_mask": {0: "batch", 1: "sequence"}}
    for name in outputs:
        axes[name] = {0: "batch", 1: "sequence"} if name in ("token_embeddings", "token_mask") \
            else {0: "batch"}
    tmp = out / (MODEL_NAME + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python-side shape checks in transformers' masking code; parity
        # below is what actually establishes that the traced graph is right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.from_numpy(ids), torch.from_numpy(mask)), str(tmp),
            input_names=["input_ids", "attention_mask"], output_names=outputs,
            dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True,
        )
        reference = module(torch.from_numpy(ids), torch.from_numpy(mask))
    pooled_reference = reference[2].numpy() if POOLED_OUTPUT in outputs else None
    reference = reference[0] if isinstance(reference, tuple) else reference
    # No offline fusion (onnxruntime.transformers' optimizer): with onnxruntime 1.32 its
    # SkipLayerNormalization kernel is 5x slower than Add + LayerNormalization, and its
    # Attention / QAttention are no faster than what the session fuses at load, so the plain
    # graph plus the session's own optimiser (runtime.SESSION_DISABLED_OPTIMIZERS) is fastest:
    # MiniLM int8 documents 22.3 -> 16.5 ms, fp32 48 -> 44 ms per 256-token text, one thread.
    tmp.replace(out / MODEL_NAME)

    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / MODEL_NAME), providers=["CPUExecutionProvider"],
                                disabled_optimizers=SESSION_DISABLED_OPTIMIZERS)
    got = sess.run([outputs[0]], {"input_ids": ids, "attention_mask": mask})[0]
    delta = np.abs(got - reference.numpy())
    if kind == "multivector":  # padding rows are dropped by the runtime
        delta = delta[mask.astype(bool)]
    parity = float(np.max(delta))
    if pooled_reference is not None:
        pooled = sess.run([POOLED_OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]
        parity = max(parity, float(np.max(np.abs(pooled - pooled_reference))))
    if not parity <= max(parity_tolerance, 0.0):
        raise ExportError(
            f"onnxruntime differs from torch by {parity:.3g} (> {parity_tolerance:g}) "
            f"exporting {info.path} as {kind}; the ONNX file in {out} is not trustworthy"
        )

    cfg = backbone.config
    hidden = int(cfg.hidden_size)
    if kind == "dense":
        dim = hidden
    elif kind == "sparse":
        dim = int(cfg.vocab_size)
    else:
        dim = info.projection.out_features if info.projection else hidden
    dims = sorted({int(d) for d in (matryoshka_dims or [])}, reverse=True)
    if kind == "dense" and any(d <= 0 or d > dim for d in dims):
        raise CheckpointError(f"matryoshka dims {dims} must lie in 1..{dim}")

    def special(*names: str) -> int | None:
        for n in names:
            i = tokenizer.token_to_id(n)
            if i is not None:
                return int(i)
        return None

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "source": str(info.path),
        "architecture": (info.architectures or [type(backbone).__name__])[0],
        "model_type": info.model_type,
        "pooling": {"dense": pooling, "sparse": "max log1p(relu(logits)) over tokens",
                    "multivector": "none (per token)"}[kind],
        "sentence_pooling": pooling if POOLED_OUTPUT in outputs else None,
        "normalization": "none" if kind == "sparse" else "l2",
        "dim": dim,
        "hidden_size": hidden,
        "matryoshka_dims": dims if kind == "dense" else [],
        "projection": None if info.projection is None or kind != "multivector" else {
            "file": str(info.projection.source.relative_to(info.path)),
            "in_features": info.projection.in_features,
            "out_features": info.projection.out_features,
        },
        "max_length": length,
        "query_max_length": (query_length or info.query_length or DEFAULT_QUERY_LENGTH)
        if kind == "multivector" else length,
        "attend_to_expansion_tokens": info.attend_to_expansion_tokens,
        # [MASK] query expansion is learned by ColBERT training; a plain sentence encoder's
        # [MASK] rows only add noise to MaxSim (SciFact, MiniLM tokens: nDCG@10 0.569 padded,
        # 0.636 unpadded), so only checkpoints with a ColBERT projection expand queries.
        "query_expansion": info.projection is not None if kind == "multivector" else None,
        "query_prefix": info.query_prefix if query_prefix is None else query_prefix,
        "document_prefix": info.document_prefix if document_prefix is None else document_prefix,
        "vocab_size": int(tokenizer.get_vocab_size()),
        "special_tokens": {
            "pad_id": special("[PAD]", "<pad>") or 0,
            "mask_id": special("[MASK]", "<mask>"),
            "cls_id": special("[CLS]", "<s>"),
            "sep_id": special("[SEP]", "</s>"),
        },
        "doc_top_k": doc_top_k if kind == "sparse" else None,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": outputs,
        "opset": opset,
        "graph_fusion": None,  # see above: onnxruntime fuses at load
        # the sparse head's vocabulary projection in chunks of this many entries (None: whole)
        "vocab_chunk": VOCAB_CHUNK if getattr(module, "slices", None) is not None else None,
        "sha256": sha256_files(info.weight_files),
        "weights": [str(p.relative_to(info.path)) for p in info.weight_files],
        "parity_max_abs_diff": parity,
        "parity_batch": {"texts": len(PARITY_TEXTS), "padded_shape": list(ids.shape)},
        "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "exported_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                          "onnxruntime": ort.__version__},
        "export_seconds": round(time.perf_counter() - started, 2),
        "notes": info.notes,
        "variants": {},
    }
    write_manifest(out, manifest)
    if quantize == "int8":
        quantize_int8(out)
        manifest = read_manifest(out)
    return manifest
