"""Managed local llama-server engines: the command line, and supervision that restarts a crashed one."""

from __future__ import annotations

import time

import httpx
import pytest

from inference_pool.local_engines import EngineSpec, EngineStartError
from tests.engine import make_engine


def test_command_line_with_adapters_uses_one_comma_separated_lora_flag():
    spec = EngineSpec(
        name="e",
        port=9,
        model_path="/m.gguf",
        binary="/bin/llama-server",
        slots=3,
        context=3072,
        loras=["/a.gguf", "/b.gguf"],
    )
    cmd = spec.command()
    assert cmd[cmd.index("-np") + 1] == "3" and cmd[cmd.index("-c") + 1] == "3072"
    assert cmd.count("--lora") == 1 and cmd[cmd.index("--lora") + 1] == "/a.gguf,/b.gguf"
    assert "--lora-init-without-apply" in cmd and "--metrics" in cmd
    with pytest.raises(EngineStartError, match="commas"):
        EngineSpec(name="e", port=9, model_path="/m", binary="/b", loras=["/x,y.gguf"]).command()


@pytest.mark.engine
def test_a_crashed_engine_is_restarted_by_its_supervisor(tmp_path):
    engine = make_engine(slots=1, context=512, log_dir=tmp_path, name="supervised")
    engine.start(timeout=120)
    engine.supervise()
    try:
        first_pid = engine.proc.pid
        engine.kill()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and engine.restarts == 0:
            time.sleep(0.2)
        assert engine.restarts == 1
        assert engine.proc.pid != first_pid
        assert httpx.get(f"{engine.spec.base_url}/health", timeout=5).status_code == 200
    finally:
        engine.stop()
    assert engine.proc.poll() is not None
