"""An HTTP proxy on 127.0.0.1 in front of an S3 server that can return 503."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlparse

HOST = "127.0.0.1"
UNAVAILABLE = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable"
    b"</Code><Message>injected outage</Message></Error>"
)
# Hop-by-hop headers and the length, which the proxy sets itself.
_SKIPPED_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class FailingStoreProxy:
    """Forwards requests to an S3 endpoint; while failing, returns 503 instead.

    Only requests whose path contains `fail_path` fail, so a test can break
    photo reads while model weights still load.
    """

    def __init__(self, target_url: str, fail_path: str) -> None:
        target = urlparse(target_url)
        self.target = (target.hostname or HOST, target.port or 80)
        self.fail_path = fail_path
        self.failing = threading.Event()
        self.failures = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        """HTTP endpoint of the running proxy."""
        if self._server is None:
            raise RuntimeError("the proxy is not running; call start() first")
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 in a daemon thread."""
        self._server = ThreadingHTTPServer((HOST, 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def should_fail(self, path: str) -> bool:
        """Return whether to return 503 to a request, counting the ones failed."""
        if not self.failing.is_set() or self.fail_path not in path:
            return False
        with self._lock:
            self.failures += 1
        return True

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def _forward(self) -> None:
        proxy: FailingStoreProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if proxy.should_fail(self.path):
            self._reply(503, [("Content-Type", "application/xml")], UNAVAILABLE)
            return

        upstream = http.client.HTTPConnection(*proxy.target, timeout=30)
        try:
            upstream.request(
                self.command, self.path, body=body, headers=dict(self.headers.items())
            )
            response = upstream.getresponse()
            data = response.read()
            headers = response.getheaders()
        finally:
            upstream.close()
        self._reply(response.status, headers, data)

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        length = str(len(data))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value
            elif name.lower() not in _SKIPPED_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
