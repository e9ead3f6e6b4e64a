from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from inference_pool.tests.lora import write_loras


@pytest.fixture(scope="session")
def lora_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small random LoRA adapters for SmolLM2 (A and B), written as GGUF files."""
    folder = tmp_path_factory.mktemp("loras")
    a, b = write_loras(settings.LLAMA_MODEL_PATH, {folder / "adapter-a.gguf": 11, folder / "adapter-b.gguf": 22})
    return {"A": a, "B": b}
