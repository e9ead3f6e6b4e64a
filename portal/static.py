"""Static files from the ASGI app itself: WhiteNoise, able to run in Django's async request path.

WhiteNoise's middleware is synchronous and answers with a file iterator; under ASGI Django would run it (and every
request after it) through a thread hop and warn on each file ("StreamingHttpResponse must consume synchronous
iterators"). This subclass is async-capable: it looks the file up in memory, reads it in a worker thread and hands
the body to the server as an async iterator. Hashed, compressed files come from ``collectstatic``
(``portal/management/commands/static_collect.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware

CHUNK = 256 * 1024


async def _file_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while True:
            data = await sync_to_async(handle.read, thread_sensitive=False)(CHUNK)
            if not data:
                return
            yield data
    finally:
        handle.close()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, settings: Any = None) -> None:
        if settings is None:
            from django.conf import settings as django_settings

            settings = django_settings
        super().__init__(get_response, settings)
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:  # development: the finders are scanned on each request (disk access)
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is None:
            get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
            return await get_response(request)
        return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)

    @staticmethod
    def serve(static_file: Any, request: HttpRequest) -> HttpResponseBase:
        response = WhiteNoiseMiddleware.serve(static_file, request)
        handle = getattr(response, "file_to_stream", None)
        # the ASGI server reads the body as an async iterator (a HEAD or a 304 has none)
        response.streaming_content = _file_chunks(handle) if handle is not None else _nothing()  # type: ignore[attr-defined]
        return response
