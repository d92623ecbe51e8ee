"""A loopback TCP proxy in front of the test node that cuts chosen requests' connections.

Ingestion's retry paths are about real socket failures (a node restarting, a load balancer
dropping a connection), so tests put this between the client and the real node instead of
mocking the client: a request whose bytes match `cut` has its connection closed before it
reaches OpenSearch, exactly what a client sees when a node dies mid-request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlsplit


class CuttingProxy:
    """Forwards to `target_url`; `cut(first_chunk_of_request) -> bool` decides what to drop."""

    def __init__(self, target_url: str, cut: Callable[[bytes], bool] = lambda _data: False) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 9200)
        self.cut = cut
        self.cuts = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _handle(self, conn: socket.socket) -> None:
        try:
            up = socket.create_connection(self.target, timeout=30)
        except OSError:
            conn.close()
            return
        back = threading.Thread(target=self._pump, args=(up, conn, False), daemon=True)
        back.start()
        self._pump(conn, up, True)

    def _pump(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if inspect and self.cut(data):
                    with self._lock:
                        self.cuts += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closing.set()
        self._server.close()
        self._accept.join(timeout=2)


def cut_first(n: int, marker: bytes) -> Callable[[bytes], bool]:
    """A `cut` that drops the first `n` requests whose first chunk contains `marker`."""
    left = [n]

    def cut(data: bytes) -> bool:
        if marker in data and left[0] > 0:
            left[0] -= 1
            return True
        return False

    return cut
