"""Training the codecs of a new index on a sample of its encoded documents, and their `_meta`.

The codec stage uses the codecs package defaults, chosen for MiniLM: 1 bit per dense dimension cut
into `mih_m` = 64 MIH substrings (6 bits each: near codes share many terms), dense PQ M = 48,
tokens projected on their 224 principal directions and coded at 2 bits each
(`CodecParams.token_code`, "pq" for token PQ M = 192), token pooling factor 4, MUVERA defaults. Training uses at most `train_docs`
documents and `max_train_tokens` token vectors. PQ needs at least 256 training vectors; a smaller
corpus (tests, demos) is padded with jittered copies of its own vectors -- codes stay exact
nearest centroids, only codebook quality suffers, and the summary says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from osneural.ingest.plan import CodecParams, IngestSummary, parse_token_code

from osneural.codecs import BinaryQuantizer, CodecBundle, MuveraFDE, ProductQuantizer, ResidualCodec


def _divisor_at_most(dim: int, m: int) -> int:
    """PQ needs M | dim; take the largest divisor of dim not above the requested M."""
    return max(d for d in range(1, min(m, dim) + 1) if dim % d == 0)


def _training_rows(x: np.ndarray, need: int, seed: int) -> tuple[np.ndarray, bool]:
    """`x` itself, or padded with jittered copies up to `need` rows when the sample is tiny."""
    if len(x) >= need:
        return x, False
    rng = np.random.default_rng(seed)
    reps = -(-need // len(x))
    tiled = np.tile(x, (reps, 1))[:need]
    scale = 0.01 * (float(x.std()) or 1.0)
    return (tiled + rng.normal(0.0, scale, tiled.shape)).astype(np.float32), True


def token_pq(dim: int, params: CodecParams) -> ProductQuantizer:
    """The unfitted token PQ of `dim`-wide tokens: `token_pq_m` sub-spaces (the largest divisor
    of `dim` not above it) with the params' k-means budget."""
    return ProductQuantizer(_divisor_at_most(dim, params.token_pq_m), seed=params.seed,
                            niter=params.token_pq_niter,
                            max_points_per_centroid=params.token_pq_points_per_centroid)


def token_codec(code: str, n_tokens: int, params: CodecParams) -> ProductQuantizer | ResidualCodec:
    """An unfitted token codec for a token code ("pq", or a bit code as `parse_token_code`
    reads it: "bin2p192", "res1s", ...) and a training sample of `n_tokens` tokens."""
    if code == "pq":
        return ProductQuantizer(1, seed=params.seed)  # M is set from the dimension by the caller
    parsed = parse_token_code(code)
    centroids = 0
    if parsed.kind == "res":
        colbert = 2 ** int(math.log2(16 * math.sqrt(max(n_tokens, 1))))
        centroids = max(1, min(params.token_centroids, colbert, n_tokens))
    return ResidualCodec(parsed.nbits, centroids, scale=parsed.scale, seed=params.seed,
                         dims=parsed.dims)


def train_codecs(
    reps: list[str],
    dense: np.ndarray | None,
    tokens: list[np.ndarray] | None,
    params: CodecParams,
    summary: IngestSummary | None = None,
) -> CodecBundle:
    """Fit every codec these representations use, deterministically (fixed seed)."""
    bundle = CodecBundle(params={"pool_factor": params.pool_factor, "mih_m": params.mih_m})
    padded: list[str] = []
    if dense is not None and ("binary" in reps or "pq" in reps):
        if len(dense) < 2:
            raise ValueError("codec training needs at least 2 documents")
        if "binary" in reps:
            bundle.binary = BinaryQuantizer(bits_per_dim=1, seed=params.seed).fit(dense)
            bundle.params["mih_n_bits"] = bundle.binary.n_bits
        if "pq" in reps:
            pq = ProductQuantizer(_divisor_at_most(dense.shape[1], params.dense_pq_m), seed=params.seed)
            rows, was_padded = _training_rows(dense, pq.ksub, params.seed)
            bundle.pq_dense = pq.fit(rows)
            if was_padded:
                padded.append(f"dense PQ ({len(dense)} vectors)")
    if tokens is not None and "multivector" in reps:
        flat = np.concatenate(tokens, axis=0)
        if len(flat) > params.max_train_tokens:
            rng = np.random.default_rng(params.seed)
            flat = flat[np.sort(rng.choice(len(flat), params.max_train_tokens, replace=False))]
        if params.token_code == "pq":
            pq = token_pq(flat.shape[1], params)
            rows, was_padded = _training_rows(flat, pq.ksub, params.seed + 1)
            bundle.pq_tokens = pq.fit(rows)
            if was_padded:
                padded.append(f"token PQ ({len(flat)} vectors)")
        else:
            bundle.res_tokens = token_codec(params.token_code, len(flat), params).fit(flat)
        bundle.fde = MuveraFDE(dim=flat.shape[1], seed=params.seed)
        if params.fde_dtype == "int8":
            bundle.fde.calibrate_int8(tokens)  # one scale from the training sample's FDEs
    if summary is not None:
        summary.padded_training += padded
    return bundle


def codec_meta(bundle: CodecBundle) -> dict[str, Any]:
    """Kinds and parameters of the codecs, for `_meta` (the trained arrays live in the store).

    The inference-free IDF table (one document frequency per vocabulary term, ~140 KB of JSON on
    SciFact) stays in the store too: `_meta` comes back with every mapping read, and each query's
    index check reads the mapping, so a table there cost 20+ ms per query on the node. `_meta`
    records only its size."""
    params = {k: v for k, v in bundle.params.items() if k != "idf"}
    idf = bundle.params.get("idf")
    if isinstance(idf, dict):
        params["idf_terms"] = len(idf.get("df") or {})
    meta: dict[str, Any] = {"params": params}
    if bundle.binary is not None:
        meta["binary"] = {"kind": "binary", "bits_per_dim": bundle.binary.bits_per_dim,
                          "n_bits": bundle.binary.n_bits, "itq": bundle.binary.itq}
    for slot in ("pq_dense", "pq_tokens"):
        pq = getattr(bundle, slot)
        if pq is not None:
            meta[slot] = {"kind": "pq", "M": pq.M, "nbits": pq.nbits, "dim": pq.dim}
    if bundle.res_tokens is not None:
        meta["res_tokens"] = bundle.res_tokens.describe()
    if bundle.fde is not None:
        f = bundle.fde
        meta["fde"] = {"kind": "muvera", "dim": f.dim, "k_sim": f.k_sim, "reps": f.reps,
                       "d_proj": f.d_proj, "final_dim": f.final_dim, "fde_dim": f.fde_dim}
    return meta
