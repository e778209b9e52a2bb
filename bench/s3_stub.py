"""A file-backed S3 stub whose ranged GET costs what the range costs.

moto server copies the whole object on every GET (a 16 KB range of a 158 MB
object costs ~130 ms there), so its wall times say nothing about S3. This stub
serves ``GET``/``HEAD`` (with ``Range``) from files, accepts ``PUT`` (objects and
``?tagging``), and models S3 as seen from Lambda: a fixed latency per request
(time to first byte) and a bandwidth cap per connection. It counts requests and
bytes served (``GET /__stats`` returns and resets them).

    python bench/s3_stub.py --root /tmp/s3root --port 9000 --latency-ms 20 --mbps 80
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 256 * 1024


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> dict[str, int]:
        with self.lock:
            old = dict(getattr(self, "values", {}))
            self.values = {"get": 0, "head": 0, "put": 0, "bytes_out": 0, "bytes_in": 0}
        return old

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                self.values[k] += v


def make_handler(
    root: Path, latency: float, bytes_per_second: float, stats: Stats
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body are separate writes: without this, Nagle + delayed ACK add 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: object) -> None:
            return

        def _path(self) -> Path | None:
            parts = unquote(urlsplit(self.path).path).lstrip("/")
            if not parts or ".." in parts.split("/"):
                return None
            return root / parts

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            time.sleep(latency)
            stats.add(head=1)
            path = self._path()
            if path is None or not path.is_file():
                self._send(404)
                return
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("ETag", f'"{size:x}"')
            self.send_header("Last-Modified", "Sun, 22 Nov 2026 00:00:00 GMT")
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            if self.path.startswith("/__stats"):
                self._send(200, json.dumps(stats.reset()).encode(), {"Content-Type": "application/json"})
                return
            time.sleep(latency)
            stats.add(get=1)
            path = self._path()
            if path is None or not path.is_file():
                self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", {"Content-Type": "application/xml"})
                return
            size = path.stat().st_size
            start, end, code = 0, size - 1, 200
            header = self.headers.get("Range")
            if header and header.startswith("bytes="):
                first, _, last = header[6:].partition("-")
                if first:
                    start, end = int(first), min(int(last) if last else size - 1, size - 1)
                else:
                    start, end = max(0, size - int(last)), size - 1
                code = 206
            length = max(0, end - start + 1)
            self.send_response(code)
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", f'"{size:x}"')
            self.send_header("Accept-Ranges", "bytes")
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            began = time.monotonic()
            sent = 0
            with open(path, "rb") as fh:
                fh.seek(start)
                while sent < length:
                    chunk = fh.read(min(CHUNK, length - sent))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    # Per-connection bandwidth cap: never ahead of bytes_per_second.
                    ahead = sent / bytes_per_second - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
            stats.add(bytes_out=sent)

        def do_PUT(self) -> None:
            time.sleep(latency)
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            stats.add(put=1, bytes_in=len(body))
            query = urlsplit(self.path).query
            path = self._path()
            if path is None:
                self._send(400)
                return
            if "tagging" not in query:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
            self._send(200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})  # noqa: S324

    return Handler


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: 32 clients connecting at once lose SYNs and wait
    # for the kernel's 1 s retransmit (bimodal wall times). S3 accepts them all.
    request_queue_size = 256


def serve(root: Path, port: int, latency_ms: float, mbps: float) -> ThreadingHTTPServer:
    stats = Stats()
    server = _Server(("127.0.0.1", port), make_handler(root, latency_ms / 1000, mbps * 1e6, stats))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--mbps", type=float, default=80.0, help="bandwidth per connection, MB/s")
    args = parser.parse_args(argv)
    server = serve(args.root, args.port, args.latency_ms, args.mbps)
    print(f"s3 stub on http://127.0.0.1:{server.server_address[1]} serving {args.root}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
