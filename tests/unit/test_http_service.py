"""The shared server lifecycle of the local API and viewer: free port, serve, stop, port released."""

from __future__ import annotations

import socket
import urllib.request
from http.server import BaseHTTPRequestHandler

from local_cloud.http_service import BackgroundHttpServer


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_serves_on_the_port_it_picked_and_releases_it_on_stop() -> None:
    server = BackgroundHttpServer("127.0.0.1", 0, _Hello, name="test")
    assert server.port > 0
    server.start()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5) as reply:
        assert reply.read() == b"hello"
    server.stop()
    # The port is free again: a new server can bind it (what a restart after Ctrl-C needs).
    # SO_REUSEADDR as HTTPServer sets it: the closed connection may leave the port in TIME_WAIT.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))


def test_stop_without_start_returns_and_closes_the_socket() -> None:
    server = BackgroundHttpServer("127.0.0.1", 0, _Hello, name="test")
    server.stop()  # shutdown() on a server never started would wait for ever
    assert server.server.socket.fileno() == -1
