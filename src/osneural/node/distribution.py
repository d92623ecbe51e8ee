"""Fetch and unpack a pinned OpenSearch with the k-NN plugin, once, into the cache.

Artifacts come from Maven Central through Maven itself (`mvn dependency:copy`), the way the issue
asks, so proxies and mirrors in `~/.m2/settings.xml` apply. Without `mvn` on the PATH we download
the same artifact URL directly. An unpacked install is marked ready only after the plugin installed,
so an interrupted first start is redone rather than half-used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from osneural.node.errors import NodeError
from osneural.paths import cache_dir

DEFAULT_VERSION = "3.6.0"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
READY_MARKER = ".osneural-ready"


@dataclass(frozen=True)
class Artifact:
    group: str
    artifact: str
    version: str
    packaging: str = "zip"

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}:{self.packaging}"

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.{self.packaging}"

    @property
    def url(self) -> str:
        return f"{MAVEN_CENTRAL}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.filename}"


def distribution_artifacts(version: str) -> tuple[Artifact, Artifact]:
    """The integ-test-zip distribution and the k-NN plugin built for exactly that version."""
    return (
        Artifact("org.opensearch.distribution.integ-test-zip", "opensearch", version),
        Artifact("org.opensearch.plugin", "opensearch-knn", f"{version}.0"),
    )


def downloads_dir() -> Path:
    return cache_dir() / "downloads"


def fetch(artifact: Artifact) -> Path:
    """Return the cached artifact, fetching it from Maven Central on first use."""
    target = downloads_dir() / artifact.filename
    if target.is_file() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    if shutil.which("mvn"):
        _fetch_with_maven(artifact, partial.parent)
        fetched = partial.parent / artifact.filename
        if not fetched.is_file():
            raise NodeError(f"Maven reported success but {fetched} is missing")
        return fetched
    _fetch_with_http(artifact, partial)
    partial.rename(target)
    return target


def _fetch_with_maven(artifact: Artifact, out_dir: Path) -> None:
    cmd = [
        "mvn", "-q", "-B", "dependency:copy",
        f"-Dartifact={artifact.coordinates}",
        f"-DoutputDirectory={out_dir}",
        "-Dmdep.overWriteReleases=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        hint = next((line for line in detail if "ERROR" in line), detail[-1] if detail else "")
        raise NodeError(
            f"could not fetch {artifact.coordinates} from Maven Central ({hint.strip()[:300]}); "
            "check the network route to repo1.maven.org or your ~/.m2/settings.xml mirror"
        )


def _fetch_with_http(artifact: Artifact, dest: Path) -> None:
    try:
        with urllib.request.urlopen(artifact.url, timeout=60) as resp, dest.open("wb") as fh:
            shutil.copyfileobj(resp, fh, length=1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise NodeError(
            f"could not download {artifact.url} ({exc}); check the network route to Maven Central"
        ) from exc


def _extract(zip_path: Path, dest: Path) -> None:
    """Unzip keeping the executable bits, which `zipfile` alone drops."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            out = zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(out, mode)


def install_dir(version: str) -> Path:
    return cache_dir() / "opensearch" / f"opensearch-{version}"


def ensure_installed(version: str, java_home: Path) -> Path:
    """Return an OpenSearch home with the k-NN plugin installed, preparing it on first use."""
    home = install_dir(version)
    if (home / READY_MARKER).is_file():
        return home
    dist, knn = distribution_artifacts(version)
    dist_zip, knn_zip = fetch(dist), fetch(knn)
    if home.exists():
        shutil.rmtree(home)
    staging = home.parent / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _extract(dist_zip, staging)
    (staging / f"opensearch-{version}").rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    env = dict(os.environ, OPENSEARCH_JAVA_HOME=str(java_home), JAVA_HOME=str(java_home))
    proc = subprocess.run(
        [str(home / "bin" / "opensearch-plugin"), "install", "--batch", knn_zip.resolve().as_uri()],
        capture_output=True, text=True, env=env,
    )
    if proc.returncode != 0:
        raise NodeError(f"installing the k-NN plugin failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    (home / READY_MARKER).write_text(f"opensearch {version} + opensearch-knn {knn.version}\n")
    return home
