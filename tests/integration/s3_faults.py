"""A TCP proxy in front of the S3 server that sees each HTTP request and can make the endpoint
go away: from request ``fail_after + 1`` on it resets the connection instead of forwarding,
for ``outage`` requests (None: for good), as a crashed or unreachable endpoint would."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class FaultyProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[str] = []  # "METHOD /path" of every forwarded request, in order
        self.cut: list[str] = []  # the requests reset instead
        self.fail_after: int | None = None
        self.outage: int | None = 0
        self._seen = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def go_away(self, after: int, outage: int | None) -> None:
        """After ``after`` more requests, reset the next ``outage`` ones (None: all)."""
        with self._lock:
            self.fail_after = self._seen + after
            self.outage = outage

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in list(self._open):
            _reset(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._open.update((client, upstream))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _allow(self, line: str) -> bool:
        with self._lock:
            self._seen += 1
            failing = self.fail_after is not None and self._seen > self.fail_after
            if failing and (self.outage is None or self.outage > 0):
                if self.outage is not None:
                    self.outage -= 1
                self.cut.append(line)
                return False
            self.requests.append(line)
            return True

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client -> server: parse request heads (Content-Length bodies), forward or reset."""
        buf = b""
        body_left = 0
        try:
            while True:
                data = client.recv(1 << 16)
                if not data:
                    break
                buf += data
                while buf:
                    if body_left:
                        chunk, buf = buf[:body_left], buf[body_left:]
                        upstream.sendall(chunk)
                        body_left -= len(chunk)
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, buf = buf[: end + 4], buf[end + 4 :]
                    lines = head.decode("latin-1").split("\r\n")
                    method, path = lines[0].split(" ")[:2]
                    if not self._allow(f"{method} {path}"):
                        _reset(client)
                        _reset(upstream)
                        return
                    upstream.sendall(head)
                    for header in lines[1:]:
                        name, _, value = header.partition(":")
                        if name.strip().lower() == "content-length":
                            body_left = int(value.strip())
        except OSError:
            pass
        _reset(client)
        _reset(upstream)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        _reset(src)
        _reset(dst)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees a connection reset, not a clean close."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
