"""Helpers of the vector-store tests."""

from __future__ import annotations

import socket
import threading


def drop_milvus_collections(milvus_file: str, prefix: str) -> None:
    """Drop a test's collections from the session's milvus-lite file."""
    from pymilvus import MilvusClient

    client = MilvusClient(milvus_file)
    for collection in client.list_collections():
        if collection.startswith(prefix):
            client.drop_collection(collection)
    client.close()


class HangingProxy:
    """A loopback TCP proxy to a server that can be told to hang: it then keeps every
    connection open and swallows the bytes, like a server that stopped answering."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self.hang = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self._target)
            except OSError:
                return
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                if not self.hang.is_set():
                    dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._listener.close()
        for sock in self._sockets:
            sock.close()
