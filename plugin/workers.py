"""`osneural serve --workers N`: N processes answering on one port, a supervisor in front.

One `serve` process is bound by its GIL: request handling, JSON and fusion hold it while the
encoders and kernels use a second core, so on more cores the answer is more processes. This
module runs them without a load balancer of the user's own: the supervisor binds the port once
gives each of N worker processes (spawned, uvicorn's worker `Process`) its own socket bound to
the same port with `SO_REUSEPORT`, so the kernel spreads new connections evenly over the
workers by their address hash. One socket shared by all workers would not: an asyncio worker
woken for a new connection accepts every pending one in a batch, so eight clients connecting at
once could all land on the same worker and its GIL.

Each worker builds its own app from a picklable `AppFactory`: its own query encoders, index
caches, codec caches and OpenSearch clients. Nothing is shared between workers but the cluster,
which is what docs/DEPLOYMENT.md asks of a query process (osneural keeps no state of its own).

The group behaves as one service:
* every response names the worker that made it (`X-Osneural-Worker: <pid>`), and each worker
  answers `/_osneural/health` for the cluster it sees;
* the supervisor replaces a worker that dies or stops answering its health pings;
* each worker caps its glibc malloc arenas at two (`osneural.plugin.allocator`), so its
  resident memory levels off instead of creeping up under hours of traffic;
* SIGTERM (or SIGINT) to the supervisor stops the group gracefully: it passes SIGTERM to every
  worker, each stops accepting, finishes its in-flight requests (up to `graceful_timeout`
  seconds) and exits, and the supervisor exits when all have.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

#: response header naming the worker process that answered
WORKER_HEADER = "x-osneural-worker"
#: seconds a worker may take to answer the supervisor's ping before it is replaced: a worker
#: busy with 8 clients on 2 shared cores may answer late, and it is slow, not hung
HEALTHCHECK_TIMEOUT_S = 20

log = logging.getLogger("osneural.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per two cores, at least one: each worker keeps about two cores busy (request
    handling under the GIL, plus encoders and kernels that release it)."""
    return max(1, available_cores() // 2)


class WorkerHeader:
    """ASGI middleware adding `X-Osneural-Worker: <pid>` to every HTTP response, so a caller
    (and a test) can tell which process of the group answered."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (WORKER_HEADER.encode(), self.pid)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_pid)


@dataclass
class AppFactory:
    """Builds one worker's app from `create_app`'s keyword arguments.

    Picklable (a ClusterConfig, lists, a Limits dataclass), because spawned workers receive it
    through multiprocessing and call it themselves: every worker loads its own encoders and opens
    its own clients, which a forked copy of a loaded parent would share in unsafe ways
    (onnxruntime thread pools, open connections)."""

    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> WorkerHeader:
        from osneural.plugin.allocator import limit_arenas
        from osneural.plugin.server import create_app

        if not logging.getLogger().handlers:  # a spawned worker starts with no logging set up
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            # opensearch-py logs every upstream request at INFO: a line per stage, per query
            logging.getLogger("opensearch").setLevel(logging.WARNING)
        # before any request thread: a worker's memory otherwise creeps up for an hour
        # (osneural.plugin.allocator says what was measured)
        limit_arenas()
        return WorkerHeader(create_app(**self.kwargs))


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound (not yet listening) to host:port with SO_REUSEPORT. The worker that
    receives it listens on it; only then does the kernel send it connections, so a socket the
    supervisor still holds never swallows any."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, and TCP_NODELAY set here (accepted sockets inherit it): asyncio turns
    # Nagle's algorithm off only on sockets whose `proto` says TCP, and a socket made with
    # proto 0 kept it on, so a response's body waited for the client's delayed ACK of its
    # headers: 40 ms added to every answer of a multi-worker group.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """Starts `workers` worker processes, replaces any that dies or stops answering its ping,
    and on SIGTERM / SIGINT stops them all gracefully and returns."""

    def __init__(self, config: Any, host: str, port: int, workers: int) -> None:
        self.config = config
        self.host, self.port, self.workers = host, port, workers
        self.processes: list[Any] = []
        self.should_exit = threading.Event()
        self.signals: list[int] = []

    def _spawn(self) -> Any:
        from uvicorn.supervisors.multiprocess import Process

        sock = reuse_port_socket(self.host, self.port)
        try:
            process = Process(self.config, [sock])
            process.start()  # the child got its own copy of the socket
        finally:
            sock.close()
        log.info("worker %s started", process.pid)
        return process

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: (self.signals.append(signum), self.should_exit.set()))
        self.processes = [self._spawn() for _ in range(self.workers)]
        code = 0
        while not self.should_exit.wait(0.5):
            code = self._keep_alive()
        for process in self.processes:
            process.terminate()  # SIGTERM: the worker drains its in-flight requests, then exits
        for process in self.processes:
            process.join()
        log.info("stopped %d worker(s)%s", len(self.processes),
                 f" on signal {self.signals[0]}" if self.signals else "")
        return code

    def _keep_alive(self) -> int:
        from uvicorn.config import STARTUP_FAILURE

        for i, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return 0
            if process.is_alive(timeout=HEALTHCHECK_TIMEOUT_S):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # would fail the same way again
                log.error("worker %s failed to start; stopping the group", process.pid)
                self.should_exit.set()
                return 1
            log.warning("worker %s died (exit %s); starting another", process.pid, process.exitcode)
            self.processes[i] = self._spawn()
        return 0


def run_group(factory: AppFactory, *, host: str, port: int, workers: int,
              graceful_timeout: float = 30.0) -> int:
    """Serve `factory`'s app on host:port with `workers` processes; returns when stopped.

    One worker runs in this process (no supervisor). Several: this process supervises them, each
    listening on its own SO_REUSEPORT socket of the same port."""
    import uvicorn

    if workers < 1:
        raise ValueError("workers must be at least 1")
    if workers == 1:
        app = factory()
        uvicorn.run(app, host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=int(graceful_timeout))
        return 0
    factory()  # build one app here first: a bad configuration fails now, not in N workers
    reuse_port_socket(host, port).close()  # a port taken by another program fails now too
    config = uvicorn.Config(factory, factory=True, host=host, port=port, workers=workers,
                            log_level="warning", timeout_graceful_shutdown=int(graceful_timeout))
    return Supervisor(config, host, port, workers).run()
