# cython: boundscheck=False, wraparound=False, cdivision=True
"""Placeholder kernel so the build is exercised; the full kernels land with the rescoring issue."""

import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()


def hamming_distances(const unsigned char[::1] query, const unsigned char[:, ::1] codes):
    """Hamming distance from one packed code to each row of `codes`."""
    if codes.shape[1] != query.shape[0]:
        raise ValueError(f"code width mismatch: query has {query.shape[0]} bytes, codes have {codes.shape[1]}")
    cdef Py_ssize_t n = codes.shape[0], nb = codes.shape[1], i, j
    out = np.empty(n, dtype=np.int32)
    cdef int[::1] o = out
    cdef int acc
    for i in prange(n, nogil=True):
        acc = 0
        for j in range(nb):
            acc = acc + __builtin_popcount(query[j] ^ codes[i, j])
        o[i] = acc
    return out

cdef extern from *:
    int __builtin_popcount(unsigned int) nogil
