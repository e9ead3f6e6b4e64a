"""Register the managed local llama-server engines as pool backends (``make run`` calls this after starting them)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from inference_pool.health import backend_probe_all
from inference_pool.services import backend_sync_local


class Command(BaseCommand):
    help = "Register the managed local llama-server engines (ENGINE_REPLICAS) as Backend rows and probe them once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-probe", action="store_true", help="do not probe the engines after registering")

    def handle(self, *args: Any, **opts: Any) -> None:
        rows = backend_sync_local()
        results = (
            {} if opts["no_probe"] else {r.backend_id: r for r in backend_probe_all(backend_ids=[b.pk for b in rows])}
        )
        for row in rows:
            result = results.get(row.pk)
            state = f"{result.health} ({result.detail})" if result else "not probed"
            self.stdout.write(f"{row.name}: {row.base_url} [{state}]")
