"""The query budget of one /v1/chat/completions request (a streamed answer through the whole pipeline: key, rate,
quota, guards, pool, persistence, settlement), counted statement by statement, not timed.

The pipeline's blocking stages run in worker threads, each on its own database connection, which
``django_assert_max_num_queries`` (bound to the test thread's connection) cannot see; ``every_query`` counts the
statements of every connection the process opens while it is active, with the same execute hook Django's own
query capture uses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db.backends.signals import connection_created

from inference_pool.models import Backend
from tests.api_harness import ApiKeys, make_api_keys, pool_backend, v1_stream_body  # noqa: F401
from tests.live_server import finishes_settled, live_portal  # noqa: F401  (fixture)

pytestmark = [pytest.mark.engine]

# A warm /v1 request (the key, the department, the policy, the prices and the model target already cached in the
# process): the quota's reservation (its early bound covers an answer without passages: no extension) and its
# settlement, the audit event; an output redaction adds its own audit event. A request's fresh PII vault is not read
# or deleted when nothing was masked into it. The budget is 6.
V1_QUERY_BUDGET = 6


class EveryQuery:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()
        self.active = False

    def hook(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.active:
            with self._lock:
                self.statements.append(sql)
        return execute(sql, params, many, context)


@pytest.fixture
def every_query() -> Iterator[EveryQuery]:
    capture = EveryQuery()

    def attach(sender: Any, connection: Any, **_: Any) -> None:
        if capture.hook not in connection.execute_wrappers:
            connection.execute_wrappers.append(capture.hook)

    connection_created.connect(attach, dispatch_uid="test-every-query")
    try:
        yield capture
    finally:
        connection_created.disconnect(dispatch_uid="test-every-query")


def test_one_v1_request_stays_within_its_query_budget(world, pool_backend: Backend, live_portal, every_query, settings):  # noqa: F811
    # the router re-reads the registry in the background every POOL_REFRESH_INTERVAL seconds, whatever the traffic:
    # not a cost of a request (this router is created by this test's server, after this setting)
    settings.POOL_REFRESH_INTERVAL = 3600
    keys: ApiKeys = make_api_keys(world)
    v1_stream_body(live_portal.url, keys["member"])  # warm: the caches, the router's snapshot, the key's last-use stamp
    finishes_settled()
    every_query.active = True
    body = v1_stream_body(live_portal.url, keys["member"])
    finishes_settled()  # persistence and settlement follow the [DONE]: they count too
    every_query.active = False
    assert body.endswith("data: [DONE]\n\n")
    usage = json.loads(body.split("\n\n")[-3].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] > 0
    statements = every_query.statements
    assert 0 < len(statements) <= V1_QUERY_BUDGET, "\n".join(s[:120] for s in statements)
    # the hot lookups come from the in-process caches; the quota's limits are read inside its one statement
    lookups = tuple(
        f'SELECT "{table}".'
        for table in (
            "tenants_apikey",
            "tenants_tenant",
            "guardrails_guardrailpolicy",
            "guardrails_piivault",
            "tenants_modelprice",
            "tenants_quota",
            "adapters_adapter",
        )
    )
    assert not [s for s in statements if s.startswith(lookups)]
