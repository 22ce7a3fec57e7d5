"""Helpers of the reliability tests: a TCP proxy that can cut or blackhole a database link."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Literal

Mode = Literal["pass", "blackhole", "cut"]


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a dead peer or a firewall would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    """One proxied connection: the client's socket and the one to the database."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client, self.upstream = client, upstream
        self.poisoned = False  # bytes were swallowed: the conversation cannot go on

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                _reset(sock)


class FaultProxy:
    """Forwards 127.0.0.1:<port> to a database; a test switches it between three modes.

    ``pass`` forwards; ``blackhole`` accepts connections and swallows every byte without an
    answer (a hung server or a silent network); ``cut`` resets every connection (a dead server).
    Connections that lost bytes in a blackhole are reset when the link is restored, as the
    server would have dropped them by then.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode: Mode = "pass"
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy").start()

    # ---- modes ---------------------------------------------------------------------------------
    def blackhole(self) -> None:
        """Swallow every byte from now on, on old and new connections."""
        self.mode = "blackhole"

    def cut(self) -> None:
        """Reset every connection and refuse new ones."""
        self.mode = "cut"
        self._drop(lambda pair: True)

    def restore(self) -> None:
        """Forward again; connections that lost bytes are reset."""
        self.mode = "pass"
        self._drop(lambda pair: pair.poisoned or pair.upstream is None)

    def close(self) -> None:
        """Stop listening and reset every connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self._drop(lambda pair: True)

    def _drop(self, which: object) -> None:
        with self._lock:
            gone = [p for p in self._pairs if which(p)]  # type: ignore[operator]
            self._pairs = [p for p in self._pairs if p not in gone]
        for pair in gone:
            pair.close()

    # ---- plumbing --------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "cut":
                _reset(client)
                continue
            upstream = None
            if self.mode == "pass":
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    _reset(client)
                    continue
            pair = _Pair(client, upstream)
            pair.poisoned = upstream is None
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            if upstream is not None:
                threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, from_client: bool) -> None:
        src = pair.client if from_client else pair.upstream
        assert src is not None
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            dst = pair.upstream if from_client else pair.client
            if self.mode != "pass" or dst is None:
                pair.poisoned = True  # swallowed
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        pair.close()
