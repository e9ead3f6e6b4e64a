"""A tiny local HTTP server that replays recorded engine responses (for protocol-shape tests of vLLM and TGI,
which cannot run here). Each route answers with a status, a content type and a body; SSE bodies are sent as
chunked transfer encoding, one event per chunk, as the engines do. Requests are recorded for assertions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    sse: bool = False
    delay: float = 0.0  # seconds before the response starts (a slow engine)

    @classmethod
    def file(cls, name: str, *, status: int = 200) -> Route:
        path = FIXTURES / name
        sse = path.suffix == ".sse"
        ctype = (
            "text/event-stream"
            if sse
            else ("text/plain; version=0.0.4" if path.suffix == ".txt" else "application/json")
        )
        return cls(status=status, body=path.read_bytes(), content_type=ctype, sse=sse)


@dataclass
class Recorded:
    method: str
    path: str
    json: Any
    headers: dict[str, str]


@dataclass
class FixtureServer:
    routes: dict[tuple[str, str], Route]
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path: str) -> list[Any]:
        return [r.json for r in self.requests if r.path == path]


def _handler(server: FixtureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            server.requests.append(
                Recorded(
                    method, self.path, json.loads(raw) if raw else None, {k.lower(): v for k, v in self.headers.items()}
                )
            )
            route = server.routes.get((method, self.path))
            if route is None:
                route = Route(status=404, body=b'{"error":"no such route"}')
            if route.delay:
                time.sleep(route.delay)
            try:
                self._respond(route)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout under test)

        def _respond(self, route: Route) -> None:
            self.send_response(route.status)
            self.send_header("content-type", route.content_type)
            if route.sse:
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for event in route.body.split(b"\n\n"):
                    if event.strip():
                        chunk = event + b"\n\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("content-length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


@contextmanager
def fixture_server(routes: dict[tuple[str, str], Route]) -> Iterator[FixtureServer]:
    state = FixtureServer(routes=routes)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
