"""Point this process's Celery producer at another broker for one test, and back, without stale pools.

Celery caches a connection pool (``app.pool``, kombu's process-wide pool for the URL) and a producer pool
(``app.amqp.producer_pool``) built on the broker of the moment; both must be dropped on every switch, or a later test
acquires from a closed pool or a dead broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu.pools

from portal.celery import app as celery_app


def _drop_pools() -> None:
    # app.pool is kombu's process-wide pool for the broker URL: closing it alone would leave a closed pool in
    # kombu's registry for the next user of that URL; reset() closes and forgets every pool and producer pool.
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def celery_broker(url: str, transport_options: dict[str, Any] | None = None) -> Iterator[Any]:
    old = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)
    _drop_pools()
    celery_app.conf.broker_url = url
    if transport_options is not None:
        celery_app.conf.broker_transport_options = transport_options
    try:
        yield celery_app
    finally:
        _drop_pools()
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = old
