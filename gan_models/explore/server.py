"""Serve an explorer bundle over HTTP on one address (127.0.0.1 unless asked otherwise)."""

from __future__ import annotations

import errno
import http.server
from pathlib import Path

from gan_models.errors import GanopsError


class BundleServer(http.server.ThreadingHTTPServer):
    """Serves the files of ``directory``; bound first, so a port in use fails before any work."""

    directory: str = "."


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
        ".json": "application/json",
    }

    def __init__(self, request, client_address, server: BundleServer):
        super().__init__(request, client_address, server, directory=server.directory)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per request would drown the command's own output


def make_server(
    host: str = "127.0.0.1", port: int = 8765, folder: str | Path = "."
) -> BundleServer:
    """A server bound to ``host:port`` over ``folder``; a port in use is a one-line GanopsError."""
    try:
        server = BundleServer((host, port), _Handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise GanopsError(
                f"--port {port}: {host}:{port} is already in use; choose another port"
            ) from None
        raise GanopsError(f"--host {host} --port {port}: cannot listen ({e.strerror})") from None
    server.directory = str(folder)
    return server
