"""Binary quantizer (bit order, thermometer levels, ITQ) and the multi-index-hashing guarantee."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osneural.codecs.binary import BinaryQuantizer, hamming_distances
from osneural.codecs.mih import (
    code_tokens,
    guaranteed_distance,
    query_tokens,
    substring_widths,
)


def _anisotropic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, dim)
    mixing, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (rng.standard_normal((n, dim)) * scales @ mixing + 0.5).astype(np.float32)


# -- BinaryQuantizer ------------------------------------------------------------------------------


def test_sign_bits_follow_documented_big_endian_order() -> None:
    x = _anisotropic(200, 13)
    codec = BinaryQuantizer().fit(x)
    codes = codec.encode(x)
    assert codes.shape == (200, 2) and codes.dtype == np.uint8
    mean = x.astype(np.float64).mean(axis=0)
    for row, packed in zip(x, codes, strict=True):
        # Reference: bit d is the sign of the centred value, bit 0 the MSB of byte 0.
        value = 0
        for d in range(13):
            value = (value << 1) | int(row[d] - mean[d] > 0)
        value <<= 3  # 13 bits padded with zeros to 16
        assert int.from_bytes(packed.tobytes(), "big") == value


def test_thermometer_hamming_equals_l1_distance_between_levels() -> None:
    x = _anisotropic(2000, 8, seed=1)
    codec = BinaryQuantizer(bits_per_dim=3).fit(x)
    assert codec.n_bits == 24 and codec.code_bytes == 3
    centred = x - x.astype(np.float64).mean(axis=0)
    levels = np.stack(
        [np.searchsorted(codec.thresholds[d], centred[:, d], side="left") for d in range(8)],
        axis=1,
    )
    # Quantile thresholds spread the training data evenly over the 4 levels.
    for d in range(8):
        counts = np.bincount(levels[:, d], minlength=4) / len(x)
        assert np.all(np.abs(counts - 0.25) < 0.02)
    codes = codec.encode(x[:50])
    for i in range(50):
        expected = np.abs(levels[:50] - levels[i]).sum(axis=1)
        assert np.array_equal(hamming_distances(codes[i], codes), expected)


def test_itq_rotation_is_orthogonal_and_lowers_quantization_loss() -> None:
    x = _anisotropic(3000, 32, seed=2)
    plain = BinaryQuantizer().fit(x)
    itq = BinaryQuantizer(itq=True, seed=3).fit(x)
    rotation = itq.rotation.astype(np.float64)
    assert np.allclose(rotation.T @ rotation, np.eye(32), atol=1e-5)

    def loss(codec: BinaryQuantizer) -> float:
        v = codec.transform(x)
        return float(((np.where(v > 0, 1.0, -1.0) - v) ** 2).sum())

    # ITQ starts from a seeded random rotation; its iterations must beat that start and no rotation.
    start = BinaryQuantizer(itq=True, seed=3, itq_iterations=1).fit(x)
    assert loss(itq) < 0.97 * loss(plain)
    assert loss(itq) < 0.97 * loss(start)
    assert np.array_equal(itq.encode(x), BinaryQuantizer(itq=True, seed=3).fit(x).encode(x))


def test_binary_round_trips_through_json() -> None:
    x = _anisotropic(500, 24, seed=4)
    for codec in (BinaryQuantizer(), BinaryQuantizer(2, itq=True)):
        codec.fit(x)
        data = json.loads(json.dumps(codec.to_dict()))
        assert data["kind"] == "binary" and data["version"] == 1
        assert np.array_equal(BinaryQuantizer.from_dict(data).encode(x), codec.encode(x))


def test_binary_rejects_bad_input() -> None:
    x = _anisotropic(100, 6)
    with pytest.raises(ValueError, match="not fitted"):
        BinaryQuantizer().encode(x)
    codec = BinaryQuantizer().fit(x)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite value nan at row 7, column 2"):
        codec.encode(bad)
    bad[7, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        BinaryQuantizer().fit(bad)
    with pytest.raises(ValueError, match="expected dimension 6, got 5"):
        codec.encode(x[:, :5])
    with pytest.raises(ValueError, match="at least 2 row"):
        BinaryQuantizer().fit(x[:1])
    with pytest.raises(ValueError, match="bits_per_dim"):
        BinaryQuantizer(bits_per_dim=0)
    with pytest.raises(ValueError, match="kind 'pq'"):
        BinaryQuantizer.from_dict({"kind": "pq", "version": 1})


# -- MIH tokens -----------------------------------------------------------------------------------


def test_token_format_is_index_and_zero_padded_hex() -> None:
    codes = np.array([[0xA4, 0xF1], [0x00, 0x0F]], dtype=np.uint8)
    assert code_tokens(codes, 1) == [["00:a4f1"], ["00:000f"]]
    assert code_tokens(codes, 2) == [["00:a4", "01:f1"], ["00:00", "01:0f"]]
    # 10 meaningful bits 1010010011 cut 4+3+3: 1010 | 010 | 011.
    ten = np.packbits(np.array([[1, 0, 1, 0, 0, 1, 0, 0, 1, 1]], dtype=np.uint8), axis=1)
    assert code_tokens(ten, 3, n_bits=10) == [["00:a", "01:2", "02:3"]]
    assert substring_widths(10, 3) == [4, 3, 3]
    assert substring_widths(384, 5) == [77, 77, 77, 77, 76]


def test_wide_substrings_keep_every_bit() -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, size=(20, 48), dtype=np.uint8)  # 384 bits, 5 x ~77-bit terms
    for code, terms in zip(codes, code_tokens(codes, 5), strict=True):
        bits = "".join(f"{b:08b}" for b in code)
        start = 0
        for i, (term, width) in enumerate(zip(terms, substring_widths(384, 5), strict=True)):
            index, value = term.split(":")
            assert int(index) == i and len(value) == (width + 3) // 4
            assert int(value, 16) == int(bits[start : start + width], 2)
            start += width


def _all_codes(n_bits: int) -> np.ndarray:
    values = np.arange(1 << n_bits, dtype=np.uint32)
    bits = (values[:, None] >> np.arange(n_bits - 1, -1, -1)) & 1
    return np.packbits(bits.astype(np.uint8), axis=1)


@pytest.mark.parametrize(("n_bits", "m"), [(10, 3), (12, 4), (11, 2), (9, 9)])
@pytest.mark.parametrize("radius", [0, 1])
def test_mih_guarantee_exhaustively(n_bits: int, m: int, radius: int) -> None:
    """Every code of n_bits bits against random queries: within m(r+1)-1 always shares a term."""
    everything = _all_codes(n_bits)
    doc_terms = [set(t) for t in code_tokens(everything, m, n_bits=n_bits)]
    widths = substring_widths(n_bits, m)
    bounds = np.cumsum([0, *widths])
    unpacked = np.unpackbits(everything, axis=1)[:, :n_bits]
    rng = np.random.default_rng(n_bits * 10 + m + radius)
    limit = guaranteed_distance(m, radius)
    for q in rng.choice(len(everything), size=6, replace=False):
        terms = set(query_tokens(everything[q], m, radius, n_bits=n_bits))
        assert len(terms) == m + (n_bits if radius else 0)
        shares = np.array([bool(terms & d) for d in doc_terms])
        diff = unpacked ^ unpacked[q]
        distance = diff.sum(axis=1)
        sub_distance = np.stack(
            [diff[:, bounds[i] : bounds[i + 1]].sum(axis=1) for i in range(m)], axis=1
        )
        assert shares[distance <= limit].all()
        # Shared term <=> some substring within the radius (no spurious or missing terms).
        assert np.array_equal(shares, (sub_distance <= radius).any(axis=1))
        if all(w > radius for w in widths):
            # The bound is tight: some code at distance m(r+1) shares nothing.
            assert not shares[distance == limit + 1].all()


def test_mih_rejects_bad_input() -> None:
    codes = np.zeros((3, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="packed uint8"):
        code_tokens(codes.astype(np.int64), 2)
    with pytest.raises(ValueError, match="non-empty substrings"):
        code_tokens(codes, 17)
    with pytest.raises(ValueError, match="n_bits=20"):
        code_tokens(codes, 2, n_bits=20)
    with pytest.raises(ValueError, match="one packed code"):
        query_tokens(codes, 2)
    with pytest.raises(ValueError, match="limit"):
        query_tokens(np.zeros(48, dtype=np.uint8), 2, radius=3)
