from __future__ import annotations

import httpx

from inference_pool.local_engines import local_engine_specs


def engine_health(*, timeout: float = 2.0) -> dict[str, object]:
    """Probe every engine the portal knows; ``ok`` is true when at least one answers /health with 200."""
    urls = [spec.base_url for spec in local_engine_specs()]
    results: dict[str, str] = {}
    for url in urls:
        try:
            resp = httpx.get(f"{url}/health", timeout=timeout)
            results[url] = "ok" if resp.status_code == 200 else f"http {resp.status_code}"
        except httpx.HTTPError as exc:
            results[url] = f"down ({type(exc).__name__})"
    return {"ok": any(v == "ok" for v in results.values()), "backends": results}
