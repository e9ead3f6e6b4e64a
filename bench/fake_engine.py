"""A ZERO-DELAY FAKE OpenAI-compatible engine, for benchmarks only (the test suite never fakes an engine).

``FakeZeroDelayEngine`` answers ``POST /v1/chat/completions`` with a stream of ``max_tokens`` tokens and no delay at
all, so that a benchmark measures what sits in front of the engine (the pool, the portal, another gateway), not the
engine. Any other request (a health probe, ``GET /v1/models``) gets a small JSON 200. Run it in its own process:
``FakeZeroDelayEngine().serve(sock)`` on a bound, listening socket.
"""

from __future__ import annotations

import asyncio
import json
import socket

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]


def _sse_event(obj: dict) -> bytes:
    data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)  # one HTTP chunk per event, as engines send them


def _render(n_tokens: int, prompt_tokens: int = 12) -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764325201, "model": "bench"}
    parts = [_sse_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    for i in range(n_tokens):
        delta = {"content": f" tok{i % 97}"}
        parts.append(_sse_event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
    parts.append(_sse_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens, "total_tokens": prompt_tokens + n_tokens}
    parts.append(_sse_event({**base, "choices": [], "usage": usage}))
    parts.append(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    return head + b"".join(parts)


def _render_json(n_tokens: int, prompt_tokens: int = 12) -> bytes:
    text = "".join(f" tok{i % 97}" for i in range(n_tokens))
    body = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1764325201,
            "model": "bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n_tokens,
                "total_tokens": prompt_tokens + n_tokens,
            },
        }
    ).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


_OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{"status":"ok"}'


class FakeZeroDelayEngine:
    """A fake, benchmark-only OpenAI-compatible engine: streams ``max_tokens`` tokens with no delay at all."""

    def __init__(self) -> None:
        self.cache: dict[tuple[int, bool], bytes] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                raw = await reader.readexactly(length) if length else b""
                if not head.startswith(b"POST") or b"/chat/completions" not in head.split(b"\r\n", 1)[0]:
                    writer.write(_OK)
                    await writer.drain()
                    continue
                body = json.loads(raw) if raw else {}
                n = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
                stream = bool(body.get("stream"))
                response = self.cache.get((n, stream))
                if response is None:
                    response = self.cache[(n, stream)] = _render(n) if stream else _render_json(n)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def serve(self, sock: socket.socket) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self.handle, sock=sock, backlog=1024)
            async with server:
                await server.serve_forever()

        (uvloop.run if uvloop else asyncio.run)(main())
