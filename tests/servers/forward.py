"""A TCP forwarder from an address of the test's own bridge to a loopback server.

The test servers listen on 127.0.0.1 only; pods on the real node reach the host
at their bridge's address. `forwarding(node.ip, port)` listens on that address
(a free port) and relays each connection to 127.0.0.1:`port`, so pods use the
same PostgreSQL/Redis/Qdrant processes as the rest of the session and nothing
listens beyond the bridge the test created.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class _Relay(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        with socket.create_connection(("127.0.0.1", self.server.target_port), timeout=10) as up:
            up.settimeout(None)
            back = threading.Thread(target=_pump, args=(up, self.request), daemon=True)
            back.start()
            _pump(self.request, up)
            back.join()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, target_port: int) -> None:
        self.target_port = target_port
        super().__init__((host, 0), _Relay)


@contextmanager
def forwarding(host: str, target_port: int) -> Iterator[int]:
    """Listen on `host`:<free port> (yielded), relaying to 127.0.0.1:`target_port`."""
    server = _Server(host, target_port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
