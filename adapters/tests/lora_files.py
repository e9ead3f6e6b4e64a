"""Small random LoRA adapters for the test model, written as GGUF files with the ``gguf`` package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFType, GGUFWriter, Keys


def lora_gguf_write(*, base_model: str | Path, outputs: dict[Path, int], rank: int = 4, alpha: float = 8.0) -> None:
    """One adapter per ``{path: seed}``: random ``lora_a`` (rank, in) and ``lora_b`` (out, rank) for each layer's
    ``attn_q`` (the base model is read once: parsing it is the slow part)."""
    reader = GGUFReader(str(base_model))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    targets = []
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] == "attn_q" and parts[3] == "weight":
            targets.append((tensor.name, int(tensor.shape[0]), int(tensor.shape[1])))  # GGUF shapes are [in, out]
    for path, seed in outputs.items():
        rng = np.random.default_rng(seed)
        writer = GGUFWriter(str(path), arch)
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
        for name, n_in, n_out in targets:
            writer.add_tensor(f"{name}.lora_a", rng.normal(0, 0.05, (rank, n_in)).astype(np.float32))
            writer.add_tensor(f"{name}.lora_b", rng.normal(0, 0.05, (n_out, rank)).astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
