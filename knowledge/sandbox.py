"""Parse an untrusted upload in a child process under a CPU-time and memory limit.

A parser bug, a pathological regex or a decompression bomb then costs one short-lived child, never the worker:
the child is forked (no interpreter start-up, nothing to import), sets ``RLIMIT_CPU`` and ``RLIMIT_AS`` on itself,
parses, and sends the result back through a pipe. The parent waits at most a wall-clock deadline, kills the child
when it is passed, and turns every way the child can end into ``DocumentRejected`` with a reason a person
understands. ``os.fork`` is used directly (not multiprocessing) because Celery's pool processes are daemonic and may
not start multiprocessing children.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import signal
import time
from dataclasses import dataclass

from knowledge.parsing import DocumentRejected, ParsedDocument, parse_document

_TOO_SLOW = "Reading the file took more than {seconds:g} seconds of processing; it is too complex to index safely."
_TOO_BIG = "Reading the file needed more than {mb:,} MB of memory; it is too complex to index safely."
_CRASHED = "The file made the document reader fail; it may be damaged. Save it again (or as PDF) and upload again."


@dataclass(frozen=True)
class ParseLimits:
    cpu_seconds: float = 60.0
    memory_mb: int = 1024
    wall_seconds: float = 120.0


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(write_fd: int, data: bytes, filename: str, limits: ParseLimits) -> None:
    outcome: tuple[str, object]
    try:
        cpu = max(1, int(limits.cpu_seconds + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        # the address space already mapped (the worker's libraries, models) is inherited: the budget comes on top
        ceiling = _vm_size_bytes() + limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
        try:
            outcome = ("ok", parse_document(data=data, filename=filename))
        except DocumentRejected as rejected:
            outcome = ("rejected", rejected.message)
        except MemoryError:
            outcome = ("memory", "")
        except RecursionError:
            outcome = ("rejected", "The file is nested too deeply to read safely.")
        except Exception as exc:  # a parser bug on hostile input
            outcome = ("error", type(exc).__name__)
        payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(payload)
        while view:
            written = os.write(write_fd, view)
            view = view[written:]
    except MemoryError:
        with contextlib.suppress(Exception):  # nothing is left to report with
            os.write(write_fd, pickle.dumps(("memory", "")))
    finally:
        os._exit(0)


def parse_document_isolated(*, data: bytes, filename: str, limits: ParseLimits | None = None) -> ParsedDocument:
    """``parse_document`` in a limited child process; ``DocumentRejected`` for every way it can fail."""
    limits = limits or ParseLimits()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage cannot follow it)
        os.close(read_fd)
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        finally:
            _child(write_fd, data, filename, limits)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limits.wall_seconds
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if not ready:
                continue
            block = os.read(read_fd, 1 << 20)
            if not block:
                break
            chunks.append(block)
    finally:
        os.close(read_fd)
        if timed_out:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
    if timed_out:
        raise DocumentRejected(_TOO_SLOW.format(seconds=limits.wall_seconds))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            raise DocumentRejected(_TOO_SLOW.format(seconds=limits.cpu_seconds))
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
            # a native library that cannot allocate under RLIMIT_AS often aborts instead of raising
            raise DocumentRejected(_TOO_BIG.format(mb=limits.memory_mb))
        raise DocumentRejected(_CRASHED)
    try:
        kind, value = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child wrote it
    except Exception:
        raise DocumentRejected(_CRASHED) from None
    if kind == "ok":
        assert isinstance(value, ParsedDocument)
        return value
    if kind == "rejected":
        raise DocumentRejected(str(value))
    if kind == "memory":
        raise DocumentRejected(_TOO_BIG.format(mb=limits.memory_mb))
    raise DocumentRejected("The file is damaged or not in the format it claims to be.")
