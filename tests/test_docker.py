"""docker/: every compose profile validates, every service has a health check and a restart policy, the engines
carry the flags the pool relies on, Prometheus scrapes the portal and every engine, and the Grafana dashboards and
alert rules only query metrics that exist. The container entrypoint and health checks run here for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from core.metrics import PORTAL_METRIC_NAMES
from core.metrics_views import worker_metrics_serve

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
PROFILES = ["", "cpu", "gpu", "observability"]
ENGINES = {"llamacpp": "cpu", "vllm": "gpu", "tgi": "gpu"}

sys.path.insert(0, str(DOCKER / "grafana"))
import build_dashboards  # noqa: E402


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `make system-deps` (Debian's docker-compose 1.29)")
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def profile_args(profile: str) -> list[str]:
    return ["--profile", profile] if profile else []


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, Any]]:
    """`docker-compose config` of each profile (and all of them at once), parsed."""
    out = {}
    for profile in [*PROFILES, "all"]:
        args = ["--profile", "cpu", "--profile", "gpu", "--profile", "observability"] if profile == "all" else []
        result = compose(*(args or profile_args(profile)), "config")
        assert result.returncode == 0, result.stderr
        out[profile] = yaml.safe_load(result.stdout)
    return out


# --- compose -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p or "base")
def test_every_profile_validates(profile):
    result = compose(*profile_args(profile), "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def started(config: dict[str, Any], profile: str) -> set[str]:
    """The services `up` starts with this profile (compose 1.29's `config` lists every service)."""
    return {
        name
        for name, service in config["services"].items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def test_profiles_hold_the_expected_services(configs):
    base = {"postgres", "redis", "web", "worker", "beat", "proxy"}
    assert started(configs[""], "") == base
    assert started(configs["cpu"], "cpu") == base | {"llamacpp"}
    assert started(configs["gpu"], "gpu") == base | {"vllm", "tgi"}
    assert started(configs["observability"], "observability") == base | {"prometheus", "grafana"}
    assert configs[""]["services"]["postgres"]["image"].startswith("pgvector/pgvector:")


def test_every_service_has_a_health_check_and_a_restart_policy(configs):
    for name, service in configs["all"]["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name} has no restart policy"


def test_portal_services_take_secrets_from_files_and_wait_for_their_dependencies(configs):
    services = configs[""]["services"]
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["PORTAL_ENV"] == "production"
        for secret in ("SECRET_KEY", "PII_VAULT_KEY", "METRICS_TOKEN", "POSTGRES_PASSWORD"):
            assert env[f"{secret}_FILE"].startswith("/run/secrets/"), (name, secret)
            assert secret not in env, f"{name} has {secret} inline"
        assert env["METRICS_ALLOWED_NETWORKS"] == ""  # only the token opens /metrics in containers
    assert services["web"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["worker"]["environment"]["PORTAL_METRICS_PORT"] == "9808"
    assert "ports" not in services["web"]  # only the proxy is published; web scales with --scale
    assert "container_name" not in services["web"] and "container_name" not in services["worker"]


def _command(service: dict[str, Any]) -> str:
    return " ".join(service["command"])


def test_gpu_engines_use_nvidia_quantization_and_lora(configs):
    services = configs["gpu"]["services"]
    for name in ("vllm", "tgi"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert services[name]["environment"]["HF_HUB_OFFLINE"] == "1", name
    vllm, tgi = _command(services["vllm"]), _command(services["tgi"])
    assert "--quantization=awq" in vllm and "--enable-lora" in vllm and "--lora-modules support=" in vllm
    assert services["vllm"]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert re.search(r"--quantize=\w+", tgi) and "--lora-adapters=support=" in tgi


def test_cpu_engine_serves_the_small_model_with_metrics(configs):
    llama = configs["cpu"]["services"]["llamacpp"]
    command = _command(llama)
    assert "/models/SmolLM2-135M-Instruct.Q4_1.gguf" in command and "--metrics" in command
    assert llama["build"]["target"] == "engine-cpu"


def test_every_engine_needs_an_api_key_from_a_secret_file(configs):
    """An engine reachable on the backend network (by the worker, by anything tenant-steered) answers only with
    the key: llama-server's --api-key-file, vLLM's VLLM_API_KEY and TGI's API_KEY read from the secret file."""
    services = configs["all"]["services"]
    for engine in ENGINES:
        service = services[engine]
        assert "engine_api_key" in [s["source"] for s in service["secrets"]], engine
        launch = " ".join([*(service.get("entrypoint") or []), *service["command"]])
        assert "/run/secrets/engine_api_key" in launch, engine
        assert "api-key " not in launch.replace("--api-key-file", ""), f"{engine} has a key on its command line"
    assert "--api-key-file /run/secrets/engine_api_key" in _command(services["llamacpp"])
    assert 'VLLM_API_KEY="$(cat /run/secrets/engine_api_key)"' in services["vllm"]["entrypoint"][2].replace("$$", "$")
    assert 'API_KEY="$(cat /run/secrets/engine_api_key)"' in services["tgi"]["entrypoint"][2].replace("$$", "$")
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        if job["job_name"].startswith("engine-"):
            assert job["authorization"]["credentials_file"] == "/run/secrets/engine_api_key", job["job_name"]
    assert "engine_api_key" in [s["source"] for s in services["prometheus"]["secrets"]]
    assert "make_secret engine_api_key" in (DOCKER / "init-secrets.sh").read_text()


# --- Dockerfile --------------------------------------------------------------------------------------------
def test_dockerfile_is_multi_stage_and_has_every_target_compose_builds(configs):
    text = (DOCKER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE)
    assert len(stages) >= 4 and len(set(stages)) == len(stages)
    assert stages[-1] == "portal"  # a plain `docker build` gives the portal image
    targets = {s["build"]["target"] for s in configs["all"]["services"].values() if "build" in s}
    assert targets == {"portal", "proxy", "engine-cpu"} and targets <= set(stages)
    for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+) ", text, flags=re.MULTILINE):
        assert source == "." or (ROOT / source).exists(), source
    for source in re.findall(r"^COPY --from=(\S+) ", text, flags=re.MULTILINE):
        assert source in stages, source


# --- Prometheus ----------------------------------------------------------------------------------------------
def test_prometheus_scrapes_the_portal_and_every_engine(configs):
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    names = {name: job for job in jobs.values() for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    for portal_job, service, port in (("portal-web", "web", 8000), ("portal-worker", "worker", 9808)):
        job = jobs[portal_job]
        assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
        assert job["dns_sd_configs"][0]["names"] == [service] and job["dns_sd_configs"][0]["port"] == port
    services = configs["all"]["services"]
    for engine in ENGINES:
        assert engine in names, f"no scrape job for {engine}"
        port = str(names[engine]["dns_sd_configs"][0]["port"])
        command = _command(services[engine])
        assert f"--port={port}" in command or f"--port {port}" in command, (engine, port)
    assert "metrics_token" in [s["source"] for s in services["prometheus"]["secrets"]]


# --- metric names in dashboards and rules -------------------------------------------------------------------
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, grouping labels, functions, variables and
    durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def existing_metric_names() -> set[str]:
    """Every sample name the portal process can export (its own metrics and django-prometheus's), plus the engines'
    metrics listed in build_dashboards.ENGINE_METRICS."""
    from django_prometheus.middleware import Metrics

    Metrics.get_instance()  # django-prometheus registers its HTTP metrics lazily
    names: set[str] = set()
    for family in REGISTRY.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return names | build_dashboards.ENGINE_METRICS


def test_promql_name_extraction():
    expr = (
        'histogram_quantile(0.95, sum by (le, backend) (rate(portal_ttft_seconds_bucket{tenant=~"$tenant"}'
        "[$__rate_interval]))) / on (backend) group_left sum(vllm:num_requests_waiting offset 5m) > bool 3"
    )
    assert promql_metric_names(expr) == {"portal_ttft_seconds_bucket", "vllm:num_requests_waiting"}


def dashboard_files() -> list[Path]:
    return sorted((DOCKER / "grafana" / "dashboards").glob("*.json"))


def test_dashboards_cover_every_area_and_are_current():
    uids = [path.stem for path in dashboard_files()]
    assert uids == sorted(build_dashboards.DASHBOARDS)
    titles = " ".join(json.loads(p.read_text())["title"].lower() for p in dashboard_files())
    for area in ("latency", "tokens", "cost per tenant", "guardrails", "ingestion", "pool health"):
        assert area in titles, area
    for path in dashboard_files():
        assert path.read_text() == build_dashboards.render(path.stem), (
            f"{path.name} is stale: run python docker/grafana/build_dashboards.py"
        )


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.stem)
def test_dashboard_queries_name_metrics_that_exist(db, path):
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem and board["panels"]
    known = existing_metric_names()
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<metric>, <label>): the metric must exist
            exprs.append(re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"]).group(1))
    assert exprs
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names, expr
        assert names <= known, f"{path.name}: {sorted(names - known)} in {expr}"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24


def test_alert_rules_name_metrics_that_exist(db):
    rules = yaml.safe_load((DOCKER / "prometheus" / "rules.yml").read_text())
    known = existing_metric_names()
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) >= 5
    for expr in exprs:
        assert promql_metric_names(expr) <= known, expr


def test_dashboards_use_the_portal_metrics_of_the_issue():
    used = set()
    for path in dashboard_files():
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                used |= {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in promql_metric_names(target["expr"])}
    for name in PORTAL_METRIC_NAMES - {"portal_agent_steps"}:
        assert name.removesuffix("_total") in used, f"no dashboard shows {name}"


def test_grafana_provisioning_points_at_the_mounted_dashboards(configs):
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/portal.yaml").read_text())["providers"][0]
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    grafana = configs["observability"]["services"]["grafana"]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    assert Path(mounts[provider["options"]["path"]]) == DOCKER / "grafana" / "dashboards"
    assert Path(mounts["/etc/grafana/provisioning"]) == DOCKER / "grafana" / "provisioning"
    (source,) = datasource["datasources"]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DOCKER / "grafana" / "dashboards" / Path(home).name).exists()


# --- the entrypoint and the health checks, run for real ----------------------------------------------------------
def test_entrypoint_reads_secret_files_and_builds_the_urls(tmp_path):
    (tmp_path / "secret_key").write_text("k" * 60 + "\n")
    (tmp_path / "pg").write_text("p@ss/word:1\n")
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_123.db").write_bytes(b"stale")
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SECRET_KEY_FILE": str(tmp_path / "secret_key"),
        "POSTGRES_PASSWORD_FILE": str(tmp_path / "pg"),
        "POSTGRES_HOST": "postgres",
        "REDIS_HOST": "redis",
        "ALLOWED_HOSTS": "portal.example.com",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    result = subprocess.run(
        [str(DOCKER / "entrypoint.sh"), "env"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    got = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert got["SECRET_KEY"] == "k" * 60
    assert got["DATABASE_URL"] == "postgresql://portal:p%40ss%2Fword%3A1@postgres:5432/portal"
    assert urllib.parse.unquote(urllib.parse.urlsplit(got["DATABASE_URL"]).password or "") == "p@ss/word:1"
    assert got["REDIS_URL"] == "redis://redis:6379/0"
    hosts = got["ALLOWED_HOSTS"].split(",")
    assert hosts[0] == "portal.example.com" and socket.gethostname() in hosts
    assert list(metrics_dir.iterdir()) == []  # stale samples of an earlier container run are gone


def test_entrypoint_refuses_an_unreadable_secret_file(tmp_path):
    env = {"PATH": os.environ["PATH"], "SECRET_KEY_FILE": str(tmp_path / "missing")}
    result = subprocess.run(
        [str(DOCKER / "entrypoint.sh"), "true"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 64
    assert "SECRET_KEY_FILE" in result.stderr and "init-secrets.sh" in result.stderr


def healthcheck(role: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), role],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_web_health_check_against_a_running_portal(live_server, settings):
    settings.ALLOWED_HOSTS = [socket.gethostname()]
    port = urllib.parse.urlsplit(live_server.url).port
    result = healthcheck("web", PORT=str(port))
    assert result.returncode == 0, result.stderr
    closed = healthcheck("web", PORT=str(_free_port()))
    assert closed.returncode == 1 and "web unhealthy" in closed.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_health_check_needs_the_exporter_and_the_broker(db):
    server = worker_metrics_serve(host="127.0.0.1", port=0)
    try:
        port = str(server.server_port)
        ok = healthcheck("worker", PORTAL_METRICS_PORT=port, REDIS_URL="redis://127.0.0.1:6379/5")
        assert ok.returncode == 0, ok.stderr
        no_broker = healthcheck("worker", PORTAL_METRICS_PORT=port, REDIS_URL=f"redis://127.0.0.1:{_free_port()}/5")
        assert no_broker.returncode == 1 and "ConnectionError" in no_broker.stderr
    finally:
        server.shutdown()
        server.server_close()
    gone = healthcheck("worker", PORTAL_METRICS_PORT=port, REDIS_URL="redis://127.0.0.1:6379/5")
    assert gone.returncode == 1


def test_beat_health_check_refuses_a_process_that_is_not_beat():
    result = healthcheck("beat", REDIS_URL="redis://127.0.0.1:6379/5")
    assert result.returncode == 1 and "not celery beat" in result.stderr


def _flags(args: list[str]) -> dict[str, str]:
    """``--name value`` and ``--name=value`` alike → {name: value} (a flag without a value maps to "")."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            if not sep and i + 1 < len(args) and not args[i + 1].startswith("-"):
                value, i = args[i + 1], i + 1
            out[name] = value
        i += 1
    return out


@pytest.mark.parametrize("engine", ["vllm", "tgi"])
def test_gpu_engines_match_the_pools_launch_specs(configs, engine):
    """The compose services and inference_pool.launch agree on the flags the pool relies on."""
    from inference_pool.launch import IMAGES, LaunchConfig, engine_args

    service = configs["gpu"]["services"][engine]
    composed = _flags(service["command"])
    cfg = LaunchConfig(
        name=engine,
        kind=engine,
        model_source="/models/Qwen2.5-7B-Instruct-AWQ",
        served_name="qwen2.5-7b-instruct",
        quantization="awq",
        adapters={"support": "/adapters/support"},
    )
    generated = _flags(engine_args(cfg))
    shared = ["--port", "--quantization", "--lora-modules", "--served-model-name", "--enable-lora", "--model"]
    if engine == "tgi":
        shared = ["--port", "--quantize", "--lora-adapters", "--model-id"]
    for flag in shared:
        assert composed.get(flag) == generated.get(flag), (engine, flag, composed.get(flag), generated.get(flag))
    assert service["image"] == IMAGES[engine]
