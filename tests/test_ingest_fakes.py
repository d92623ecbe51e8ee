"""Deterministic stand-in encoders for ingestion tests that exercise wiring, not model quality.

They honour the encoder contract (shapes, L2-normalised rows, manifest with sha256 and dim,
`last_stats.truncated_indices`), so the indexer cannot tell them from the ONNX encoders.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Stats:
    truncated: int = 0
    truncated_indices: list[int] = field(default_factory=list)


def _rng(text: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def _words(text: str) -> list[str]:
    return re.findall(r"[\w.]+", text.lower())


class _Fake:
    max_words = 60

    def __init__(self, kind: str, dim: int, sha: str = "0" * 64) -> None:
        self.manifest = {"name": f"fake-{kind}", "kind": kind, "sha256": sha, "dim": dim}
        self.dim = dim
        self.last_stats = Stats()

    def _track(self, texts: list[str]) -> None:
        idx = [i for i, t in enumerate(texts) if len(_words(t)) > self.max_words]
        self.last_stats = Stats(len(idx), idx)


class FakeDense(_Fake):
    def __init__(self, dim: int = 384, sha: str = "d" * 64) -> None:
        super().__init__("dense", dim, sha)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        self._track(texts)
        out = np.stack([_rng(t).standard_normal(self.dim) for t in texts]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class FakeSparse(_Fake):
    def __init__(self, sha: str = "5" * 64) -> None:
        super().__init__("sparse", 0, sha)

    def encode_documents(self, texts: list[str]) -> list[dict[str, float]]:
        self._track(texts)
        out = []
        for t in texts:
            weights: dict[str, float] = {}
            for w in _words(t)[: self.max_words]:
                weights[w] = weights.get(w, 0.0) + 0.5
            out.append(weights)
        return out


class FakeMulti(_Fake):
    def __init__(self, dim: int = 64, sha: str = "e" * 64) -> None:
        super().__init__("multivector", dim, sha)

    def encode_documents(self, texts: list[str]) -> list[np.ndarray]:
        self._track(texts)
        out = []
        for t in texts:
            words = _words(t)[: self.max_words] or ["[empty]"]
            rows = np.stack([_rng(w).standard_normal(self.dim) for w in words]).astype(np.float32)
            out.append(rows / np.linalg.norm(rows, axis=1, keepdims=True))
        return out


def fake_encoders(**sha: str) -> dict[str, _Fake]:
    return {
        "dense": FakeDense(sha=sha.get("dense", "d" * 64)),
        "sparse": FakeSparse(sha=sha.get("sparse", "5" * 64)),
        "multivector": FakeMulti(sha=sha.get("multivector", "e" * 64)),
    }
