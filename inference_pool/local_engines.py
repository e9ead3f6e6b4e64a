"""Managed local llama.cpp engines: start, supervise (restart with backoff) and stop ``llama-server`` processes.

The embedded default runs ``ENGINE_REPLICAS`` replicas with ``ENGINE_SLOTS`` parallel slots each on consecutive ports
from ``ENGINE_BASE_PORT``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    pass


@dataclass
class EngineSpec:
    name: str
    port: int
    model_path: str
    binary: str
    host: str = "127.0.0.1"
    slots: int = 4
    context: int = 8192
    loras: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            self.binary,
            "-m",
            self.model_path,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "-np",
            str(self.slots),
            "-c",
            str(self.context),
            "--metrics",
            "--no-webui",
            "-a",
            settings.LLAMA_MODEL_NAME,
        ]
        if self.loras:
            # One comma-separated --lora: a repeated --lora keeps only the last file on this llama.cpp.
            if any("," in path for path in self.loras):
                raise EngineStartError("LoRA adapter paths must not contain commas")
            cmd += ["--lora", ",".join(self.loras), "--lora-init-without-apply"]
        return cmd + self.extra_args


def local_engine_specs() -> list[EngineSpec]:
    return [
        EngineSpec(
            name=f"local-llamacpp-{i}",
            port=settings.ENGINE_BASE_PORT + i,
            host=settings.ENGINE_HOST,
            model_path=settings.LLAMA_MODEL_PATH,
            binary=settings.LLAMA_SERVER_BIN,
            slots=settings.ENGINE_SLOTS,
            context=settings.ENGINE_CONTEXT,
            log_path=Path(settings.VAR_DIR) / "logs" / f"llama-server-{i}.log",
        )
        for i in range(settings.ENGINE_REPLICAS)
    ]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_healthy(base_url: str, *, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EngineStartError(f"llama-server at {base_url} exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=1) as resp:  # noqa: S310 - local URL
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise EngineStartError(f"llama-server at {base_url} was not healthy after {timeout:.0f}s")


class ManagedEngine:
    """One supervised llama-server process; restarts it with exponential backoff when it dies."""

    def __init__(self, spec: EngineSpec, *, max_backoff: float = 30.0) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_prerequisites(self) -> None:
        if not Path(self.spec.binary).is_file():
            raise EngineStartError(f"llama-server is not built at {self.spec.binary}; run `make engine`")
        if not Path(self.spec.model_path).is_file():
            raise EngineStartError(
                f"the model file {self.spec.model_path} is missing; `make run` fetches it (PORTAL_MODEL="
                f"{getattr(settings, 'PORTAL_MODEL', 'smollm2')}), `make engine` the test suite's"
            )
        if port_in_use(self.spec.host, self.spec.port):
            raise EngineStartError(
                f"port {self.spec.port} is already in use; stop what runs there or set ENGINE_BASE_PORT"
            )

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        self.check_prerequisites()
        self._spawn()
        if wait:
            assert self.proc is not None
            wait_healthy(self.spec.base_url, timeout=timeout, proc=self.proc)

    def _spawn(self) -> None:
        if self.spec.log_path is None:
            self.proc = subprocess.Popen(
                self.spec.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
            )
            return
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.spec.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def supervise(self) -> None:
        """Start a background thread that restarts the process when it exits unexpectedly."""
        self._thread = threading.Thread(target=self._loop, name=f"supervise-{self.spec.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            proc = self.proc
            if proc is None or proc.poll() is None:
                self._stop.wait(0.5)
                continue
            logger.warning(
                "engine exited; restarting",
                extra={"engine": self.spec.name, "code": proc.returncode, "backoff_s": backoff},
            )
            if self._stop.wait(backoff):
                return
            try:
                self._spawn()
                wait_healthy(self.spec.base_url, timeout=60, proc=self.proc)
                self.restarts += 1
                backoff = 0.5
            except EngineStartError:
                backoff = min(backoff * 2, self.max_backoff)

    def kill(self) -> None:
        """Kill the process abruptly (tests use this to simulate a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._thread is not None:
            self._thread.join(2)
