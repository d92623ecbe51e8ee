#!/usr/bin/env bash
# Run the whole test suite. Integration tests start their own throw-away OpenSearch node (or use
# OSNEURAL_OPENSEARCH_URL); under CI=true a missing engine fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -p no:cacheprovider "$@"
