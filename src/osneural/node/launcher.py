"""Start, watch and stop local OpenSearch nodes that osneural owns.

Each cluster lives in its own folder (`<cache>/clusters/<name>/`) holding one sub-folder per node
(config copy, data, logs, pid file) and `cluster.json` with its URL. Stop acts only on the pids
recorded there, after checking each still is an OpenSearch JVM, so it never kills a stranger even
when a pid was reused; stale pid files left by a SIGKILL are simply discarded at the next start.
Starting a cluster some of whose nodes still run starts only the missing ones, on their recorded
ports and data folders, so they rejoin with their shards (the cluster heals instead of refusing).

OpenSearch refuses to run as root, so under root each node runs as an unprivileged user
(`OSNEURAL_NODE_USER`, default `nobody`) that owns its node folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from osneural.node import plugins as node_plugins
from osneural.node.distribution import DEFAULT_VERSION, ensure_installed
from osneural.node.errors import NodeError
from osneural.node.java import find_java
from osneural.paths import cache_dir

DEFAULT_HTTP_PORT = 9200
DEFAULT_HEAP = "512m"
START_TIMEOUT_S = 240.0


def clusters_dir() -> Path:
    return cache_dir() / "clusters"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


#: the kernel's ephemeral range where /proc does not say (Linux's default)
DEFAULT_EPHEMERAL = (32768, 60999)
#: transport port = HTTP port + this offset
TRANSPORT_OFFSET = 100


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports. A port chosen in it can be taken
    by any outgoing connection between the check and the JVM's bind, so the launcher stays below."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def free_port_block(count: int, start: int = 19200) -> int:
    """First port p >= start such that p .. p+count-1 and their transport twins (+100) are free,
    all below the kernel's ephemeral range (wrapping around to 1024 when `start` is too high).

    A free port is only free at the time of the check: `LocalCluster(auto_ports=True)` picks
    another block when a node then fails to bind."""
    low = ephemeral_port_range()[0]
    limit = min(low, 65536) - count - TRANSPORT_OFFSET  # the highest base whose block stays below
    if limit <= 1024:
        limit = 65536 - count - TRANSPORT_OFFSET  # an odd range that leaves nothing below it
    start = start if 1024 <= start < limit else 1024 + (start % max(limit - 1024, 1))
    for base in [*range(start, limit), *range(1024, start)]:
        ports = [*range(base, base + count), *range(base + TRANSPORT_OFFSET, base + TRANSPORT_OFFSET + count)]
        if all(port_is_free(p) for p in ports):
            return base
    raise NodeError("no free loopback port block found for a local OpenSearch node")


def spread_port_start(base: int = 19200, span: int = 10000) -> int:
    """Where a process starts looking for a free block: `base` plus its pid modulo `span`, so
    processes starting clusters at the same time seldom check the same block."""
    return base + os.getpid() % span


class PortBindError(NodeError):
    """A node exited because its HTTP or transport port was taken after the launcher checked it."""


#: what OpenSearch writes when it cannot bind a port at startup
BIND_FAILURE_MARKERS = ("BindTransportException", "BindHttpException", "Address already in use")


def http_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _pid_alive_opensearch(pid: int) -> bool:
    """True if `pid` runs and is an OpenSearch JVM (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (not Linux): trust the pid file
    return b"org.opensearch.bootstrap.OpenSearch" in cmdline


def _service_user() -> tuple[int, int] | None:
    """(uid, gid) to run nodes as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("OSNEURAL_NODE_USER", "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise NodeError(
            f"running as root, OpenSearch must run as another user, but user {name!r} does not exist; "
            "set OSNEURAL_NODE_USER to an existing unprivileged user"
        ) from exc
    return entry.pw_uid, entry.pw_gid


def _world_traversable(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return False
    return True


@dataclass
class NodeSpec:
    index: int
    http_port: int
    transport_port: int
    folder: Path
    #: size of the console log when this node was last launched: what follows is this run's
    log_offset: int = 0

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid_file(self) -> Path:
        return self.folder / "opensearch.pid"


@dataclass
class LocalCluster:
    """A local cluster of `nodes` OpenSearch nodes on consecutive loopback ports."""

    name: str = "default"
    nodes: int = 1
    http_port: int = DEFAULT_HTTP_PORT
    heap: str = DEFAULT_HEAP
    version: str = DEFAULT_VERSION
    root: Path | None = None  # defaults to <cache>/clusters/<name>
    plugins: tuple[str, ...] = ()  # extra plugins (osneural.node.plugins), e.g. ("ml-commons",)
    #: the launcher chooses the ports (`http_port` is only where the search for a free block
    #: starts) and may choose again: a port taken between the check and the JVM's bind moves
    #: the whole block instead of failing the start. False: the ports are the user's, and a
    #: taken one is a clear error.
    auto_ports: bool = False
    #: blocks tried before giving up, when the launcher chooses the ports
    port_attempts: int = 5
    specs: list[NodeSpec] = field(init=False)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise NodeError("--nodes must be at least 1")
        self.root = Path(self.root) if self.root else clusters_dir() / self.name
        if self.auto_ports:
            self.http_port = free_port_block(self.nodes, start=self.http_port)
        self._layout()

    def _layout(self) -> None:
        assert self.root is not None
        self.specs = [
            NodeSpec(i, self.http_port + i, self.http_port + TRANSPORT_OFFSET + i, self.root / f"node-{i}")
            for i in range(self.nodes)
        ]

    @property
    def url(self) -> str:
        return self.specs[0].url

    # ---- state -------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str = "default") -> LocalCluster | None:
        """The cluster as recorded by its last start, or None if never started."""
        state = clusters_dir() / name / "cluster.json"
        if not state.is_file():
            return None
        data = json.loads(state.read_text())
        return cls(name=name, nodes=data["nodes"], http_port=data["http_port"], heap=data["heap"],
                   version=data["version"], root=Path(data["root"]),
                   plugins=tuple(data.get("plugins", ())))

    def _save(self) -> None:
        assert self.root is not None
        (self.root / "cluster.json").write_text(json.dumps({
            "nodes": self.nodes, "http_port": self.http_port, "heap": self.heap,
            "version": self.version, "root": str(self.root), "url": self.url,
            "plugins": list(self.plugins),
        }, indent=2))

    def running_pids(self) -> dict[str, int]:
        """Node name -> pid for the nodes whose recorded process is still alive."""
        alive: dict[str, int] = {}
        for spec in self.specs:
            try:
                pid = int(spec.pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if _pid_alive_opensearch(pid):
                alive[spec.name] = pid
            else:
                spec.pid_file.unlink(missing_ok=True)
        return alive

    def health(self, timeout: float = 3.0) -> dict | None:
        for spec in self.specs:
            try:
                return http_json(f"{spec.url}/_cluster/health", timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError):
                continue
        return None

    # ---- start -------------------------------------------------------------------------
    def node_states(self, timeout: float = 2.0) -> list[dict]:
        """One row per recorded node: name, url, pid, state ("running": its process lives and
        its HTTP port answers; "not answering": the process lives, HTTP does not (yet); "missing":
        no live process)."""
        pids = self.running_pids()
        rows = []
        for spec in self.specs:
            pid = pids.get(spec.name)
            state = "missing"
            if pid is not None:
                try:
                    http_json(f"{spec.url}/", timeout=timeout)
                    state = "running"
                except (urllib.error.URLError, OSError, ValueError):
                    state = "not answering"
            rows.append({"name": spec.name, "url": spec.url, "pid": pid, "state": state,
                         "transport_port": spec.transport_port})
        return rows

    def _check_layout(self, running: dict[str, int]) -> None:
        """Nodes of the recorded cluster still run: its layout cannot change under them."""
        assert self.root is not None
        state = self.root / "cluster.json"
        if not state.is_file():
            return
        data = json.loads(state.read_text())
        if (data.get("nodes"), data.get("http_port")) != (self.nodes, self.http_port):
            ports = f"{data.get('http_port')}..{data.get('http_port', 0) + data.get('nodes', 1) - 1}"
            raise NodeError(
                f"cluster {self.name!r} runs {data.get('nodes')} node(s) on HTTP ports {ports} "
                f"(pids {sorted(running.values())}); `start` without --nodes/--port brings its "
                "missing nodes back, `osneural opensearch stop` first changes its layout"
            )

    def start(self, wait: bool = True, log=print) -> str:
        """Start every node that is not running (all of them for a new or stopped cluster).

        With `auto_ports`, a block the launcher chose that turns out taken (at the check, or when a
        node exits with a bind failure) is replaced by another free block and every node starts
        again, up to `port_attempts` blocks; nodes of a cluster that already runs keep their ports."""
        running = self.running_pids()
        if running:
            self._check_layout(running)
        missing = [spec for spec in self.specs if spec.name not in running]
        if not missing:
            raise NodeError(
                f"every node of cluster {self.name!r} is already running "
                f"({', '.join(s.url for s in self.specs)}; pids {sorted(running.values())}); "
                "run `osneural opensearch stop` first to restart it"
            )
        movable = self.auto_ports and not running
        # data folders this start creates; a failed attempt's are wiped before the next block
        new_data = [spec.folder / "data" for spec in self.specs
                    if not (spec.folder / "data").exists() or not any((spec.folder / "data").iterdir())]
        self._check_ports(missing, movable, log)
        java_home, java_major = find_java()
        user = _service_user()
        if user and not _world_traversable(java_home):
            raise NodeError(f"Java at {java_home} is not readable by the unprivileged node user; "
                            "set OPENSEARCH_JAVA_HOME to a JDK outside private folders")
        t0 = time.monotonic()
        home = ensure_installed(self.version, java_home)
        home = node_plugins.prepare_home(home, self.version, self.plugins, java_home, log=log)
        log(f"OpenSearch {self.version} ready in {home} ({time.monotonic() - t0:.1f}s), Java {java_major}")
        assert self.root is not None
        self.root.mkdir(parents=True, exist_ok=True)
        if user:
            for path in (home, self.root):
                if not _world_traversable(path):
                    raise NodeError(f"{path} is not readable by the unprivileged node user; set "
                                    "OSNEURAL_CACHE to a folder outside private home folders")
        if running:
            log(f"starting missing node(s) {', '.join(f'{s.name} ({s.url})' for s in missing)}; "
                f"{len(running)} already running")
        attempt = 1
        while True:
            self._save()
            procs = [self._launch(spec, home, java_home, user) for spec in missing]
            if not wait:
                return self.url
            try:
                self._wait_healthy(procs, missing, healing=bool(running))
                return self.url
            except PortBindError as exc:
                if not movable or attempt >= self.port_attempts:
                    raise
                attempt += 1
                for data in new_data:
                    shutil.rmtree(data, ignore_errors=True)
                self._move(log, f"{exc}")
                missing = list(self.specs)
                self._check_ports(missing, movable, log)

    def _check_ports(self, specs: list[NodeSpec], movable: bool, log) -> None:
        """Every port of `specs` is free now: a taken port the user named is an error; a block the
        launcher chose moves to the next free one."""
        for _ in range(max(self.port_attempts, 1)):
            taken = [(spec, port) for spec in specs for port in (spec.http_port, spec.transport_port)
                     if not port_is_free(port)]
            if not taken:
                return
            spec, port = taken[0]
            if not movable:
                raise NodeError(
                    f"port {port} on 127.0.0.1 ({spec.name}) is already in use by another "
                    "process; stop it or choose another base port with --port"
                )
            self._move(log, f"port {port} ({spec.name}) is in use")
            specs[:] = list(self.specs)
        raise NodeError(f"no free port block for cluster {self.name!r} after {self.port_attempts} tries")

    def _move(self, log, reason: str) -> None:
        """Give the cluster the next free block of ports after its current one."""
        old = self.http_port
        self.http_port = free_port_block(self.nodes, start=self.http_port + self.nodes)
        self._layout()
        log(f"{reason}; moving cluster {self.name!r} from HTTP port {old} to {self.http_port}")

    def _write_config(self, spec: NodeSpec, home: Path) -> Path:
        conf = spec.folder / "config"
        if conf.exists():
            shutil.rmtree(conf)
        shutil.copytree(home / "config", conf)
        for sub in ("data", "logs"):
            (spec.folder / sub).mkdir(parents=True, exist_ok=True)
        settings = {
            "cluster.name": f"osneural-{self.name}",
            "node.name": spec.name,
            "network.host": "127.0.0.1",
            "http.port": spec.http_port,
            "transport.port": spec.transport_port,
            "path.data": str(spec.folder / "data"),
            "path.logs": str(spec.folder / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": False,
        }
        lines = [f"{k}: {json.dumps(v)}" for k, v in settings.items()]
        if self.nodes == 1:
            lines.append('discovery.type: "single-node"')
        else:
            seeds = [f"127.0.0.1:{s.transport_port}" for s in self.specs]
            lines.append(f"discovery.seed_hosts: {json.dumps(seeds)}")
            lines.append(f"cluster.initial_cluster_manager_nodes: {json.dumps([s.name for s in self.specs])}")
        (conf / "opensearch.yml").write_text("\n".join(lines) + "\n")
        # jvm.options uses paths relative to the install; point them into the node folder.
        jvm = (conf / "jvm.options").read_text()
        jvm = jvm.replace("file=logs/gc.log", f"file={spec.folder / 'logs' / 'gc.log'}")
        jvm = jvm.replace("HeapDumpPath=data", f"HeapDumpPath={spec.folder / 'data'}")
        jvm = jvm.replace("ErrorFile=logs/", f"ErrorFile={spec.folder / 'logs'}/")
        jvm = "\n".join(line for line in jvm.splitlines() if not line.startswith(("-Xms", "-Xmx")))
        (conf / "jvm.options").write_text(jvm + f"\n-Xms{self.heap}\n-Xmx{self.heap}\n")
        return conf

    def _launch(self, spec: NodeSpec, home: Path, java_home: Path, user: tuple[int, int] | None):
        conf = self._write_config(spec, home)
        if self.plugins:  # ml-commons' DJL finds libtorch in <path.data>/ml_cache, never online
            node_plugins.provide_djl_offline(spec.folder / "data")
        if user:
            for dirpath, _dirs, files in os.walk(spec.folder):
                os.chown(dirpath, *user)
                for f in files:
                    os.chown(os.path.join(dirpath, f), *user)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSEARCH_", "ES_", "JAVA_"))}
        env.update(OPENSEARCH_JAVA_HOME=str(java_home), OPENSEARCH_PATH_CONF=str(conf))
        env.setdefault("OPENSEARCH_TMPDIR", tempfile.mkdtemp(prefix=f"osneural-{self.name}-{spec.name}-"))
        if user:
            os.chown(env["OPENSEARCH_TMPDIR"], *user)
        out = (spec.folder / "logs" / "console.log").open("ab")
        spec.log_offset = out.tell()
        kwargs = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
        proc = subprocess.Popen(
            [str(home / "bin" / "opensearch")], cwd=spec.folder, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs,
        )
        out.close()
        spec.pid_file.write_text(str(proc.pid))
        return proc

    def _wait_healthy(
        self, procs: list[subprocess.Popen], specs: list[NodeSpec] | None = None,
        healing: bool = False,
    ) -> None:
        """Wait until the cluster has all its nodes and is yellow or green. A failure stops the
        nodes just launched; when healing, the nodes that were already running keep running."""
        specs = self.specs if specs is None else specs
        deadline = time.monotonic() + START_TIMEOUT_S
        query = f"_cluster/health?wait_for_status=yellow&wait_for_nodes={self.nodes}&timeout=2s"
        while time.monotonic() < deadline:
            for spec, proc in zip(specs, procs, strict=True):
                if proc.poll() is not None:
                    self.stop(only=specs if healing else None)
                    _reap(procs)
                    log_file = spec.folder / "logs" / "console.log"
                    tail = _log_tail(log_file)
                    error = PortBindError if _bind_failed(log_file, spec.log_offset) else NodeError
                    raise error(f"OpenSearch {spec.name} exited with code {proc.returncode}: {tail}")
            health = None
            for spec in self.specs:
                try:
                    health = http_json(f"{spec.url}/{query}", 5)
                    break
                except (urllib.error.URLError, OSError, ValueError):
                    continue
            if health is None:
                time.sleep(1.0)
                continue
            if health.get("status") in ("yellow", "green") and health.get("number_of_nodes") == self.nodes:
                return
            time.sleep(1.0)
        self.stop(only=specs if healing else None)
        raise NodeError(f"OpenSearch did not become healthy within {START_TIMEOUT_S:.0f}s; see {self.root}")

    # ---- stop --------------------------------------------------------------------------
    def stop(self, timeout: float = 60.0, only: list[NodeSpec] | None = None) -> list[int]:
        """Stop the nodes this cluster started (or just the nodes `only` names); returns the
        pids that were stopped."""
        names = None if only is None else {spec.name for spec in only}
        pids = [pid for name, pid in self.running_pids().items() if names is None or name in names]
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_pid_alive_opensearch(p) for p in pids):
            time.sleep(0.5)
        for pid in pids:
            if _pid_alive_opensearch(pid):
                _signal_group(pid, signal.SIGKILL)
        for spec in self.specs:
            if names is None or spec.name in names:
                spec.pid_file.unlink(missing_ok=True)
        return pids

    def destroy(self) -> None:
        """Stop and delete the cluster's folder (data included)."""
        self.stop()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(procs: list[subprocess.Popen]) -> None:
    """Collect the exit status of launched nodes that were stopped, so none stays a zombie."""
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _bind_failed(path: Path, offset: int = 0) -> bool:
    """The node's console log, from `offset` on, says it could not bind its HTTP or transport port."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in BIND_FAILURE_MARKERS)


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    interesting = [line for line in text if "ERROR" in line or "Exception" in line] or text
    return " | ".join(line.strip()[:300] for line in interesting[-lines:])
