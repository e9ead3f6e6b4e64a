"""Foundation: settings safety, migrations, pages, tenant switching, /healthz and the launcher's refusals."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.engine import free_port

ROOT = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "PORTAL_ENV": "production",
    "SECRET_KEY": "kq3-Zr9!vT0pW2sLx7#bN4mYc8uHf1eJd6gA5oRi-Qw2Es3Dt4",
    "ALLOWED_HOSTS": "portal.example.com",
    "DATABASE_URL": "postgres://u:p@db.example.com:5432/portal",
    "PII_VAULT_KEY": "k" * 40,
    "METRICS_TOKEN": "m" * 20,
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def _manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PORTAL_EPHEMERAL_DB"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "PII_VAULT_KEY", "METRICS_TOKEN"])
def test_production_refuses_insecure_defaults_naming_the_variable(missing):
    env = {k: v for k, v in PROD_ENV.items() if k != missing}
    result = _manage("check", env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert missing in lines[0]


def test_production_rejects_a_weak_secret_key():
    result = _manage("check", env={**PROD_ENV, "SECRET_KEY": "x" * 64})
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_production_rejects_malformed_values():
    result = _manage("check", env={**PROD_ENV, "DEBUG": "perhaps"})
    assert result.returncode != 0 and "DEBUG" in result.stderr
    result = _manage("check", env={**PROD_ENV, "DATABASE_URL": "nonsense://"})
    assert result.returncode != 0 and "DATABASE_URL" in result.stderr


def test_check_deploy_is_clean_in_production():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PROD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_every_model_change_has_a_migration():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_vector_extension_is_installed():
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT '[1,2,3]'::vector <=> '[1,2,4]'::vector")
        assert 0 < cur.fetchone()[0] < 0.01


def test_home_requires_login(client, db):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_login_page_and_login(client, world):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "alpha-member", "password": "pw-12345-secret"})
    assert response.status_code == 302
    page = client.get("/").content.decode()
    assert "Alpha" in page and "alpha-member" in page and "Chat" in page and "Knowledge" in page


def test_csrf_is_enforced_on_login(world):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/accounts/login/", {"username": "alpha-member", "password": "pw-12345-secret"})
    assert response.status_code == 403


def test_tenant_switch_only_to_own_departments(client, world):
    from tests.factories import MembershipFactory

    MembershipFactory(tenant=world.other_tenant, user=world.member, role="viewer")
    client.force_login(world.member)
    client.post("/tenants/switch/", {"tenant_id": world.other_tenant.pk, "next": "/"})
    assert client.session["tenant_id"] == world.other_tenant.pk

    client.force_login(world.viewer)  # viewer of Alpha only
    response = client.post("/tenants/switch/", {"tenant_id": world.other_tenant.pk})
    assert response.status_code == 404
    assert client.session.get("tenant_id") != world.other_tenant.pk


def test_tenant_switch_rejects_offsite_next(client, world):
    client.force_login(world.member)
    response = client.post("/tenants/switch/", {"tenant_id": world.tenant.pk, "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_healthz_reports_503_when_the_engine_is_down(client, db, settings):
    settings.ENGINE_BASE_PORT = free_port()  # nothing listens there
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["engine"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["pgvector"]
    assert body["checks"]["channel_layer"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


def test_healthz_reports_ok_with_a_running_engine(client, db, settings, llama_server):
    settings.ENGINE_BASE_PORT = llama_server.spec.port
    settings.ENGINE_REPLICAS = 1
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "ok"


def test_healthz_reports_a_dead_redis_broker(client, db, settings):
    from tests.celery_broker import celery_broker

    dead = f"redis://127.0.0.1:{free_port()}/0"
    with celery_broker(dead):  # entered first: it remembers the broker in use before the settings change
        settings.CELERY_BROKER_URL = dead
        body = client.get("/healthz").json()
    assert body["checks"]["broker"]["ok"] is False


def test_run_portal_refuses_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _manage(
            "run_portal",
            "--port",
            str(port),
            "--no-engine",
            env={"PORTAL_VAR_DIR": str(tmp_path), "PORTAL_EPHEMERAL_DB": "1"},
        )
    assert result.returncode != 0
    assert f"port {port} is already in use" in result.stderr
    assert not (tmp_path / "logs" / "web.log").exists()  # nothing half-started


def test_run_portal_refuses_a_locked_data_directory(tmp_path):
    import fcntl

    with open(tmp_path / "portal.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = _manage(
            "run_portal",
            "--port",
            str(free_port()),
            "--no-engine",
            env={"PORTAL_VAR_DIR": str(tmp_path), "PORTAL_EPHEMERAL_DB": "1"},
        )
    assert result.returncode != 0
    assert "another portal is already running" in result.stderr


def test_run_portal_stops_every_part_even_when_interrupted_twice(tmp_path):
    """Ctrl-C twice (an impatient user): the second signal arrives while the first one's clean-up runs and must
    not cut it short, or llama-server and the embedded PostgreSQL outlive the launcher and hold their ports."""
    import re
    import signal

    from inference_pool.local_engines import port_in_use

    engine_port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PORTAL_EPHEMERAL_DB"}}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_portal", "--port", str(free_port())],
        cwd=ROOT,
        env={**base, "PORTAL_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "ENGINE_BASE_PORT": str(engine_port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    children: list[int] = []
    output: list[str] = []
    postmaster = tmp_path / "postgres" / "postmaster.pid"
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            children += [int(pid) for pid in re.findall(r"Started \w+ \(pid (\d+)", line)]
            if "The portal is running" in line:
                break
        assert len(children) == 3, "".join(output)  # web, worker and beat
        assert postmaster.exists() and port_in_use("127.0.0.1", engine_port)
        proc.send_signal(signal.SIGINT)
        for line in proc.stdout:
            output.append(line)
            if "Stopping" in line:  # the clean-up has begun: interrupt it again
                proc.send_signal(signal.SIGINT)
                break
        output.append(proc.communicate(timeout=60)[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = "".join(output)
    assert "Stopped." in log and "Traceback" not in log, log[-2000:]  # the clean-up ran to its end
    assert not port_in_use("127.0.0.1", engine_port), "llama-server was stopped"
    assert not postmaster.exists(), "the embedded PostgreSQL was stopped"
    for pid in children:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"child {pid} outlived the launcher")
