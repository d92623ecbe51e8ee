"""Binary codes from dense vectors: sign bits, optional ITQ rotation, optional thermometer bits.

Bit layout (the contract with MIH tokens, the `bin_code` field and the Hamming kernel):

* The unpacked code of a vector is `dim * bits_per_dim` bits, dimension-major: bits
  `d * bits_per_dim ... d * bits_per_dim + bits_per_dim - 1` belong to dimension `d`.
* With `bits_per_dim = b > 1`, dimension `d` has thresholds `t_1 < ... < t_b` (quantiles
  `j / (b + 1)` of the training sample) and bit `j` is `value > t_j`: a thermometer code, so the
  Hamming distance between two codes is the L1 distance between their quantization levels.
  With `b = 1` the single threshold is 0 after centering (the sign of the centred value).
* Bits are packed with `np.packbits` (big-endian within a byte: bit 0 of the code is the most
  significant bit of byte 0). When the bit count is not a multiple of 8, the last byte is padded
  with zero bits, identical for every code, so they never change a Hamming distance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osneural.codecs.serialization import (
    array_to_b64,
    as_matrix,
    b64_to_array,
    check_header,
    header,
    load_array,
)

KIND = "binary"


class BinaryQuantizer:
    """Learns a centre (and optionally a rotation and thresholds) on a sample, then binarises.

    ITQ (Gong & Lazebnik 2011) rotates the centred data so that the sign quantization error is
    small; it runs a fixed number of alternating steps from a seeded random orthogonal start, so
    the same sample always gives the same codes.
    """

    def __init__(
        self, bits_per_dim: int = 1, itq: bool = False, seed: int = 0, itq_iterations: int = 50
    ) -> None:
        if not 1 <= int(bits_per_dim) <= 8:
            raise ValueError(f"bits_per_dim must be between 1 and 8, got {bits_per_dim}")
        if itq_iterations < 1:
            raise ValueError(f"itq_iterations must be positive, got {itq_iterations}")
        self.bits_per_dim = int(bits_per_dim)
        self.itq = bool(itq)
        self.seed = int(seed)
        self.itq_iterations = int(itq_iterations)
        self.mean: np.ndarray | None = None
        self.rotation: np.ndarray | None = None
        self.thresholds: np.ndarray | None = None  # [dim, bits_per_dim]

    # -- training -------------------------------------------------------------------------------
    def fit(self, x: Any) -> BinaryQuantizer:
        x = as_matrix(x, "BinaryQuantizer.fit", min_rows=2)
        dim = x.shape[1]
        x64 = x.astype(np.float64)
        self.mean = x64.mean(axis=0).astype(np.float32)
        centred = x64 - self.mean
        self.rotation = _itq_rotation(centred, self.itq_iterations, self.seed) if self.itq else None
        projected = centred @ self.rotation if self.rotation is not None else centred
        if self.bits_per_dim == 1:
            self.thresholds = np.zeros((dim, 1), dtype=np.float32)
        else:
            levels = np.arange(1, self.bits_per_dim + 1) / (self.bits_per_dim + 1)
            self.thresholds = np.quantile(projected, levels, axis=0).T.astype(np.float32)
            # Ties (constant dimensions) would make two thresholds equal; that only wastes bits,
            # the thermometer stays monotone, so it is allowed.
        return self

    # -- encoding -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        self._require_fitted()
        return int(self.mean.shape[0])

    @property
    def n_bits(self) -> int:
        """Meaningful bits per code, before padding to whole bytes."""
        return self.dim * self.bits_per_dim

    @property
    def code_bytes(self) -> int:
        return (self.n_bits + 7) // 8

    def transform(self, x: Any) -> np.ndarray:
        """Centred (and rotated) float values that the thresholds apply to."""
        self._require_fitted()
        x = as_matrix(x, "BinaryQuantizer.encode", dim=self.dim, min_rows=0)
        projected = x - self.mean
        if self.rotation is not None:
            projected = projected @ self.rotation
        return projected

    def encode_bits(self, x: Any) -> np.ndarray:
        """Unpacked bits, uint8 0/1 [n, n_bits], in the documented dimension-major order."""
        projected = self.transform(x)
        bits = projected[:, :, None] > self.thresholds[None, :, :]
        return bits.reshape(projected.shape[0], -1).astype(np.uint8)

    def encode(self, x: Any) -> np.ndarray:
        """Packed codes, uint8 [n, ceil(n_bits / 8)], big-endian bit order (`np.packbits`)."""
        return np.packbits(self.encode_bits(x), axis=1)

    # -- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        data = header(KIND)
        data.update(
            bits_per_dim=self.bits_per_dim,
            itq=self.itq,
            seed=self.seed,
            itq_iterations=self.itq_iterations,
            bit_order="big",
            mean=array_to_b64(self.mean),
            thresholds=array_to_b64(self.thresholds),
            rotation=None if self.rotation is None else array_to_b64(self.rotation),
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinaryQuantizer:
        check_header(data, KIND)
        codec = cls(data["bits_per_dim"], data["itq"], data["seed"], data["itq_iterations"])
        codec.mean = b64_to_array(data["mean"]).astype(np.float32)
        dim = codec.mean.shape[0]
        codec.thresholds = load_array(
            data["thresholds"], (dim, codec.bits_per_dim), "thresholds", KIND)
        if data.get("rotation") is not None:
            codec.rotation = load_array(data["rotation"], (dim, dim), "rotation", KIND)
        return codec

    def _require_fitted(self) -> None:
        if self.mean is None:
            raise ValueError("BinaryQuantizer is not fitted: call fit(sample) first")


def _itq_rotation(centred: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    """Orthogonal R minimising ||sign(V R) - V R||_F by alternating codes and Procrustes."""
    dim = centred.shape[1]
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    for _ in range(iterations):
        codes = np.where(centred @ rotation >= 0, 1.0, -1.0)
        # Procrustes: maximise trace(B^T V R) over orthogonal R.
        u, _, vt = np.linalg.svd(centred.T @ codes)
        rotation = u @ vt
    return rotation.astype(np.float32)


def hamming_distances(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Numpy reference for packed-code Hamming distance: int32 [N]."""
    query = np.asarray(query, dtype=np.uint8)
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or query.shape != codes.shape[1:]:
        raise ValueError(f"query shape {query.shape} does not match codes shape {codes.shape}")
    return np.unpackbits(codes ^ query, axis=1).sum(axis=1, dtype=np.int32)
