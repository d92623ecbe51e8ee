"""MUVERA fixed dimensional encodings (Dhulipala et al. 2024): one vector per token set.

Per repetition `r` (of `reps`):

* SimHash: `k_sim` Gaussian hyperplanes cut space into `2^k_sim` buckets; a token's bucket id is
  its sign bits read as a binary number (bit `i` = hyperplane `i`, most significant first).
* Inner projection (optional, `d_proj`): a random +-1/sqrt(d_proj) matrix (AMS sketch) maps each
  token from `dim` to `d_proj` dimensions, preserving inner products in expectation.
* Query block: the sum of the (projected) query tokens in each bucket.
  Document block: the mean of the (projected) document tokens in each bucket; an empty bucket
  takes the document token whose SimHash sketch is nearest in Hamming distance to the bucket id
  (ties: the earliest token), so every query bucket meets a document vector.

The blocks are concatenated over repetitions (`reps * 2^k_sim * d_proj` values), and an optional
final count-sketch projection (`final_dim`) hashes each coordinate to one of `final_dim` outputs
with a random sign. `<encode_query(Q), encode_document(D)>` then approximates the Chamfer / MaxSim
score `sum_q max_d <q, d>` averaged over repetitions (both sides are scaled by `1/sqrt(reps)`
so the dot product is the mean over repetitions).

Defaults (k_sim=4, reps=8, d_proj=16) give 2048 dimensions for any token width, well inside the
lucene engine's 16000 `knn_vector` limit. On clustered synthetic token sets they reach Pearson
r ~0.77-0.80 with Chamfer. At the same 2048 budget, k_sim=3 (reps=8, d_proj=32) did better on
documents of few topics and worse on 180-token, 24-topic ones; k_sim=5 was lower on both
(`bench/codecs.py` prints the comparison). Wider FDEs track Chamfer more closely
(k_sim=4, reps=10, d_proj=64: 10240 dims, r ~0.82).

`dtype="int8"` stores the document FDE in a quarter of the bytes, as a k-NN `byte` vector
(`data_type: byte`, lucene engine: Lucene then keeps one byte per dimension and no float copy,
unlike its scalar-quantized `sq` encoder, which keeps both). Every coordinate of a document FDE is
a mean of the same kind of random projection, so one scale serves all of them: `calibrate_int8`
sets it from a sample so that the `clip_quantile` of |x| maps to 127 (rarer outliers clip).
Queries are quantized on their own (max |q| -> 127): a positive query scale does not change the
ranking, and the byte field accepts only integer query values. `bench/index_size.py` measures
the bytes, `bench/quality.py` the nDCG@10 of the FDE first stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osneural.codecs.serialization import (
    array_to_b64,
    as_matrix,
    check_header,
    header,
    load_array,
)

KIND = "muvera"
DTYPES = ("float32", "int8")


class MuveraFDE:
    """Seeded random SimHash / projection state; encodes token sets into one vector each."""

    def __init__(
        self,
        dim: int,
        k_sim: int = 4,
        reps: int = 8,
        d_proj: int | None = 16,
        final_dim: int | None = None,
        seed: int = 0,
        dtype: str = "float32",
        int8_scale: float | None = None,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if not 0 <= k_sim <= 12:
            raise ValueError(f"k_sim must be between 0 and 12 (2^k_sim buckets), got {k_sim}")
        if reps < 1:
            raise ValueError(f"reps must be positive, got {reps}")
        if d_proj is not None and d_proj < 1:
            raise ValueError(f"d_proj must be positive or None, got {d_proj}")
        if final_dim is not None and final_dim < 1:
            raise ValueError(f"final_dim must be positive or None, got {final_dim}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if int8_scale is not None and not (np.isfinite(int8_scale) and int8_scale > 0):
            raise ValueError(f"int8_scale must be a positive finite number, got {int8_scale}")
        self.dtype = dtype
        self.int8_scale = None if int8_scale is None else float(int8_scale)
        self.dim = int(dim)
        self.k_sim = int(k_sim)
        self.reps = int(reps)
        self.d_proj = None if d_proj is None else int(d_proj)
        self.final_dim = None if final_dim is None else int(final_dim)
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        # All state derives from the seed; it is still serialized so a numpy change to the
        # generator cannot silently change the encoding of an existing index.
        self.hyperplanes = rng.standard_normal((self.reps, self.dim, self.k_sim)).astype(np.float32)
        width = self.block_width
        self.projections = (
            None
            if self.d_proj is None
            else (
                rng.choice([-1.0, 1.0], size=(self.reps, self.dim, width)) / np.sqrt(width)
            ).astype(np.float32)
        )
        self.sketch_index: np.ndarray | None = None
        self.sketch_sign: np.ndarray | None = None
        if self.final_dim is not None:
            self.sketch_index = rng.integers(0, self.final_dim, size=self.inner_dim)
            self.sketch_sign = rng.choice([-1.0, 1.0], size=self.inner_dim).astype(np.float32)
        # Hamming distance between bucket ids, for filling empty document buckets.
        ids = np.arange(self.n_buckets)
        self._bucket_hamming = (
            np.unpackbits((ids[:, None] ^ ids[None, :]).astype(np.uint16).view(np.uint8), axis=-1)
            .reshape(self.n_buckets, self.n_buckets, -1)
            .sum(-1)
        )

    @property
    def n_buckets(self) -> int:
        return 1 << self.k_sim

    @property
    def block_width(self) -> int:
        return self.dim if self.d_proj is None else self.d_proj

    @property
    def inner_dim(self) -> int:
        return self.reps * self.n_buckets * self.block_width

    @property
    def fde_dim(self) -> int:
        return self.inner_dim if self.final_dim is None else self.final_dim

    # -- encoding -------------------------------------------------------------------------------
    @property
    def data_type(self) -> str:
        """The `knn_vector` `data_type` the document FDE needs (`float` or `byte`)."""
        return "byte" if self.dtype == "int8" else "float"

    def encode_query(self, tokens: Any) -> np.ndarray:
        """Query FDE float32 [fde_dim]: per-bucket sums (int8: integers, max |q| = 127)."""
        return self._quantize(self._encode(tokens, query=True)[None, :], query=True)[0]

    def encode_document(self, tokens: Any) -> np.ndarray:
        """Document FDE float32 [fde_dim]: per-bucket means, empty buckets filled (int8:
        integers in [-128, 127] at the calibrated scale)."""
        return self._quantize(self._encode(tokens, query=False)[None, :], query=False)[0]

    def encode_queries(self, token_sets: list[Any]) -> np.ndarray:
        return self._quantize(self._encode_many(token_sets, query=True), query=True)

    def encode_documents(self, token_sets: list[Any]) -> np.ndarray:
        return self._quantize(self._encode_many(token_sets, query=False), query=False)

    def encode_documents_float(self, token_sets: list[Any]) -> np.ndarray:
        """Document FDEs before any int8 quantization (for calibration and measurement)."""
        return self._encode_many(token_sets, query=False)

    def calibrate_int8(self, token_sets: list[Any], clip_quantile: float = 0.9999) -> MuveraFDE:
        """Switch to int8 with the scale that maps the `clip_quantile` of |x| over these
        documents' FDEs to 127; returns self."""
        if not 0.5 < clip_quantile <= 1.0:
            raise ValueError(f"clip_quantile must lie in (0.5, 1], got {clip_quantile}")
        if not len(token_sets):
            raise ValueError("calibrate_int8 needs at least one document")
        x = np.abs(self._encode_many(list(token_sets), query=False))
        top = float(np.quantile(x, clip_quantile))
        if not top > 0:
            raise ValueError("calibrate_int8: the sample's FDEs are all zero")
        self.dtype = "int8"
        self.int8_scale = 127.0 / top
        return self

    def _quantize(self, x: np.ndarray, query: bool) -> np.ndarray:
        if self.dtype == "float32":
            return x
        if query:
            peak = np.abs(x).max(axis=1, keepdims=True)
            scale = 127.0 / np.where(peak > 0, peak, 1.0)
        else:
            if self.int8_scale is None:
                raise ValueError("int8 MUVERA FDE has no scale: call calibrate_int8 first")
            scale = self.int8_scale
        return np.clip(np.rint(x * scale), -128, 127).astype(np.float32)

    def _encode_many(self, token_sets: list[Any], query: bool) -> np.ndarray:
        out = np.empty((len(token_sets), self.fde_dim), dtype=np.float32)
        for i, tokens in enumerate(token_sets):
            out[i] = self._encode(tokens, query, label=f"token set {i}")
        return out

    def _buckets(self, tokens: np.ndarray) -> np.ndarray:
        """Bucket id per token and repetition, int [t, reps]."""
        planes = self.hyperplanes.transpose(1, 0, 2).reshape(self.dim, -1)  # [dim, reps * k]
        signs = (tokens @ planes).reshape(-1, self.reps, self.k_sim) > 0
        weights = 1 << np.arange(self.k_sim - 1, -1, -1)
        return signs.astype(np.int64) @ weights

    def _encode(self, tokens: Any, query: bool, label: str = "tokens") -> np.ndarray:
        kind = "query" if query else "document"
        tokens = as_matrix(tokens, f"MuveraFDE {kind} {label}", dim=self.dim)
        t = tokens.shape[0]
        buckets = self._buckets(tokens)  # [t, reps]
        if self.projections is None:
            projected = np.broadcast_to(tokens[:, None, :], (t, self.reps, self.dim))
        else:
            flat_proj = self.projections.transpose(1, 0, 2).reshape(self.dim, -1)
            projected = (tokens @ flat_proj).reshape(t, self.reps, self.block_width)
        blocks = np.empty((self.reps, self.n_buckets, self.block_width), dtype=np.float32)
        ids = np.arange(self.n_buckets)
        for r in range(self.reps):
            # One-hot [buckets, t] times the tokens: per-bucket sums as one small matmul.
            members = (buckets[:, r][None, :] == ids[:, None]).astype(np.float32)
            blocks[r] = members @ projected[:, r]
            if not query:
                counts = members.sum(axis=1)
                filled = counts > 0
                blocks[r, filled] /= counts[filled, None]
                empty = np.flatnonzero(~filled)
                if empty.size:
                    nearest = np.argmin(self._bucket_hamming[empty][:, buckets[:, r]], axis=1)
                    blocks[r, empty] = projected[nearest, r]
        flat = blocks.reshape(-1)
        if self.final_dim is not None:
            flat = np.bincount(
                self.sketch_index, weights=flat * self.sketch_sign, minlength=self.final_dim
            )
        return (flat / np.sqrt(self.reps)).astype(np.float32)

    # -- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = header(KIND)
        data.update(
            dim=self.dim,
            k_sim=self.k_sim,
            reps=self.reps,
            d_proj=self.d_proj,
            final_dim=self.final_dim,
            seed=self.seed,
            fde_dim=self.fde_dim,
            dtype=self.dtype,
            int8_scale=self.int8_scale,
            hyperplanes=array_to_b64(self.hyperplanes),
            projections=None if self.projections is None else array_to_b64(self.projections),
            sketch_index=None if self.sketch_index is None else array_to_b64(self.sketch_index),
            sketch_sign=None if self.sketch_sign is None else array_to_b64(self.sketch_sign),
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MuveraFDE:
        check_header(data, KIND)
        codec = cls(
            data["dim"],
            data["k_sim"],
            data["reps"],
            data["d_proj"],
            data["final_dim"],
            data["seed"],
            # Bundles written before int8 FDEs existed hold float32 ones.
            data.get("dtype", "float32"),
            data.get("int8_scale"),
        )
        codec.hyperplanes = load_array(data["hyperplanes"], codec.hyperplanes.shape, "hyperplanes", KIND)
        if codec.projections is not None:
            codec.projections = load_array(data["projections"], codec.projections.shape, "projections", KIND)
        if codec.sketch_index is not None:
            codec.sketch_index = load_array(
                data["sketch_index"], codec.sketch_index.shape, "sketch_index", KIND
            ).astype(np.int64)
            codec.sketch_sign = load_array(data["sketch_sign"], codec.sketch_sign.shape, "sketch_sign", KIND)
        return codec


def chamfer(query: np.ndarray, doc: np.ndarray) -> float:
    """Numpy reference Chamfer / MaxSim score: sum over query tokens of the best doc token."""
    return float((np.asarray(query) @ np.asarray(doc).T).max(axis=1).sum())
