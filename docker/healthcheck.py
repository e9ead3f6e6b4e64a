#!/usr/bin/env python3
"""Health checks of the portal's containers (fast: standard library and redis-py, no Django).

``healthcheck.py [web|worker|beat]`` (default: guessed from the container's main process)
- web: ``/healthz`` answers, and its database check is ok (an engine being down is not the web's fault);
- worker: the worker's exporter answers on PORTAL_METRICS_PORT and the broker answers PING;
- beat: the main process is Celery beat and the broker answers PING.
Exit 0 when healthy, 1 with one line on stderr otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request


def main_process_role() -> str:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "web"
    if b"beat" in argv:
        return "beat"
    if b"worker" in argv:
        return "worker"
    return "web"


def check_web() -> None:
    port = os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz",
        headers={"Host": socket.gethostname(), "X-Forwarded-Proto": "https"},
    )
    try:
        with urllib.request.urlopen(request, timeout=8):  # noqa: S310
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise SystemExit(f"/healthz answered {exc.code}") from None
        body = json.loads(exc.read() or b"{}")
        if not body.get("checks", {}).get("database", {}).get("ok"):
            raise SystemExit(f"/healthz: database not ok: {body.get('checks', {}).get('database')}") from None


def check_broker() -> None:
    url = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL")
    if not url:
        host = os.environ.get("REDIS_HOST")
        if not host:
            raise SystemExit("no broker configured (CELERY_BROKER_URL, REDIS_URL or REDIS_HOST)")
        url = f"redis://{host}:{os.environ.get('REDIS_PORT', '6379')}/0"
    if not url.startswith(("redis://", "rediss://")):
        return  # other brokers: the worker's own liveness is what is checked
    import redis

    password_file = os.environ.get("REDIS_PASSWORD_FILE")
    password = open(password_file).read().strip() if password_file else None  # noqa: SIM115
    redis.Redis.from_url(url, password=password, socket_timeout=3, socket_connect_timeout=3).ping()


def check_worker() -> None:
    port = os.environ.get("PORTAL_METRICS_PORT", "9808")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        if response.status != 200:
            raise SystemExit(f"worker exporter answered {response.status}")
    check_broker()


def check_beat() -> None:
    if main_process_role() != "beat":
        raise SystemExit("the main process is not celery beat")
    check_broker()


def main() -> int:
    role = sys.argv[1] if len(sys.argv) > 1 else main_process_role()
    checks = {"web": check_web, "worker": check_worker, "beat": check_beat}
    if role not in checks:
        print(f"unknown role {role!r} (web, worker or beat)", file=sys.stderr)
        return 2
    try:
        checks[role]()
    except SystemExit as exc:
        print(f"{role} unhealthy: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # connection refused, timeouts, ...
        print(f"{role} unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
