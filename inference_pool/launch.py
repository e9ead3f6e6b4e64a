"""Launch specs: from a backend definition, the engine's command line, a docker compose service block and a
Kubernetes Deployment manifest.

- TGI: ``--quantize awq|gptq|fp8|eetq|bitsandbytes-nf4``, ``--lora-adapters name=path,...``, ``--num-shard N``
  (tensor parallelism inside one node; TGI has no pipeline parallelism).
- vLLM: ``--quantization``, ``--enable-lora --lora-modules name=path ... --max-loras N``,
  ``--tensor-parallel-size`` (splits each layer's matrices across the GPUs of a node) and
  ``--pipeline-parallel-size`` (splits the stack of layers across nodes; more than one stage needs a Ray cluster
  spanning the nodes, e.g. a LeaderWorkerSet).
- llama.cpp ``llama-server``: ``--parallel N`` slots (the context is shared: ``-c`` is per-slot context x slots),
  ``--lora a.gguf,b.gguf`` (one comma-separated list: a repeated ``--lora`` keeps only the last) and
  ``--lora-init-without-apply``; adapter ids follow the list's order (sorted by adapter name here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from core.errors import InvalidInput

if TYPE_CHECKING:
    from inference_pool.models import Backend

IMAGES = {
    "tgi": "ghcr.io/huggingface/text-generation-inference:3.3.4",
    "vllm": "vllm/vllm-openai:v0.11.0",
    "llamacpp": "ghcr.io/ggml-org/llama.cpp:server-cuda",
}
PORTS = {"tgi": 80, "vllm": 8000, "llamacpp": 8080}

_TGI_QUANT = {
    "awq": "awq",
    "gptq": "gptq",
    "fp8": "fp8",
    "eetq": "eetq",
    "int8": "eetq",
    "bitsandbytes-nf4": "bitsandbytes-nf4",
}
_VLLM_QUANT = {"awq": "awq", "gptq": "gptq", "fp8": "fp8", "bitsandbytes-nf4": "bitsandbytes"}
_GGUF_QUANT = {"q4", "q8"}


@dataclass
class LaunchConfig:
    name: str
    kind: str
    model_source: str  # a Hugging Face repo id or a path inside the container (GGUF file for llama.cpp)
    served_name: str
    quantization: str = "none"
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> path inside the container
    max_loras: int = 4
    max_lora_rank: int = 64
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    max_concurrent: int = 8
    context: int = 4096
    image: str = ""
    port: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PORTS:
            raise InvalidInput(f"No launch spec for “{self.kind}” engines; use tgi, vllm or llamacpp.")
        if self.tensor_parallel < 1 or self.pipeline_parallel < 1:
            raise InvalidInput("Tensor and pipeline parallel sizes are at least 1.")
        self.image = self.image or IMAGES[self.kind]
        self.port = self.port or PORTS[self.kind]

    @property
    def gpus_per_node(self) -> int:
        return self.tensor_parallel


def engine_args(cfg: LaunchConfig) -> list[str]:
    """The engine's command-line arguments (after the image's entrypoint)."""
    quant = cfg.quantization or "none"
    if cfg.kind == "tgi":
        if cfg.pipeline_parallel > 1:
            raise InvalidInput("TGI shards a model inside one node only; use vLLM for pipeline parallelism.")
        args = ["--model-id", cfg.model_source, "--port", str(cfg.port), "--num-shard", str(cfg.tensor_parallel)]
        args += ["--max-concurrent-requests", str(cfg.max_concurrent), "--max-total-tokens", str(cfg.context)]
        if quant != "none":
            if quant not in _TGI_QUANT:
                raise InvalidInput(f"TGI cannot serve “{quant}” weights; use awq, gptq, fp8, eetq or bitsandbytes-nf4.")
            args += ["--quantize", _TGI_QUANT[quant]]
        if cfg.adapters:
            args += ["--lora-adapters", ",".join(f"{n}={p}" for n, p in sorted(cfg.adapters.items()))]
        return args
    if cfg.kind == "vllm":
        args = [
            "--model",
            cfg.model_source,
            "--served-model-name",
            cfg.served_name,
            "--port",
            str(cfg.port),
            "--max-model-len",
            str(cfg.context),
            "--max-num-seqs",
            str(cfg.max_concurrent),
            "--tensor-parallel-size",
            str(cfg.tensor_parallel),
            "--pipeline-parallel-size",
            str(cfg.pipeline_parallel),
        ]
        if cfg.pipeline_parallel > 1:
            args += ["--distributed-executor-backend", "ray"]
        if quant != "none":
            if quant not in _VLLM_QUANT:
                raise InvalidInput(f"vLLM cannot serve “{quant}” weights here; use awq, gptq, fp8 or bitsandbytes-nf4.")
            args += ["--quantization", _VLLM_QUANT[quant]]
        if cfg.adapters:
            args += ["--enable-lora", "--max-loras", str(cfg.max_loras), "--max-lora-rank", str(cfg.max_lora_rank)]
            args += ["--lora-modules", *(f"{n}={p}" for n, p in sorted(cfg.adapters.items()))]
        return args
    # llama.cpp
    if cfg.pipeline_parallel > 1:
        raise InvalidInput("llama-server runs on one node; use vLLM for pipeline parallelism.")
    if quant not in _GGUF_QUANT | {"none"}:
        raise InvalidInput("llama.cpp reads the quantization from the GGUF file; pick a q4 or q8 GGUF model.")
    args = ["-m", cfg.model_source, "--host", "0.0.0.0", "--port", str(cfg.port)]  # noqa: S104 - inside a container
    args += ["--parallel", str(cfg.max_concurrent), "-c", str(cfg.context * cfg.max_concurrent), "--metrics"]
    args += ["-a", cfg.served_name, "-ngl", "999"]
    if cfg.tensor_parallel > 1:
        args += ["--split-mode", "row"]
    if cfg.adapters:
        paths = [cfg.adapters[n] for n in sorted(cfg.adapters)]
        if any("," in p for p in paths):
            raise InvalidInput("LoRA adapter paths for llama.cpp must not contain commas.")
        args += ["--lora", ",".join(paths), "--lora-init-without-apply"]
    return args


def compose_service(cfg: LaunchConfig) -> dict[str, Any]:
    """A docker compose ``services:`` entry (name → block)."""
    block: dict[str, Any] = {
        "image": cfg.image,
        "command": engine_args(cfg),
        "ports": [f"{cfg.port}"],
        "volumes": ["models:/models", "adapters:/adapters:ro"],
        "environment": {"HF_HUB_OFFLINE": "1"},
        "shm_size": "8gb",
        "restart": "unless-stopped",
        "deploy": {
            "resources": {
                "reservations": {"devices": [{"driver": "nvidia", "count": cfg.gpus_per_node, "capabilities": ["gpu"]}]}
            }
        },
    }
    if cfg.kind == "tgi":
        block["environment"]["HUGGINGFACE_HUB_CACHE"] = "/models"
    return {cfg.name: block}


def kubernetes_deployment(cfg: LaunchConfig) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": cfg.name, "app.kubernetes.io/part-of": "enterprise-llm-portal"}
    annotations = {"portal/engine": cfg.kind, "portal/served-model": cfg.served_name}
    if cfg.pipeline_parallel > 1:
        annotations["portal/pipeline-stages"] = (
            f"{cfg.pipeline_parallel} nodes x {cfg.tensor_parallel} GPUs: run under a Ray cluster (LeaderWorkerSet)"
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": cfg.name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": cfg.name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "engine",
                            "image": cfg.image,
                            "args": engine_args(cfg),
                            "ports": [{"name": "http", "containerPort": cfg.port}],
                            "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                            "resources": {"limits": {"nvidia.com/gpu": cfg.gpus_per_node}},
                            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
                            "volumeMounts": [
                                {"name": "models", "mountPath": "/models"},
                                {"name": "adapters", "mountPath": "/adapters", "readOnly": True},
                                {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108 - the engine container's shared memory
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
                        {"name": "adapters", "persistentVolumeClaim": {"claimName": "adapters"}},
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                    ],
                },
            },
        },
    }


def launch_config_for_backend(
    backend: Backend,
    *,
    model_source: str | None = None,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    max_loras: int = 4,
) -> LaunchConfig:
    """The launch configuration of a registered backend: every adapter placed on it (confirmed or not: the spec
    is what makes the engine load them)."""
    adapters = {a.name: a.source_path or f"/adapters/{a.name}" for a in backend.adapters.all()}
    return LaunchConfig(
        name=backend.name,
        kind=str(getattr(backend.kind, "value", backend.kind)),  # an enum member on a fresh object
        model_source=model_source or backend.base_model.name,
        served_name=backend.model_id,
        quantization=backend.quantization,
        adapters=adapters,
        max_loras=max(max_loras, 1),
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        max_concurrent=backend.max_concurrent,
        context=backend.context_length,
    )


def launch_specs(cfg: LaunchConfig) -> dict[str, str]:
    """Both specs as YAML text: ``{"compose": ..., "kubernetes": ...}``."""
    return {
        "command": " ".join(engine_args(cfg)),
        "compose": yaml.safe_dump({"services": compose_service(cfg)}, sort_keys=False),
        "kubernetes": yaml.safe_dump(kubernetes_deployment(cfg), sort_keys=False),
    }
