"""Extra OpenSearch plugins for the local node: ml-commons (with job-scheduler) and neural-search.

`osneural opensearch start --plugins ml-commons,neural-search` gives a node on which osneural's
encoders can be registered in ml-commons and queried with native `neural` / `neural_sparse`
queries. The plugin zips are the ones built for the node's exact version, fetched from Maven
Central like the distribution itself, and installed into a *separate* OpenSearch home
(`opensearch-<version>-with-ml-commons-neural-search`, hard-linked from the plain one), so nodes
started without `--plugins` stay as small and fast to boot as before.

ml-commons runs ONNX models through DJL, and DJL initialises its PyTorch engine at deploy time,
downloading libtorch from publish.djl.ai when it is not in DJL's cache: offline that fails with
`UnknownHostException: publish.djl.ai`. The same libraries are on Maven Central
(`ai.djl.pytorch:pytorch-native-cpu` and `ai.djl.pytorch:pytorch-jni`); they are unpacked once into
`<cache>/djl/pytorch/<torch>-cpu-linux-x86_64/` in the layout DJL's `LibUtils` looks for (the JNI
library named `<djl version>-libdjl_torch.so`), and hard-linked into every node's
`<path.data>/ml_cache/pytorch/` (ml-commons points `DJL_CACHE_DIR` at `<path.data>/ml_cache`).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from osneural.node.distribution import (
    MAVEN_CENTRAL,
    Artifact,
    _fetch_with_maven,
    downloads_dir,
    fetch,
)
from osneural.node.errors import NodeError
from osneural.paths import cache_dir

#: plugin name on the command line -> Maven artifacts it needs, in install order
PLUGIN_ARTIFACTS: dict[str, tuple[str, ...]] = {
    "ml-commons": ("opensearch-job-scheduler", "opensearch-ml-plugin"),
    # neural-search queries call ml-commons for the model; without it they cannot encode
    "neural-search": ("opensearch-job-scheduler", "opensearch-ml-plugin", "neural-search"),
}
#: the name each artifact installs under (`opensearch-plugin list`)
INSTALLED_NAMES = {
    "opensearch-job-scheduler": "opensearch-job-scheduler",
    "opensearch-ml-plugin": "opensearch-ml",
    "neural-search": "opensearch-neural-search",
}
READY_MARKER = ".osneural-plugins-ready"

# DJL as bundled by ml-commons 3.x (api-0.31.1.jar, pytorch-engine.properties: pytorch 2.5.1).
# Maven Central has no pytorch-jni 2.5.1-0.31.1; the 0.32.0 build of the same libtorch is the
# nearest and is what ml-commons loads (it only initialises the engine for ONNX models).
DJL_VERSION = "0.31.1"
DJL_TORCH_VERSION = "2.5.1"
DJL_JNI_ARTIFACT_VERSION = "2.5.1-0.32.0"
DJL_FLAVOR = "cpu"


def parse_plugins(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """`"ml-commons,neural-search"` -> `("ml-commons", "neural-search")`, validated and sorted so
    the same set always maps to the same install folder."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    names = sorted({p.strip().lower() for p in items if p.strip()})
    unknown = [n for n in names if n not in PLUGIN_ARTIFACTS]
    if unknown:
        raise NodeError(f"--plugins: unknown plugin(s) {unknown}; known: {sorted(PLUGIN_ARTIFACTS)}")
    return tuple(names)


def plugin_artifacts(version: str, plugins: tuple[str, ...]) -> list[Artifact]:
    """The plugin zips (`<version>.0`, built for exactly that OpenSearch) in install order,
    dependencies first and each once."""
    ordered: list[str] = []
    for name in plugins:
        for artifact in PLUGIN_ARTIFACTS[name]:
            if artifact not in ordered:
                ordered.append(artifact)
    order = ["opensearch-job-scheduler", "opensearch-ml-plugin", "neural-search"]
    ordered.sort(key=order.index)
    return [Artifact("org.opensearch.plugin", a, f"{version}.0") for a in ordered]


def plugins_home(version: str, plugins: tuple[str, ...]) -> Path:
    # no '+' in the name: the plugin installer reads policy files through URLs, where '+'
    # decodes to a space (FileNotFoundException on plugin-security.policy)
    return cache_dir() / "opensearch" / f"opensearch-{version}-with-{'-'.join(plugins)}"


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a tree as hard links (no second copy of the install on disk); plain copies
    where the filesystem refuses links."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, symlinks=True, copy_function=link)


