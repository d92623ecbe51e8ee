"""Multi-index hashing: binary codes as keyword terms, so Hamming search runs on an inverted index.

A B-bit code is cut into `m` contiguous substrings. Each becomes a term `f"{i:02d}:{hex}"`: the
substring index, then the substring's value in lower-case hex, zero-padded to `ceil(width / 4)`
digits (the value reads the substring's bits most significant first, so it is the code's own bit
order, see `osneural.codecs.binary`).

Widths: when `m` does not divide B, the first `B % m` substrings are one bit longer than the rest
(widths differ by at most one bit, and none is ever empty). This is the balanced split of
Norouzi et al.; any split into `m` non-empty parts keeps the guarantee below.

Guarantee (pigeonhole): if two codes differ in at most `m * (r + 1) - 1` bits, some substring
differs in at most `r` bits, so the query expansion of radius `r` (every substring value within
Hamming distance `r` of the query's, at the same index) shares at least one term with the
document. The converse holds too: a shared term means some substring is within `r`. A code
farther away may still match (a recall bonus, never a guarantee); exact ranking is left to the
Hamming rescoring on `bin_code`.
"""

from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Any

import numpy as np

_HEX = np.array(list("0123456789abcdef"), dtype="<U1")
#: Expansion beyond this many terms per query is refused: it is OpenSearch's default
#: `index.max_terms_count` for one `terms` query, and such a query would be slow anyway.
MAX_QUERY_TERMS = 65536


def substring_widths(n_bits: int, m: int) -> list[int]:
    """Widths of the `m` substrings of an `n_bits` code (first `n_bits % m` one bit longer)."""
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    if n_bits < m:
        raise ValueError(f"cannot cut a {n_bits}-bit code into {m} non-empty substrings")
    base, extra = divmod(n_bits, m)
    return [base + 1 if i < extra else base for i in range(m)]


def _unpack(codes: Any, n_bits: int | None, name: str) -> tuple[np.ndarray, int]:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise ValueError(f"{name}: codes must be packed uint8 (np.packbits), got {codes.dtype}")
    if codes.ndim != 2:
        raise ValueError(f"{name}: expected packed codes [n, bytes], got shape {codes.shape}")
    total = codes.shape[1] * 8
    n_bits = total if n_bits is None else int(n_bits)
    if not total - 8 < n_bits <= total:
        raise ValueError(f"{name}: n_bits={n_bits} does not fit codes of {codes.shape[1]} bytes")
    return np.unpackbits(codes, axis=1)[:, :n_bits], n_bits


def _terms(bits: np.ndarray, index: int) -> list[str]:
    """Terms for one substring of many codes, built as a fixed-width unicode array (vectorised)."""
    n, width = bits.shape
    digits = (width + 3) // 4
    padded = np.zeros((n, digits * 4), dtype=np.uint8)
    padded[:, digits * 4 - width :] = bits
    nibbles = padded.reshape(n, digits, 4) @ np.array([8, 4, 2, 1], dtype=np.uint8)
    prefix = f"{index:02d}:"
    chars = np.empty((n, len(prefix) + digits), dtype="<U1")
    chars[:, : len(prefix)] = list(prefix)
    chars[:, len(prefix) :] = _HEX[nibbles]
    return chars.view(f"<U{chars.shape[1]}")[:, 0].tolist()


def code_tokens(codes: Any, m: int, n_bits: int | None = None) -> list[list[str]]:
    """One list of `m` terms per packed code (uint8 [n, bytes]).

    `n_bits` is the meaningful bit count (default: all bits of the packed bytes); pass
    `BinaryQuantizer.n_bits` so padding bits do not lengthen the last substrings.
    """
    bits, n_bits = _unpack(codes, n_bits, "code_tokens")
    widths = substring_widths(n_bits, m)
    columns = []
    start = 0
    for i, width in enumerate(widths):
        columns.append(_terms(bits[:, start : start + width], i))
        start += width
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def query_tokens(code: Any, m: int, radius: int = 0, n_bits: int | None = None) -> list[str]:
    """Terms of one packed code plus every substring value within Hamming `radius` of them.

    Radius 0 gives `m` terms; radius 1 gives `m + B` terms (each substring and its one-bit flips).
    Any code within Hamming distance `m * (radius + 1) - 1` shares at least one term.
    """
    code = np.asarray(code)
    if code.ndim != 1:
        raise ValueError(f"query_tokens: expected one packed code [bytes], got shape {code.shape}")
    if radius < 0:
        raise ValueError(f"query_tokens: radius must be >= 0, got {radius}")
    bits, n_bits = _unpack(code[None, :], n_bits, "query_tokens")
    widths = substring_widths(n_bits, m)
    count = sum(sum(comb(w, k) for k in range(min(radius, w) + 1)) for w in widths)
    if count > MAX_QUERY_TERMS:
        raise ValueError(
            f"query_tokens: radius {radius} over {m} substrings gives {count} terms "
            f"(limit {MAX_QUERY_TERMS}); use more substrings or a smaller radius"
        )
    terms: list[str] = []
    start = 0
    for i, width in enumerate(widths):
        sub = bits[0, start : start + width]
        variants = [sub]
        for k in range(1, min(radius, width) + 1):
            for flips in combinations(range(width), k):
                flipped = sub.copy()
                flipped[list(flips)] ^= 1
                variants.append(flipped)
        terms.extend(_terms(np.stack(variants), i))
        start += width
    return terms


def guaranteed_distance(m: int, radius: int) -> int:
    """Largest Hamming distance at which a match is guaranteed: `m * (radius + 1) - 1`."""
    return m * (radius + 1) - 1
