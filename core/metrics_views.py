"""``/metrics`` for Prometheus, and the small exporter a Celery worker serves in containers.

When ``METRICS_TOKEN`` is set, both answer only to ``Authorization: Bearer <METRICS_TOKEN>``, from every address,
loopback included (a tenant-steered request from inside the portal comes from loopback too). Without a token they
answer to client addresses inside ``METRICS_ALLOWED_NETWORKS`` (loopback by default). A presented but wrong token is
refused. The client address is the socket's peer (``REMOTE_ADDR``), never a forwarded header, so a proxy in front of
the portal does not widen access; the bundled nginx refuses ``/metrics`` outright.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.metrics import metrics_refresh_state, metrics_render

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks = []
    for entry in entries:
        if not entry.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"METRICS_ALLOWED_NETWORKS has {entry!r}, which is not a network (write e.g. 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def _address_allowed(remote_addr: str) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(settings.METRICS_ALLOWED_NETWORKS)))


def metrics_access_allowed(*, remote_addr: str, authorization: str) -> bool:
    """Whether a scrape may read the metrics: the right bearer token whenever one is configured; without one, no
    credentials from an allowed network."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, presented = authorization.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
    if authorization.strip():
        return False  # a token is presented but none is configured
    return _address_allowed(remote_addr)


def _refusal_text() -> tuple[int, str]:
    if settings.METRICS_TOKEN:
        return 401, "Metrics need 'Authorization: Bearer <METRICS_TOKEN>'.\n"
    return 403, "Metrics are served only to the networks in METRICS_ALLOWED_NETWORKS.\n"


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    remote_addr = request.META.get("REMOTE_ADDR", "")
    if not metrics_access_allowed(remote_addr=remote_addr, authorization=request.headers.get("Authorization", "")):
        logger.warning("metrics scrape refused", extra={"remote_addr": remote_addr})
        status, text = _refusal_text()
        response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    metrics_refresh_state()
    body, content_type = metrics_render()
    return HttpResponse(body, content_type=content_type)


# --- The worker's own exporter (containers: one per worker replica, scraped by Prometheus) ----------------
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def worker_metrics_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A WSGI app: ``/metrics`` (same protection as the portal's) and ``/healthz`` (this process answers)."""
    path = environ.get("PATH_INFO", "")
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    if path != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    if not metrics_access_allowed(
        remote_addr=environ.get("REMOTE_ADDR", ""), authorization=environ.get("HTTP_AUTHORIZATION", "")
    ):
        status, text = _refusal_text()
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
        start_response(f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}", headers)
        return [text.encode()]
    body, content_type = metrics_render()
    start_response("200 OK", [("Content-Type", content_type)])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def worker_metrics_serve(*, host: str, port: int) -> WSGIServer:
    """Serve :func:`worker_metrics_app` from a daemon thread; returns the server (``.shutdown()`` stops it)."""
    server = make_server(host, port, worker_metrics_app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    logger.info("worker metrics exporter listening", extra={"port": server.server_port})
    return server
