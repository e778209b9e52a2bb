"""One HTTP server of the local stand-in, served from a background thread (the API and the viewer).

``port=0`` asks the system for a free port (tests); :attr:`BackgroundHttpServer.port`
then says which one was chosen. Request threads are daemons, so a stuck client never
holds up ``stop()`` or the interpreter's exit.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BackgroundHttpServer:
    """A ThreadingHTTPServer on ``host:port`` with ``start()`` / ``stop()``; bound at construction.

    Raises OSError (address in use, permission) from the constructor, before any thread starts.
    """

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on (the one chosen when 0 was asked)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (waits for the serve loop, not for open requests) and close the socket."""
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
