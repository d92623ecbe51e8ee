"""Where the benchmarks find BEIR data: `OSNEURAL_BEIR_DIR`, else `shared/data/beir` beside the
checkout (where CI and every session put it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def beir_root() -> Path:
    env = os.environ.get("OSNEURAL_BEIR_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "beir"


def beir_dir(name: str) -> Path:
    return beir_root() / name
