"""Real local peers for the SMS gateway tests: an HTTP server on 127.0.0.1 that records what it
receives, and config snippets."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes

    @property
    def form(self) -> dict:
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode()).items()}

    @property
    def json(self):
        return json.loads(self.body)

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


@dataclass
class Peer:
    """A local HTTP server: `status` and `delay` say how it answers; `requests` what it got."""

    status: int = 200
    delay: float = 0.0
    body: bytes = b'{"ok": true}'
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "Peer":
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                peer.requests.append(Received(
                    self.command, parsed.path,
                    {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()},
                    {k.lower(): v for k, v in self.headers.items()}, body))
                if peer.delay:
                    time.sleep(peer.delay)
                try:
                    self.send_response(peer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(peer.body)))
                    self.end_headers()
                    self.wfile.write(peer.body)
                except OSError:
                    pass

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
