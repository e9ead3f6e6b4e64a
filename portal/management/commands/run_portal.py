"""``make run``: the whole portal on its embedded defaults, supervised in one process tree.

Starts (in order) the embedded PostgreSQL (settings already did), migrations, the demo seed, the managed
llama-server engines, the ASGI web server, a Celery worker and Celery beat. Ctrl-C stops every child cleanly.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from core.logging import TextFormatter
from core.metrics import metrics_multiprocess_dir_reset
from inference_pool.local_engines import EngineStartError, ManagedEngine, local_engine_specs, port_in_use
from portal.embedded import stop_server
from portal.management.commands.static_collect import static_collect_if_changed

WEB_START_TIMEOUT_S = 90


class Command(BaseCommand):
    help = "Run the portal with its embedded services (database, engine, web, worker, beat)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("PORTAL_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORTAL_PORT", "8000")))
        parser.add_argument("--no-engine", action="store_true", help="do not start llama-server")
        parser.add_argument("--worker-concurrency", type=int, default=2)

    def handle(self, *args: Any, **opts: Any) -> None:
        for handler in logging.getLogger().handlers:  # this terminal is read by people; the children log JSON
            handler.setFormatter(TextFormatter())
        var_dir = Path(settings.VAR_DIR)
        var_dir.mkdir(parents=True, exist_ok=True)
        (var_dir / "logs").mkdir(exist_ok=True)
        lock = open(var_dir / "portal.lock", "w")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandError(f"another portal is already running with the data directory {var_dir}") from None
        if port_in_use(opts["host"], opts["port"]):
            raise CommandError(f"port {opts['port']} is already in use; stop what runs there or set PORTAL_PORT")

        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.engines: list[ManagedEngine] = []
        self._stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._start(opts)
            self._wait()
        except KeyboardInterrupt:
            _ignore_stop_signals()  # before anything is said: a second Ctrl-C must not cut the clean-up short
            self.stdout.write("\nStopping…")
        except (EngineStartError, OSError) as exc:
            self._shutdown()
            raise CommandError(str(exc)) from None
        finally:
            self._shutdown()

    def _on_signal(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def _start(self, opts: dict[str, Any]) -> None:
        embedded = "PORTAL_EMBEDDED_DATABASE_URL" in os.environ
        self.stdout.write(
            "Database: " + (f"embedded PostgreSQL under {settings.VAR_DIR}" if embedded else "DATABASE_URL")
        )
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Migrations applied")
        call_command("seed_demo")
        connection.close()
        # the web process serves the collected (hashed, compressed) static files itself (WhiteNoise)
        self.stdout.write(
            "Static files "
            + ("collected" if static_collect_if_changed() else "up to date")
            + f" in {settings.STATIC_ROOT}"
        )

        env = os.environ.copy()
        # Prometheus multiprocess mode: web, worker children and beat write their samples here; /metrics merges them.
        metrics_dir = Path(settings.VAR_DIR) / "prometheus"
        metrics_multiprocess_dir_reset(metrics_dir)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env.setdefault("LOG_FORMAT", "json")  # children write JSON lines to var/logs/<name>.log
        if "DATABASE_URL" not in env:
            # children share the embedded server this process started (not a server of their own)
            env["DATABASE_URL"] = env["PORTAL_EMBEDDED_DATABASE_URL"]

        if not opts["no_engine"]:
            for spec in local_engine_specs():
                engine = ManagedEngine(spec)
                self.stdout.write(f"Engine: starting llama-server {spec.name} on {spec.base_url}")
                engine.start(timeout=120)
                engine.supervise()
                self.engines.append(engine)
            if _has_command("pool_sync_local"):
                call_command("pool_sync_local", verbosity=0)

        python = sys.executable
        celery = str(Path(python).with_name("celery"))
        self._spawn(
            "web",
            [
                python,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--host",
                opts["host"],
                "--port",
                str(opts["port"]),
                "--no-access-log",
                "--ws",
                "websockets-sansio",
            ],
            env,
        )
        self._spawn(
            "worker",
            [
                celery,
                "-A",
                "portal",
                "worker",
                "-l",
                "INFO",
                "--concurrency",
                str(opts["worker_concurrency"]),
                "-Q",
                "celery,ingest,agents",
                "-n",
                "worker@%h",
            ],
            env,
        )
        self._spawn(
            "beat",
            [celery, "-A", "portal", "beat", "-l", "INFO", "-s", str(Path(settings.VAR_DIR) / "celerybeat-schedule")],
            env,
        )
        # 90 s: on 2 busy cores the web process starts beside the engine loading a 1.1 GB model (30 s was missed
        # twice at load 5-7 with the engine already up)
        deadline = time.monotonic() + WEB_START_TIMEOUT_S
        while not port_in_use(opts["host"], opts["port"]):
            if time.monotonic() > deadline:
                raise OSError(f"the web server did not start within {WEB_START_TIMEOUT_S} s; see var/logs/web.log")
            self._check_children()
            time.sleep(0.2)
        self.stdout.write(self.style.SUCCESS(f"\nThe portal is running at http://{opts['host']}:{opts['port']}/"))
        self.stdout.write("Press Ctrl-C to stop every part.")

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = open(Path(settings.VAR_DIR) / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.children.append((name, proc))
        self.stdout.write(f"Started {name} (pid {proc.pid}, log var/logs/{name}.log)")

    def _check_children(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise OSError(f"{name} exited with code {proc.returncode}; see var/logs/{name}.log")

    def _wait(self) -> None:
        while True:
            self._check_children()
            time.sleep(0.5)

    def _shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        _ignore_stop_signals()
        for _name, proc in self.children:
            if proc.poll() is None:
                # the main process only: Celery's prefork pool must shut its own children down
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(proc.poll() is None for _n, proc in self.children):
            time.sleep(0.1)
        for name, proc in self.children:
            if proc.poll() is None:
                self.stdout.write(f"{name} did not stop in time; killing it")
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        for engine in self.engines:
            engine.stop()
        connection.close()

        stop_server()
        self.stdout.write("Stopped.")


def _ignore_stop_signals() -> None:
    """A second Ctrl-C (or a SIGTERM after it) must not abort the clean-up half way: that orphaned the engines and
    the embedded PostgreSQL, and the next start found their ports taken. Stuck children are killed instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _has_command(name: str) -> bool:
    return name in get_commands()
