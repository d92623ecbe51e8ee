"""Where osneural keeps downloads, exported models and local nodes.

One function decides, so the launcher, the exporter and the CLI never disagree. Root gets
`/var/cache/osneural` rather than `/root/.cache`, because the local OpenSearch node must run as an
unprivileged user (OpenSearch refuses root) and that user cannot traverse `/root`.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The per-user cache root; `OSNEURAL_CACHE` overrides it."""
    env = os.environ.get("OSNEURAL_CACHE")
    if env:
        return Path(env).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/cache/osneural")
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "osneural"


def models_dir() -> Path:
    """Exported ONNX models live here, one folder each; `OSNEURAL_MODELS` overrides it."""
    env = os.environ.get("OSNEURAL_MODELS")
    return Path(env).expanduser() if env else cache_dir() / "models"


def opensearch_url() -> str:
    """The cluster every command talks to unless told otherwise: `OSNEURAL_OPENSEARCH_URL`, else
    the local node `osneural opensearch start` runs."""
    return os.environ.get("OSNEURAL_OPENSEARCH_URL", "http://127.0.0.1:9200").rstrip("/")
