"""Write small random LoRA adapters for the test model as GGUF files (the ``gguf`` package's writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFType, GGUFWriter, Keys


def write_loras(
    base_model: str | Path,
    outputs: dict[str | Path, int],
    *,
    rank: int = 8,
    alpha: float = 16.0,
    std: float = 0.08,
    targets: tuple[str, ...] = ("attn_q", "attn_v"),
) -> list[Path]:
    """One LoRA adapter per ``{path: seed}``: random low-rank matrices for every ``blk.N.<target>.weight`` of the
    base GGUF model (``lora_a`` of shape (rank, in), ``lora_b`` of shape (out, rank); GGUF shapes are [in, out])."""
    reader = GGUFReader(str(base_model))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    shapes = []
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets and parts[3] == "weight":
            shapes.append((tensor.name, int(tensor.shape[0]), int(tensor.shape[1])))
    written = []
    for out, seed in outputs.items():
        rng = np.random.default_rng(seed)
        writer = GGUFWriter(str(out), arch)
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
        for name, n_in, n_out in shapes:
            writer.add_tensor(f"{name}.lora_a", rng.normal(0, std, (rank, n_in)).astype(np.float32))
            writer.add_tensor(f"{name}.lora_b", rng.normal(0, std, (n_out, rank)).astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        written.append(Path(out))
    return written
