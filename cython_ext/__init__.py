"""Compiled rescoring kernels (MaxSim, PQ asymmetric distance, Hamming, top-k)."""

from osneural.cython_ext._kernels import hamming_distances

__all__ = ["hamming_distances"]
