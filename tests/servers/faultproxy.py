"""TEST-ONLY TCP proxy that cuts or freezes a real server for fault tests.

Clients connect to the proxy instead of the server. `down()` closes every
relayed connection and the listening socket (new connections are refused, as
with a stopped server); `hang()` keeps every connection open but moves no
byte in either direction and accepts new connections without answering (as
with a SIGSTOPped server); `restore()` resumes, on the same port. Loopback only.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tests.servers._process import free_port


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port()
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopped = False

    # --- control ----------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen()
        return self

    def down(self) -> None:
        """Like a stopped server: connections reset, new ones refused."""
        self._close_listener()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            _kill(s)

    def hang(self) -> None:
        """Like a frozen server: connections stay open, nothing moves."""
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._stopped = True
        self._flowing.set()
        self.down()

    # --- relaying ---------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _kill(listener)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._track(client)
        self._flowing.wait()  # a frozen server accepts, then never answers
        if self._stopped or client.fileno() < 0:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _kill(client)
            return
        upstream.settimeout(None)
        self._track(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.add(s)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        _kill(src)
        _kill(dst)
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)


def _kill(s: socket.socket) -> None:
    with suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


@contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_host, target_port).start()
    try:
        yield proxy
    finally:
        proxy.close()
