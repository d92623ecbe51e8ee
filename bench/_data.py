"""Kept for scripts that still import `_data`; the helpers live in `osneural.eval.benchkit`."""

from osneural.eval.benchkit import (  # noqa: F401
    REPO,
    beir_dir,
    beir_root,
    classic_root,
    dataset_dir,
    sparse_dot_scores,
)
