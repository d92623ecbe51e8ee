"""Every benchmark script still starts: its imports resolve and its arguments parse.

Benchmarks are not run in CI (they take minutes to hours), so a change to a library module they
import (a renamed helper, a removed method) would otherwise only show the next time someone runs
one; `--help` imports the module and builds its parser, and the names each script calls on
`osneural.connection` are checked to exist."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_help_runs(script: Path) -> None:
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower()


def test_bench_scripts_call_only_existing_cluster_config_methods() -> None:
    from osneural.connection import ClusterConfig

    missing = []
    for script in SCRIPTS:
        tree = ast.parse(script.read_text())
        for node in ast.walk(tree):
            # ClusterConfig.<name>(...) and ClusterConfig.from_...(...).<name>(...)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call):
                inner = node.value.func
                if (isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name)
                        and inner.value.id == "ClusterConfig" and not hasattr(ClusterConfig, node.attr)):
                    missing.append(f"{script.name}:{node.lineno} .{node.attr}")
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "ClusterConfig" and not hasattr(ClusterConfig, node.attr)):
                missing.append(f"{script.name}:{node.lineno} ClusterConfig.{node.attr}")
    assert missing == []
