"""The embedded web server's limits over real sockets: when it is full, a
connection with a request left half-sent gives way to a newcomer."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from mailbridge.config import Listen, Settings
from mailbridge.httpd import GuardedWSGIServer, make_web_server

LIMIT = 8


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture
def server(settings: Settings) -> Iterator[GuardedWSGIServer]:
    small = dataclasses.replace(
        settings, http_listen=Listen("127.0.0.1", 0), http_max_connections=LIMIT
    )
    web = make_web_server(hello, small)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    yield web
    web.close()
    thread.join(timeout=10)


def get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return bytes(response.read())


def test_half_sent_requests_give_way_to_a_newcomer(server: GuardedWSGIServer) -> None:
    port = int(server.effective_port)
    partial = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(3 * LIMIT)]
    try:
        for sock in partial:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        time.sleep(1.5)  # silent long enough to give way
        assert get(port) == b"ok"
        assert get(port) == b"ok"
    finally:
        for sock in partial:
            sock.close()
