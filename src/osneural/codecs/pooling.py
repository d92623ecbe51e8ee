"""Token pooling at index time: merge similar token vectors of a document, keep cluster means.

Like PyLate / Answer.AI token pooling: agglomerative clustering with Ward linkage on cosine
geometry, cut at `ceil(t / pool_factor)` clusters, and each cluster replaced by its mean,
L2-normalised. scipy is not a dependency, so the clustering is a small exact numpy Ward
implementation: tokens are L2-normalised first (squared Euclidean distance between unit vectors
is `2 * (1 - cosine)`, so Ward on them is Ward on cosine distance), and each step merges the pair
of clusters with the least Ward cost `n_a n_b / (n_a + n_b) * ||mu_a - mu_b||^2`. Each of the
`t - t'` merges costs O(t dim) plus a rescan of the rows whose cheapest partner merged away.

`protected` leading tokens (e.g. 1 for a [CLS] row) are copied through unpooled; the default is 0
because the multi-vector encoder's row layout is not ours to assume.
Output rows are ordered by the position of each cluster's first token, so pooled documents keep
roughly the order of the text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from osneural.codecs.serialization import as_matrix


def ward_clusters(points: np.ndarray, n_clusters: int) -> np.ndarray:
    """Cluster label per row (0..n_clusters-1, numbered by first member) by exact Ward merging.

    Each live cluster caches its cheapest partner, so a merge rescans only the rows whose partner
    changed instead of the whole cost matrix (O(t) per merge in the common case, not O(t^2)).
    """
    n = points.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be between 1 and {n}, got {n_clusters}")
    points = points.astype(np.float64)
    means = points.copy()
    msq = (points**2).sum(axis=1)
    sizes = np.ones(n)
    labels = np.arange(n)
    alive = np.ones(n, dtype=bool)
    cost = 0.5 * (msq[:, None] + msq[None, :] - 2.0 * points @ points.T)  # 1*1/2 * ||a-b||^2
    np.maximum(cost, 0.0, out=cost)
    np.fill_diagonal(cost, np.inf)
    partner = np.argmin(cost, axis=1)
    best = cost[np.arange(n), partner]
    for _ in range(n - n_clusters):
        a = int(np.argmin(best))
        b = int(partner[a])
        a, b = min(a, b), max(a, b)
        # Merge b into a.
        means[a] = (means[a] * sizes[a] + means[b] * sizes[b]) / (sizes[a] + sizes[b])
        msq[a] = means[a] @ means[a]
        sizes[a] += sizes[b]
        labels[labels == b] = a
        alive[b] = False
        cost[b, :] = np.inf
        cost[:, b] = np.inf
        best[b] = np.inf
        others = np.flatnonzero(alive)
        others = others[others != a]
        # ||mu_o - mu_a||^2 for every row by one matrix-vector product (no gathered copies).
        gap = np.maximum(msq + msq[a] - 2.0 * (means @ means[a]), 0.0)[others]
        new = sizes[others] * sizes[a] / (sizes[others] + sizes[a]) * gap
        cost[a, others] = new
        cost[others, a] = new
        if others.size:
            partner[a] = others[np.argmin(new)]
            best[a] = cost[a, partner[a]]
        else:
            best[a] = np.inf
        # Rows that pointed at a or b must rescan; others only compare with their new cost to a.
        stale = others[(partner[others] == a) | (partner[others] == b)]
        for row in stale:
            partner[row] = int(np.argmin(cost[row]))
            best[row] = cost[row, partner[row]]
        closer = others[new < best[others]]
        partner[closer] = a
        best[closer] = cost[closer, a]
    _, dense = np.unique(labels, return_inverse=True)  # roots are first members: order kept
    return dense


def pool_tokens(tokens: Any, pool_factor: float = 2, protected: int = 0) -> np.ndarray:
    """Pooled token vectors float32 [t', dim], t' = protected + ceil((t - protected) / factor).

    Rows are L2-normalised cluster means. `pool_factor` 1 returns the (normalised) input.
    """
    tokens = as_matrix(tokens, "pool_tokens")
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
    if not 0 <= protected <= tokens.shape[0]:
        raise ValueError(f"protected must be between 0 and {tokens.shape[0]}, got {protected}")
    norms = np.linalg.norm(tokens, axis=1, keepdims=True)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise ValueError(f"pool_tokens: token {row} is the zero vector (no direction to pool)")
    unit = tokens / norms
    head, rest = unit[:protected], unit[protected:]
    if rest.shape[0] == 0:
        return np.ascontiguousarray(head, dtype=np.float32)
    n_clusters = math.ceil(rest.shape[0] / pool_factor)
    labels = ward_clusters(rest, n_clusters)
    members = (labels[None, :] == np.arange(n_clusters)[:, None]).astype(np.float64)
    means = members @ rest.astype(np.float64)
    lengths = np.linalg.norm(means, axis=1)
    # Opposite tokens can cancel out; such a cluster keeps its first member's direction.
    cancelled = lengths < 1e-6
    if cancelled.any():
        first = np.array([np.flatnonzero(labels == c)[0] for c in np.flatnonzero(cancelled)])
        means[cancelled] = rest[first]
        lengths[cancelled] = 1.0
    means /= lengths[:, None]
    return np.ascontiguousarray(np.vstack([head, means]), dtype=np.float32)