def ensure_plugins_home(base_home: Path, version: str, plugins: tuple[str, ...],
                        java_home: Path, log=print) -> Path:
    """An OpenSearch home with k-NN plus `plugins`, prepared once from the plain `base_home`."""
    home = plugins_home(version, plugins)
    if (home / READY_MARKER).is_file():
        return home
    artifacts = plugin_artifacts(version, plugins)
    zips = [fetch(a) for a in artifacts]
    staging = home.parent / f".staging-{home.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    _link_tree(base_home, staging)
    (staging / ".osneural-ready").unlink(missing_ok=True)
    env = dict(os.environ, OPENSEARCH_JAVA_HOME=str(java_home), JAVA_HOME=str(java_home))
    env.pop("OPENSEARCH_PATH_CONF", None)
    for artifact, zip_path in zip(artifacts, zips, strict=True):
        log(f"installing {artifact.artifact} {artifact.version}")
        proc = subprocess.run(
            [str(staging / "bin" / "opensearch-plugin"), "install", "--batch",
             zip_path.resolve().as_uri()],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise NodeError(f"installing {artifact.coordinates} failed: "
                            f"{(proc.stderr or proc.stdout).strip()[-400:]}")
    if home.exists():
        shutil.rmtree(home)
    staging.rename(home)
    (home / ".osneural-ready").write_text(f"opensearch {version} + opensearch-knn\n")
    (home / READY_MARKER).write_text(
        "\n".join(f"{a.artifact} {a.version}" for a in artifacts) + "\n")
    return home


def djl_artifacts() -> tuple[Artifact, Artifact]:
    classifier = _djl_classifier()
    return (
        Artifact("ai.djl.pytorch", "pytorch-native-cpu", DJL_TORCH_VERSION,
                 packaging=f"jar:{classifier}"),
        Artifact("ai.djl.pytorch", "pytorch-jni", DJL_JNI_ARTIFACT_VERSION, packaging="jar"),
    )


def _djl_classifier() -> str:
    machine = platform.machine().lower()
    if platform.system() != "Linux" or machine not in ("x86_64", "amd64"):
        raise NodeError(
            f"DJL's PyTorch libraries are provided offline for linux-x86_64 only, not "
            f"{platform.system()}-{machine}; ml-commons would download them from publish.djl.ai"
        )
    return "linux-x86_64"


def djl_folder_name() -> str:
    return f"{DJL_TORCH_VERSION}-{DJL_FLAVOR}-{_djl_classifier()}"


def ensure_djl_libraries() -> Path:
    """`<cache>/djl/pytorch/2.5.1-cpu-linux-x86_64/` holding libtorch and DJL's JNI library."""
    target = cache_dir() / "djl" / "pytorch" / djl_folder_name()
    jni_name = f"{DJL_VERSION}-libdjl_torch.so"
    if (target / "libtorch.so").is_file() and (target / jni_name).is_file():
        return target
    native, jni = djl_artifacts()
    native_jar, jni_jar = _fetch_jar(native), _fetch_jar(jni)
    staging = target.parent / f".staging-{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    prefix = f"pytorch/{DJL_FLAVOR}/{_djl_classifier()}/"
    with zipfile.ZipFile(native_jar) as zf:
        libs = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not any(n.endswith("/libtorch.so") for n in libs):
            raise NodeError(f"{native_jar} holds no {prefix}libtorch.so")
        for name in libs:
            with zf.open(name) as src, (staging / Path(name).name).open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    jni_entry = f"jnilib/{_djl_classifier()}/{DJL_FLAVOR}/libdjl_torch.so"
    with zipfile.ZipFile(jni_jar) as zf:
        try:
            with zf.open(jni_entry) as src, (staging / jni_name).open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        except KeyError as exc:
            raise NodeError(f"{jni_jar} holds no {jni_entry}") from exc
    for path in staging.iterdir():
        path.chmod(0o755)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _fetch_jar(artifact: Artifact) -> Path:
    """A jar, classified or not, into the download cache. `fetch` knows plain
    `<artifact>-<version>.<packaging>` files; a classified jar is named
    `<artifact>-<version>-<classifier>.jar` by Maven and on Maven Central."""
    if ":" not in artifact.packaging:
        return fetch(artifact)
    kind, classifier = artifact.packaging.split(":", 1)
    name = f"{artifact.artifact}-{artifact.version}-{classifier}.{kind}"
    target = downloads_dir() / name
    if target.is_file() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("mvn"):
        _fetch_with_maven(artifact, target.parent)
        if not target.is_file():
            raise NodeError(f"Maven reported success but {target} is missing")
        return target
    group = artifact.group.replace(".", "/")
    url = f"{MAVEN_CENTRAL}/{group}/{artifact.artifact}/{artifact.version}/{name}"
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, partial.open("wb") as fh:
            shutil.copyfileobj(resp, fh, length=1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise NodeError(f"could not download {url} ({exc}); check the route to Maven Central") from exc
    partial.rename(target)
    return target


def provide_djl_offline(node_data: Path) -> Path:
    """Hard-link the cached DJL libraries into `<node_data>/ml_cache/pytorch/<folder>/`, where
    ml-commons' DJL finds them before it would try publish.djl.ai; returns `.../pytorch`."""
    source = ensure_djl_libraries()
    root = Path(node_data) / "ml_cache" / "pytorch"
    # ml-commons sets PYTORCH_PRECXX11=true, so DJL looks in `2.5.1-cpu-precxx11-linux-x86_64`;
    # Maven Central has no precxx11 build of libtorch 2.5.1, and the cxx11 one (with its matching
    # cxx11 JNI) loads fine from that folder. The plain folder name is provided as well, for a
    # DJL that is not told precxx11.
    for name in (source.name, f"{DJL_TORCH_VERSION}-{DJL_FLAVOR}-precxx11-{_djl_classifier()}"):
        dest = root / name
        dest.mkdir(parents=True, exist_ok=True)
        for lib in source.iterdir():
            out = dest / lib.name
            if out.is_file() and out.stat().st_size == lib.stat().st_size:
                continue
            out.unlink(missing_ok=True)
            try:
                os.link(lib, out)
            except OSError:
                shutil.copy2(lib, out)
    return root


def prepare_home(base_home: Path, version: str, plugins: tuple[str, ...], java_home: Path,
                 log=print) -> Path:
    """The launcher's hook: the home to run for `plugins` (the base home when there are none),
    with DJL's libraries cached for `provide_djl_offline` when ml-commons is among them."""
    if not plugins:
        return base_home
    home = ensure_plugins_home(base_home, version, plugins, java_home, log=log)
    ensure_djl_libraries()
    return home
