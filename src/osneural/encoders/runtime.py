"""Torch-free encoders: onnxruntime sessions fed by `tokenizers`.

Texts are tokenised in one Rust call, sorted by length and batched so that each batch is padded
only to its own longest text, which is where most of the speed over naive batching comes from on
real corpora. Truncation is counted rather than silent, because a corpus whose documents are
mostly truncated needs chunking, and the caller is the one who can decide that.

Empty or whitespace-only texts never reach the model and get a defined representation:
a zero vector (dense), an empty dict (sparse) or a `[0, dim]` array (multi-vector).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import string
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osneural.encoders.errors import EncoderError, EncoderInputError, ModelNotFoundError
from osneural.encoders.idf import IdfTable, document_frequencies, idf_from_counts
from osneural.encoders.manifest import (
    IDF_NAME,
    INT8_MODEL_NAME,
    MODEL_NAME,
    POOLED_OUTPUT,
    TOKENIZER_NAME,
    read_manifest,
)

TextInput = str | bytes

#: onnxruntime graph rewrites every encoder session skips. SkipLayerNormFusion turns Add +
#: LayerNormalization into SkipLayerNormalization, whose CPU kernel (onnxruntime 1.32) takes
#: 1.9 ms where the pair takes 0.37 ms on a [4, 250, 384] batch: MiniLM int8 encodes a
#: 256-token document in 16.5 ms without it and 19.6 ms with it (one thread, SciFact).
SESSION_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


@dataclass
class EncodeStats:
    """What happened to the texts of the last `encode_*` call."""

    texts: int = 0
    empty: int = 0
    truncated: int = 0
    tokens: int = 0  # tokens fed to the model, padding excluded
    truncated_indices: list[int] = field(default_factory=list)


def check_texts(texts: Iterable[TextInput]) -> list[str]:
    """Validate and decode inputs; errors name the offending position."""
    if isinstance(texts, (str, bytes)):
        raise EncoderInputError("expected a sequence of texts, got a single string; wrap it in a list")
    out: list[str] = []
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EncoderInputError(
                    f"text #{i} is not valid UTF-8 (byte {exc.start}: {exc.reason})"
                ) from exc
        elif not isinstance(t, str):
            raise EncoderInputError(f"text #{i} is {type(t).__name__}, expected str or UTF-8 bytes")
        out.append(t)
    return out


class OnnxEncoder:
    """Shared plumbing: manifest, tokenizer, session, length-sorted batching, statistics."""

    kind = ""
    #: default `max_batch_tokens` (None: batches are `batch_size` texts whatever their length).
    #: A MiniLM layer's activations (tokens x 1536 floats for the FFN, heads x tokens^2 for
    #: attention) stay in cache for small runs: SciFact passages at batch 32, 2 streams, dense
    #: int8 104-105 docs/s with 128 to 512 tokens per run, 88 with 1024, 69 with 2048.
    DEFAULT_BATCH_TOKENS: int | None = 512

    def __init__(
        self,
        folder: str | Path,
        *,
        precision: str = "fp32",
        batch_size: int = 32,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        manifest: Mapping[str, Any] | None = None,
        max_batch_tokens: int | None = None,
        streams: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.manifest: dict[str, Any] = dict(manifest or read_manifest(self.folder))
        if self.kind and self.manifest["kind"] != self.kind:
            raise EncoderError(
                f"{self.folder} holds a {self.manifest['kind']} model, not a {self.kind} one"
            )
        if precision not in ("fp32", "int8"):
            raise EncoderError(f"precision {precision!r}: use 'fp32' or 'int8'")
        model_file = self.folder / (MODEL_NAME if precision == "fp32" else INT8_MODEL_NAME)
        if not model_file.is_file():
            raise ModelNotFoundError(
                f"{model_file} is missing; export with `osneural export --quantize int8`"
            )
        if batch_size < 1:
            raise EncoderError("batch_size must be at least 1")
        self.precision = precision
        self.batch_size = batch_size
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise EncoderError("max_batch_tokens must be at least 1 (or None for no cap)")
        # A cap on batch x padded width: SPLADE's [batch, width, vocab] logits grow with it, and
        # past a few thousand tokens the memory traffic costs more than the batching saves.
        self.max_batch_tokens = max_batch_tokens if max_batch_tokens is not None else self.DEFAULT_BATCH_TOKENS
        self.max_length = int(self.manifest["max_length"])
        self.query_max_length = int(self.manifest.get("query_max_length") or self.max_length)
        self.query_prefix = str(self.manifest.get("query_prefix") or "")
        self.document_prefix = str(self.manifest.get("document_prefix") or "")
        self.sha256 = str(self.manifest["sha256"])
        self.tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_NAME))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._truncators: dict[int, Any] = {}
        self._lazy_lock = threading.Lock()  # guards what is built on first use: truncators, pool
        self.pad_id = int(self.manifest.get("special_tokens", {}).get("pad_id") or 0)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Batches run as concurrent streams of one thread each (the session is thread-safe),
        # unless the caller fixes the thread count. One run spread over every core syncs its
        # threads at each operator, and when the local OpenSearch node takes a core for
        # indexing the run waits on the preempted thread: with one core busy elsewhere, MiniLM
        # int8 encoded 32 docs/s with 2 intra-op threads and 47 docs/s as 2 streams of 1.
        if streams is not None and streams < 1:
            raise EncoderError("streams must be at least 1")
        self.streams = int(streams) if streams else (1 if intra_op_threads else _cores())
        self._pool: cf.ThreadPoolExecutor | None = None
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        elif self.streams > 1:
            opts.intra_op_num_threads = 1
        if inter_op_threads:
            opts.inter_op_num_threads = int(inter_op_threads)
        self.session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=SESSION_DISABLED_OPTIMIZERS)
        self.truncated_count = 0  # over the encoder's lifetime
        self.last_stats = EncodeStats()

    # -- tokenisation -------------------------------------------------------------------------
    def _truncating(self, max_length: int) -> Any:
        """A tokenizer that truncates to `max_length`, one per length, configured once.

        One encoder serves concurrent queries (and ingestion may encode from several threads):
        switching truncation on and off around each call on a shared tokenizer let one thread's
        `no_truncation` reach another's batch, whose 600-token text then overflowed the position
        embeddings (onnxruntime: "invalid expand shape") or came back untruncated."""
        tok = self._truncators.get(max_length)
        if tok is None:
            with self._lazy_lock:
                tok = self._truncators.get(max_length)
                if tok is None:
                    from tokenizers import Tokenizer

                    tok = Tokenizer.from_str(self.tokenizer.to_str())
                    tok.no_padding()
                    tok.enable_truncation(max_length)
                    self._truncators[max_length] = tok
        return tok

    def _tokenize(self, texts: list[str], prefix: str, max_length: int,
                  stats: EncodeStats) -> list[list[int] | None]:
        """Token ids per text (None for empty texts), truncated to `max_length`."""
        stats.texts = len(texts)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        stats.empty = len(texts) - len(keep)
        result: list[list[int] | None] = [None] * len(texts)
        if not keep:
            return result
        tok = self._truncating(max_length)
        # One text (a query) is encoded without `encode_batch`'s rayon fan-out, whose wake-up of
        # the pool's threads cost 0.4 ms per query on a 2-core node host against 26 us alone.
        encodings = ([tok.encode(prefix + texts[keep[0]])] if len(keep) == 1
                     else tok.encode_batch([prefix + texts[i] for i in keep]))
        for i, enc in zip(keep, encodings, strict=True):
            result[i] = list(enc.ids)
            if enc.overflowing:
                stats.truncated += 1
                stats.truncated_indices.append(i)
        self.truncated_count += stats.truncated
        return result

    def _run(self, ids: list[list[int] | None], masks: list[list[int]] | None = None,
             stats: EncodeStats | None = None) -> dict[int, tuple[np.ndarray, ...]]:
        """Run the session over length-sorted batches; returns per-text output rows."""
        order = sorted((i for i, x in enumerate(ids) if x is not None), key=lambda i: -len(ids[i]))
        batches = list(self._batches(order, ids))

        def run_one(batch: list[int]) -> tuple[list[int], np.ndarray, list[np.ndarray]]:
            width = max(len(ids[i]) for i in batch)
            input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, i in enumerate(batch):
                seq = ids[i]
                input_ids[r, : len(seq)] = seq
                mask[r, : len(seq)] = masks[i] if masks is not None else 1
            return batch, input_ids, self.session.run(None, {"input_ids": input_ids,
                                                             "attention_mask": mask})

        if self.streams > 1 and len(batches) > 1:
            results = self._stream_pool().map(run_one, batches)
        else:
            results = map(run_one, batches)
        rows: dict[int, tuple[np.ndarray, ...]] = {}
        for batch, input_ids, outputs in results:
            for r, i in enumerate(batch):
                rows[i] = tuple(o[r] for o in outputs) + (input_ids[r, : len(ids[i])],)
                if stats is not None:
                    stats.tokens += len(ids[i])
        return rows

    def _stream_pool(self) -> cf.ThreadPoolExecutor:
        with self._lazy_lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self.streams, thread_name_prefix="osneural-encode")
            return self._pool

    def _batches(self, order: list[int], ids: list[list[int] | None]) -> Iterator[list[int]]:
        """Runs of `order` (longest first) of at most `batch_size` texts and, with a token cap,
        at most `max_batch_tokens` padded tokens (a text longer than the cap goes alone)."""
        cap = self.max_batch_tokens
        start = 0
        while start < len(order):
            size = self.batch_size
            if cap:
                width = len(ids[order[start]])  # the longest of this run: its padded width
                size = max(1, min(size, cap // max(width, 1)))
            yield order[start : start + size]
            start += size

    def describe(self) -> dict[str, Any]:
        return {"kind": self.manifest["kind"], "folder": str(self.folder), "sha256": self.sha256,
                "precision": self.precision, "max_length": self.max_length}


class DenseEncoder(OnnxEncoder):
    """One L2-normalised vector per text, optionally truncated to a Matryoshka dimension."""

    kind = "dense"

    def __init__(self, folder: str | Path, *, dim: int | None = None, **kwargs: Any) -> None:
        super().__init__(folder, **kwargs)
        full = int(self.manifest["dim"])
        allowed = [full, *self.manifest.get("matryoshka_dims", [])]
        if dim is not None and dim not in allowed:
            raise EncoderError(f"dim {dim}: this model offers {sorted(set(allowed), reverse=True)}")
        self.dim = dim or full

    def _encode(self, texts: Iterable[TextInput], prefix: str, max_length: int) -> np.ndarray:
        stats = EncodeStats()
        texts = check_texts(texts)
        ids = self._tokenize(texts, prefix, max_length, stats)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, row in self._run(ids, stats=stats).items():
            # The graph already normalises; renormalising after a Matryoshka cut is what makes
            # the shorter vector a unit vector again (a no-op at full dimension).
            vec = row[0][: self.dim].astype(np.float32)
            norm = float(np.linalg.norm(vec))
            out[i] = vec / norm if norm > 0 else vec
        self.last_stats = stats
        return out

    def encode_documents(self, texts: Iterable[TextInput]) -> np.ndarray:
        """float32 [n, dim]; empty texts give zero rows."""
        return self._encode(texts, self.document_prefix, self.max_length)

    def encode_queries(self, texts: Iterable[TextInput]) -> np.ndarray:
        return self._encode(texts, self.query_prefix, self.query_max_length)


class SparseEncoder(OnnxEncoder):
    """SPLADE term weights as `{token: weight}` (raw wordpiece strings; ingestion sanitises keys).

    `doc_top_k=None` takes the manifest's (exports write 160 unless told), `0` keeps every non-zero term; queries
    keep every non-zero term unless `query_top_k` is set.
    `query_mode="inference_free"` encodes queries with the tokenizer alone, each distinct token
    weighted by `idf` (an `IdfTable`, its `to_dict()` form, a path to one, or None for 1.0).
    """

    kind = "sparse"
    # Measured on SciFact (2-core box, batch 32 -> 2-16 texts of ~250 tokens): 4-8 texts per run
    # encode 2.2x faster than 32, and a run's fp32 logits shrink from 1.0 GB to 0.13 GB. With
    # the export's pooling (no mask pass over the logits) int8 gave 130-135 docs/s from 512 to
    # 1024 tokens per run and 97 at 384, where a run's fixed cost starts to show. With the
    # vocabulary projected in chunks (exports with `vocab_chunk`): 280 docs/s at 512 tokens,
    # 276 at 1024, 229 at 2048 (chunk 256); 265, 246, 244 (chunk 512, the export's).
    DEFAULT_BATCH_TOKENS = 512

    def __init__(
        self,
        folder: str | Path,
        *,
        doc_top_k: int | None = None,
        query_top_k: int | None = None,
        query_mode: str = "model",
        idf: IdfTable | Mapping[str, Any] | str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(folder, **kwargs)
        if query_mode not in ("model", "inference_free"):
            raise EncoderError(f"query_mode {query_mode!r}: use 'model' or 'inference_free'")
        self.doc_top_k = doc_top_k if doc_top_k is not None else self.manifest.get("doc_top_k")
        self.query_top_k = query_top_k
        self.query_mode = query_mode
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = int(self.manifest["vocab_size"])
        self.id_to_token: list[str] = [""] * max(self.vocab_size, max(vocab.values()) + 1)
        for tok, i in vocab.items():
            self.id_to_token[i] = tok
        specials = self.manifest.get("special_tokens", {})
        self.special_ids = {int(v) for v in specials.values() if v is not None}
        if idf is None and (self.folder / IDF_NAME).is_file():
            idf = self.folder / IDF_NAME
        self.idf: IdfTable | None = None
        self._idf_weights: np.ndarray | None = None
        if idf is not None:
            self.set_idf(idf)

    # -- IDF ------------------------------------------------------------------------------------
    def set_idf(self, idf: IdfTable | Mapping[str, Any] | str | Path | None) -> None:
        if idf is None:
            self.idf, self._idf_weights = None, None
            return
        if isinstance(idf, (str, Path)):
            idf = IdfTable.load(idf)
        elif not isinstance(idf, IdfTable):
            idf = IdfTable.from_dict(idf)
        if idf.vocab_size != len(self.id_to_token) and idf.vocab_size != self.vocab_size:
            raise EncoderError(
                f"IDF table has vocabulary {idf.vocab_size}, model has {self.vocab_size}"
            )
        self.idf = idf
        self._idf_weights = idf.weights()

    def fit_idf(self, texts: Iterable[TextInput], *, use: bool = True) -> IdfTable:
        """Document frequencies of the tokens of `texts` (special tokens excluded)."""
        texts = check_texts(texts)
        encs = self.tokenizer.encode_batch([self.document_prefix + t for t in texts],
                                           add_special_tokens=False)
        n, counts = document_frequencies((e.ids for e in encs), len(self.id_to_token))
        table = idf_from_counts(n, counts)
        if use:
            self.set_idf(table)
        return table

    def idf_to_dict(self) -> dict[str, Any]:
        if self.idf is None:
            raise EncoderError("no IDF table: call fit_idf(texts) or pass idf=")
        return self.idf.to_dict()

    # -- encoding -------------------------------------------------------------------------------
    def _to_dict(self, weights: np.ndarray, top_k: int | None) -> dict[str, float]:
        nz = np.flatnonzero(weights > 0)
        if top_k and nz.size > top_k:
            nz = nz[np.argpartition(-weights[nz], top_k - 1)[:top_k]]
        nz = nz[np.argsort(-weights[nz], kind="stable")]
        return {self.id_to_token[i]: float(weights[i]) for i in nz}

    def _encode_model(self, texts: Iterable[TextInput], prefix: str, max_length: int,
                      top_k: int | None) -> list[dict[str, float]]:
        stats = EncodeStats()
        texts = check_texts(texts)
        ids = self._tokenize(texts, prefix, max_length, stats)
        out: list[dict[str, float]] = [{} for _ in texts]
        for i, row in self._run(ids, stats=stats).items():
            out[i] = self._to_dict(row[0], top_k)
        self.last_stats = stats
        return out

    def encode_documents(self, texts: Iterable[TextInput]) -> list[dict[str, float]]:
        return self._encode_model(texts, self.document_prefix, self.max_length, self.doc_top_k)

    def encode_queries(self, texts: Iterable[TextInput], *,
                       idf: IdfTable | Mapping[str, Any] | None = None) -> list[dict[str, float]]:
        if self.query_mode == "model" and idf is None:
            return self._encode_model(texts, self.query_prefix, self.query_max_length,
                                      self.query_top_k)
        weights = self._idf_weights
        if idf is not None:
            table = idf if isinstance(idf, IdfTable) else IdfTable.from_dict(idf)
            weights = table.weights()
        return self._encode_inference_free(texts, weights)

    def _encode_inference_free(self, texts: Iterable[TextInput],
                               weights: np.ndarray | None) -> list[dict[str, float]]:
        stats = EncodeStats()
        texts = check_texts(texts)
        ids = self._tokenize(texts, self.query_prefix, self.query_max_length, stats)
        out: list[dict[str, float]] = []
        for seq in ids:
            terms: dict[str, float] = {}
            for t in seq or ():
                if t in self.special_ids:
                    continue
                w = 1.0 if weights is None else float(weights[t])
                if w > 0:
                    terms[self.id_to_token[t]] = w
                    stats.tokens += 1
            if self.query_top_k is not None and len(terms) > self.query_top_k:
                terms = dict(sorted(terms.items(), key=lambda kv: -kv[1])[: self.query_top_k])
            out.append(terms)
        self.last_stats = stats
        return out


def _punctuation_mask(tokenizer, size: int) -> np.ndarray:
    """True for vocabulary entries made only of punctuation (ColBERT's document skiplist)."""
    mask = np.zeros(size, dtype=bool)
    for tok, i in tokenizer.get_vocab(with_added_tokens=True).items():
        core = tok[2:] if tok.startswith("##") else tok
        if core and all(c in string.punctuation or unicodedata.category(c).startswith("P")
                        for c in core):
            mask[i] = True
    return mask


class MultiVectorEncoder(OnnxEncoder):
    """ColBERT-style token embeddings, rows L2-normalised.

    Documents keep [CLS] and [SEP] (ColBERT's skiplist covers punctuation only) and drop padding
    and punctuation tokens. Queries of ColBERT-layout checkpoints are padded with [MASK] to
    `query_max_length` (32 by default) and keep every row, expansion tokens included; the [MASK] tokens are attended to only when the
    checkpoint asks for it (`attend_to_expansion_tokens`, PyLate's setting; off as in ColBERTv2).
    """

    kind = "multivector"

    def __init__(self, folder: str | Path, *, drop_punctuation: bool = True, **kwargs: Any) -> None:
        super().__init__(folder, **kwargs)
        self.dim = int(self.manifest["dim"])
        size = max(self.tokenizer.get_vocab_size(with_added_tokens=True), int(self.manifest["vocab_size"]))
        self.skip = _punctuation_mask(self.tokenizer, size) if drop_punctuation else np.zeros(size, bool)
        mask_id = self.manifest.get("special_tokens", {}).get("mask_id")
        if mask_id is None:
            raise EncoderError(f"{self.folder}: manifest has no [MASK] token id for query padding")
        self.mask_id = int(mask_id)
        self.attend_to_expansion = bool(self.manifest.get("attend_to_expansion_tokens", False))
        self.query_expansion = bool(self.manifest.get("query_expansion", True))

    @property
    def has_pooled_output(self) -> bool:
        """True when the graph also yields the pooled sentence vector (no projection layer)."""
        return POOLED_OUTPUT in self.manifest.get("outputs", [])

    def shares_dense_pass(self, dense: DenseEncoder) -> bool:
        """Whether this graph's pooled output can stand for `dense`'s vectors, so one pass serves
        both: same weights, tokenizer limits, prefix and pooling, at full dimension, and the same
        precision or a finer one here. With the document defaults both run int8 (one int8 pass);
        an fp32 token pass standing in for an int8 dense encoder (`OSNEURAL_DOCUMENT_PRECISION`
        unset with an export lacking the token int8 file) gives the fp32 vector, which int8
        only approximates, at no extra cost; two passes would cost an extra int8 run."""
        return (self.has_pooled_output and dense.sha256 == self.sha256
                and dense.max_length == self.max_length
                and dense.document_prefix == self.document_prefix
                and (dense.precision == self.precision
                     or (self.precision == "fp32" and dense.precision == "int8"))
                and dense.dim == int(dense.manifest["dim"]) == self.dim
                and dense.manifest.get("pooling") == self.manifest.get("sentence_pooling"))

    def encode_documents(self, texts: Iterable[TextInput]) -> list[np.ndarray]:
        """float32 [t_i, dim] per text; `[0, dim]` for empty text."""
        return self.encode_documents_and_pooled(texts)[0]

    def encode_documents_and_pooled(
        self, texts: Iterable[TextInput]
    ) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Token rows per text and, when the graph has it, the pooled vector per text (zero rows
        for empty text, as `DenseEncoder` gives); None otherwise."""
        stats = EncodeStats()
        texts = check_texts(texts)
        ids = self._tokenize(texts, self.document_prefix, self.max_length, stats)
        out = [np.zeros((0, self.dim), dtype=np.float32) for _ in texts]
        pooled = np.zeros((len(texts), self.dim), dtype=np.float32) if self.has_pooled_output else None
        for i, row in self._run(ids, stats=stats).items():
            seq = row[-1]
            keep = ~self.skip[seq]
            out[i] = np.ascontiguousarray(row[0][: len(seq)][keep], dtype=np.float32)
            if pooled is not None:
                pooled[i] = row[2]
        self.last_stats = stats
        return out, pooled

    def shares_query_pass(self, dense: DenseEncoder) -> bool:
        """Whether this graph's pooled output of a query is `dense`'s query vector: the document
        conditions plus no [MASK] expansion, the same query prefix, a query length no longer
        than `dense`'s (a query cut at this encoder's length is checked per text) and the same
        precision. Unlike a document build, where both encoders always run together, a query
        process loads the token encoder only once some spec needs it: an fp32 pass standing in
        for an int8 dense encoder would give the same query a different dense vector, and a
        different ranking, depending on which spec ran first in the process."""
        return (self.shares_dense_pass(dense) and dense.precision == self.precision
                and not self.query_expansion
                and dense.query_prefix == self.query_prefix
                and self.query_max_length <= dense.query_max_length)

    def encode_queries_and_pooled(
        self, texts: Iterable[TextInput], dense: DenseEncoder | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Query token rows and, per text, the pooled vector standing in for `dense`'s query
        vector from the same pass: None where it would differ (no pooled output, `dense` does
        not share the pass, or the text was cut at this encoder's shorter query length)."""
        tokens, pooled, stats = self._encode_queries(texts)
        if dense is None or not self.shares_query_pass(dense):
            return tokens, [None] * len(tokens)
        for i in stats.truncated_indices:
            pooled[i] = None
        return tokens, pooled

    def encode_queries(self, texts: Iterable[TextInput]) -> list[np.ndarray]:
        """float32 [query_max_length, dim] per text ([MASK]-padded) when the model expands
        queries, else [query tokens, dim]; `[0, dim]` for empty text."""
        return self._encode_queries(texts)[0]

    def _encode_queries(
        self, texts: Iterable[TextInput]
    ) -> tuple[list[np.ndarray], list[np.ndarray | None], EncodeStats]:
        stats = EncodeStats()
        texts = check_texts(texts)
        ids = self._tokenize(texts, self.query_prefix, self.query_max_length, stats)
        length = self.query_max_length
        padded: list[list[int] | None] = []
        masks: list[list[int]] = []
        for seq in ids:
            if seq is None:
                padded.append(None)
                masks.append([])
                continue
            extra = length - len(seq) if self.query_expansion else 0
            padded.append(seq + [self.mask_id] * extra)
            masks.append([1] * len(seq) + [int(self.attend_to_expansion)] * extra)
        out = [np.zeros((0, self.dim), dtype=np.float32) for _ in texts]
        pooled: list[np.ndarray | None] = [None] * len(texts)
        for i, row in self._run(padded, masks, stats=stats).items():
            out[i] = np.ascontiguousarray(row[0][: len(padded[i])], dtype=np.float32)
            if self.has_pooled_output:
                pooled[i] = np.asarray(row[2], dtype=np.float32)
        self.last_stats = stats
        return out, pooled, stats


ENCODER_CLASSES: dict[str, type[OnnxEncoder]] = {
    "dense": DenseEncoder,
    "sparse": SparseEncoder,
    "multivector": MultiVectorEncoder,
}


def _cores() -> int:
    """CPUs this process may run on (its affinity, as a container or `taskset` limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def load_encoder(path: str | Path, **kwargs: Any) -> DenseEncoder | SparseEncoder | MultiVectorEncoder:
    """Open an exported model folder; `kwargs` go to the encoder class (precision, batch_size,
    intra_op_threads, ... and kind-specific options)."""
    manifest = read_manifest(path)
    cls = ENCODER_CLASSES[manifest["kind"]]
    return cls(path, manifest=manifest, **kwargs)  # type: ignore[return-value]


def sequence_lengths(encoder: OnnxEncoder, texts: Sequence[str]) -> list[int]:
    """Token counts without truncation, to decide whether a corpus needs chunking."""
    return [len(e.ids) for e in encoder.tokenizer.encode_batch(check_texts(texts))]
