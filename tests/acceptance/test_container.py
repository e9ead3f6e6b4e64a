"""The container path: the image's entrypoint web command serves the static files too (no Docker engine needed).

``docker/entrypoint.sh web`` runs here as the image runs it (production settings, secrets from the environment,
``DEBUG`` off), on a free port, against the suite's migrated test database (its ``docker/migrate.py`` step runs and
finds nothing to apply); its own ``static_collect`` writes the hashed, compressed files, and the login page must link
them and the ASGI app serve them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings

from tests.acceptance.conftest import ROOT, launcher_env, uncaught_exceptions
from tests.engine import free_port

pytestmark = [pytest.mark.slow]


@pytest.fixture
def entrypoint_web(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    tmp_path = Path(tempfile.mkdtemp(prefix="portal-entrypoint-"))  # not under a basetemp another session may prune
    port = free_port()
    db_settings = settings.DATABASES["default"]
    env = launcher_env(
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        PORTAL_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        PII_VAULT_KEY=secrets.token_urlsafe(32),
        METRICS_TOKEN=secrets.token_urlsafe(16),
        ALLOWED_HOSTS="127.0.0.1",
        ALLOWED_HOSTS_ADD_SELF="false",
        SECURE_SSL_REDIRECT="false",
        # the suite's migrated test database: the login page reads the sign-in providers (an empty database answered
        # 500 there, as a real deployment that skipped its migrations would)
        DATABASE_URL=urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + db_settings["NAME"])),
        PORTAL_MIGRATE="true",
        PORTAL_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "staticfiles"),
        PORT=str(port),
        LOG_FORMAT="json",
    )
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(ROOT / "docker" / "entrypoint.sh"), "web", "--host", "127.0.0.1"],
            cwd=tmp_path,  # the entrypoint finds the application from its own location, as /app in the image
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400  # static_collect, then the first request imports the heavy parts
        while True:
            assert proc.poll() is None, "the entrypoint exited:\n" + log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the entrypoint's web server did not start:\n" + log.read_text()[-3000:]
            try:
                httpx.get(f"{url}/accounts/login/", timeout=300)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    shutil.rmtree(tmp_path, ignore_errors=True)
    problems = uncaught_exceptions({"entrypoint web": text})
    assert not problems, "\n".join(problems)


def test_the_entrypoint_web_command_serves_hashed_compressed_static_files(entrypoint_web):
    page = httpx.get(f"{entrypoint_web}/accounts/login/", timeout=30)
    assert page.status_code == 200
    stylesheet = re.search(r'href="(/static/css/portal\.[0-9a-f]{12}\.css)"', page.text)
    script = re.search(r'src="(/static/vendor/htmx\.min\.[0-9a-f]{12}\.js)"', page.text)
    assert stylesheet and script, "the page does not link the collected, content-hashed files"

    css = httpx.get(entrypoint_web + stylesheet.group(1), headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers.get("content-encoding") == "gzip"
    assert "immutable" in css.headers.get("cache-control", "")
    assert ".topbar" in css.text
    assert httpx.get(entrypoint_web + script.group(1), timeout=30).status_code == 200

    docs = httpx.get(f"{entrypoint_web}/api/docs/", timeout=30)
    assets = re.findall(r'(?:src|href)="(/static/drf_spectacular_sidecar/[^"]+)"', docs.text)
    assert assets and "cdn" not in docs.text.lower()
    for asset in assets:
        assert httpx.get(entrypoint_web + asset, timeout=30).status_code == 200, asset
