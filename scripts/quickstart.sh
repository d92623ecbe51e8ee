#!/usr/bin/env bash
# The main job end to end on a fresh machine: set up, start a local OpenSearch node, ingest the
# embedded sample corpus (Python standard-library docstrings) with every representation, and search it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/osneural opensearch status >/dev/null 2>&1 || .venv/bin/osneural opensearch start
.venv/bin/osneural demo
