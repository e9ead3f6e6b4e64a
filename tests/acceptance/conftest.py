"""The acceptance suite's portal: started exactly as ``make run`` starts it, and a headless Chromium to drive it.

``manage.py run_portal`` runs in a child process on free ports with its own data directory: the embedded PostgreSQL
18 + pgvector, the managed llama-server, the uvicorn ASGI web process (static files included), a Celery worker and
Celery beat. Nothing is wrapped or stubbed: the browser sees what a person who typed ``make run`` sees. One portal
serves the whole session (the journeys share it); its logs are checked for uncaught exceptions at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.engine import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots (gitignored)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# what the pytest process exports for its own ephemeral database must not reach the launcher: it starts its own
_NOT_INHERITED = (
    "PORTAL_EPHEMERAL_DB",
    "DATABASE_URL",
    "PORTAL_EMBEDDED_DATABASE_URL",
    "PROMETHEUS_MULTIPROC_DIR",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "DJANGO_SETTINGS_MODULE",
    "LOG_FORMAT",
    "DEBUG",
    "PORTAL_ENV",
)
START_TIMEOUT_S = 420  # the first start builds nothing (make test prepares the engine) but migrates a new database


@dataclass
class Portal:
    url: str
    admin_username: str
    admin_password: str
    var_dir: Path
    output: Path
    proc: subprocess.Popen[bytes]
    state: dict[str, Any] = field(default_factory=dict)  # what one journey leaves for the next

    def logs(self) -> dict[str, str]:
        found = {"launcher": self.output.read_text(errors="replace")}
        for path in sorted((self.var_dir / "logs").glob("*.log")):
            found[path.stem] = path.read_text(errors="replace")
        return found


def launcher_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def uncaught_exceptions(logs: dict[str, str]) -> list[str]:
    """Tracebacks and ERROR/CRITICAL records in the launcher's terminal and its children's JSON logs."""
    found: list[str] = []
    for name, text in logs.items():
        for line in text.splitlines():
            record: Any = None
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
            if isinstance(record, dict):
                if record.get("level") in ("ERROR", "CRITICAL") or record.get("exc_info") or record.get("exception"):
                    found.append(f"{name}: {line[:600]}")
            elif line.startswith("Traceback (most recent call last)") or re.match(r"^\S+ (ERROR|CRITICAL) ", line):
                found.append(f"{name}: {line[:600]}")
    return found


# Package scope: the launched portal (engine, worker, beat) stops when the acceptance tests end, not at the end of the
# whole suite, where it would compete for the CPU with every test after it.
@pytest.fixture(scope="package")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    reuse = os.environ.get("ACCEPTANCE_PORTAL")  # while writing journeys: "URL VAR_DIR ADMIN_PASSWORD ENGINE_PORT"
    if reuse:
        url, var, password, engine_port = reuse.split()
        state = {"engine_port": engine_port, **json.loads(os.environ.get("ACCEPTANCE_STATE", "{}"))}
        yield Portal(url, "admin", password, Path(var), Path(var) / "logs" / "web.log", None, state)  # type: ignore[arg-type]
        return
    # not under pytest's basetemp: another pytest session on the machine prunes old basetemps, and with them this
    # running portal's database
    var_dir = Path(tempfile.mkdtemp(prefix="portal-acceptance-"))
    output = var_dir / "launcher.out"
    port, engine_port = free_port(), free_port()
    env = launcher_env(PORTAL_VAR_DIR=str(var_dir), PORTAL_PORT=str(port), ENGINE_BASE_PORT=str(engine_port))
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_portal"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    text = ""
    while "The portal is running" not in text:
        text = output.read_text(errors="replace")
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise AssertionError(f"run_portal did not start (exit {proc.poll()}):\n{text[-4000:]}")
        time.sleep(0.5)
    _warm_up(url, proc, deadline=time.monotonic() + START_TIMEOUT_S)
    found = re.search(r"username: (\S+)\s+password: (\S+)", text)
    assert found, f"run_portal did not print the demo admin's credentials:\n{text[-2000:]}"
    portal = Portal(
        url=url,
        admin_username=found.group(1),
        admin_password=found.group(2),
        var_dir=var_dir,
        output=output,
        proc=proc,
        state={"engine_port": str(engine_port)},
    )
    try:
        yield portal
    finally:
        _stop(proc)
    logs = portal.logs()
    shutil.rmtree(var_dir, ignore_errors=True)
    problems = uncaught_exceptions(logs)
    assert not problems, "uncaught exceptions in the portal's logs:\n" + "\n".join(problems[:20])


def _warm_up(url: str, proc: subprocess.Popen[bytes], *, deadline: float) -> None:
    """The web process imports its heavy parts on the first request (over a minute on a busy 2-core machine): one
    page load before the journeys, so that their 30-second waits measure the portal, not its start."""
    import httpx

    while True:
        try:
            if httpx.get(f"{url}/accounts/login/", timeout=300).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the portal's login page did not load")
        time.sleep(1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop it as a person or a service manager does (SIGTERM, handled like Ctrl-C: the launcher stops every part it
    started). SIGINT is not used: a launcher started from a non-interactive shell in the background ignores it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# Package scope, not session: Playwright's sync API runs an asyncio loop on the main thread while it is open, and
# every async test collected after this package would fail with "Runner.run() cannot be called from a running event
# loop" if it stayed open until the end of the session.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watch:
    """Everything a person would notice went wrong on a page: a page asset (or page) answering 4xx/5xx, a console
    error, an uncaught script exception. ``expect(pattern)`` allows a failure the journey provokes on purpose."""

    ASSET_TYPES = {"document", "stylesheet", "script", "image", "font", "media", "xhr", "fetch"}

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        page.on("pageerror", lambda exc: self._add(f"uncaught exception in the page: {exc}"))
        page.on("console", lambda m: m.type == "error" and self._add(f"console error: {m.text} ({m.location})"))
        page.on(
            "response",
            lambda r: (
                r.status >= 400
                and r.request.resource_type in self.ASSET_TYPES
                and self._add(f"{r.status} {r.request.resource_type} {r.request.method} {r.url}")
            ),
        )
        page.on("requestfailed", lambda r: self._add(f"request failed: {r.method} {r.url} ({r.failure})"))

    def _add(self, problem: str) -> None:
        if not any(p.search(problem) for p in self.allowed):
            self.problems.append(problem)

    def expect(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@dataclass
class Session:
    page: Any
    watch: Watch
    portal: Portal
    journey: str

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.portal.url + path)
        self.page.wait_for_load_state("networkidle")
        return response

    def shot(self, name: str) -> None:
        folder = ARTIFACTS / self.journey
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    def login(self, username: str, password: str) -> None:
        self.goto("/accounts/login/")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.portal.url + "/**")
        assert "/accounts/login/" not in self.page.url, f"{username} could not sign in"


@pytest.fixture
def session_factory(portal: Portal, browser: Any) -> Iterator[Any]:
    opened: list[tuple[Any, Session]] = []

    def open_session(journey: str, *, width: int = 1366, height: int = 900) -> Session:
        context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        session = Session(page=page, watch=Watch(page), portal=portal, journey=journey)
        opened.append((context, session))
        return session

    yield open_session
    for context, _session in opened:
        context.close()
    for _context, session in opened:
        session.watch.check()
