"""The docker-compose stack, its Dockerfile and its Prometheus/Grafana config, checked as files.

In: docker-compose.yml, Dockerfile, .dockerignore, deploy/prometheus, deploy/grafana.
Out: assertions that the pieces agree with each other (the worker reaches the
broker's in-network listener and Redis, Prometheus scrapes the port the worker
serves, every published port is loopback-only). No Docker engine is needed (none runs on
the project's machines, so `docker compose config` is not part of the suite).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """Compose allows `environment` as a mapping or as a list of KEY=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host source, for short (`src:dst[:mode]`) and long syntax."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[target] = source
    return mounts


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    parsed = {}
    for item in value.split(","):
        name, address = item.strip().split("://")
        host, port = address.rsplit(":", 1)
        parsed[name] = (host, int(port))
    return parsed


def test_stack_has_every_service(services: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker", "prometheus", "grafana"} <= set(services)


def test_kafka_is_apache_kafka_39_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", kafka["image"]), kafka["image"]
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert not any("ZOOKEEPER" in key for key in env), "KRaft mode has no ZooKeeper"
    # A single broker cannot host replicated internal topics.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_kafka_cluster_id_is_a_valid_kafka_uuid(services: dict[str, Any]) -> None:
    """Kafka wants 16 bytes in url-safe base64 without padding (22 characters)."""
    cluster_id = env_of(services["kafka"])["CLUSTER_ID"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id), cluster_id
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_worker_settings_point_at_the_stack(services: dict[str, Any]) -> None:
    env = env_of(services["worker"])
    assert env, "worker has no environment"
    assert all(key.startswith("STREAMSCORE_") for key in env), sorted(env)

    advertised = listeners(env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    in_network = {f"{host}:{port}" for host, port in advertised.values() if host == "kafka"}
    assert env["STREAMSCORE_BOOTSTRAP_SERVERS"] in in_network, (env, advertised)

    assert env["STREAMSCORE_ONLINE_STORE"] == "redis"
    redis_url = urlsplit(env["STREAMSCORE_REDIS_URL"])
    assert redis_url.scheme == "redis"
    assert redis_url.hostname == "redis"
    assert (redis_url.port or 6379) == 6379

    assert env["STREAMSCORE_HOME"] in mounts_of(services["worker"]), (
        "worker state is not on a volume"
    )
    # Metrics must listen beyond the container's loopback for Prometheus to reach them.
    assert env["STREAMSCORE_METRICS_HOST"] == "0.0.0.0"


def test_worker_bootstraps_then_runs(services: dict[str, Any]) -> None:
    command = services["worker"]["command"]
    line = command if isinstance(command, str) else " ".join(command)
    assert re.search(r"streamscore bootstrap\s*&&\s*streamscore worker", line), line


def test_worker_waits_for_healthy_broker_and_store(services: dict[str, Any]) -> None:
    depends = services["worker"]["depends_on"]
    for name in ("kafka", "redis"):
        assert depends[name]["condition"] == "service_healthy"
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"


def test_published_ports_are_loopback_only(services: dict[str, Any]) -> None:
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published += 1
    assert published >= 3  # kafka, prometheus, grafana at least


def test_kafka_host_listener_is_published(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    advertised = listeners(env_of(kafka)["KAFKA_ADVERTISED_LISTENERS"])
    host_ports = {port for host, port in advertised.values() if host in ("localhost", "127.0.0.1")}
    assert host_ports, "no listener advertised for clients on the host"
    published = {int(str(p).split(":")[-1]) for p in kafka["ports"]}
    assert host_ports <= published


def test_prometheus_scrapes_the_worker_metrics_port(services: dict[str, Any]) -> None:
    source = mounts_of(services["prometheus"])["/etc/prometheus/prometheus.yml"]
    config_file = (ROOT / source).resolve()
    assert config_file.is_file(), f"{source} is mounted but missing from the repo"
    config = yaml.safe_load(config_file.read_text())

    metrics_port = int(env_of(services["worker"])["STREAMSCORE_METRICS_PORT"])
    targets: set[str] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets.update(f"{name}:{dns['port']}" for name in dns["names"])
    assert f"worker:{metrics_port}" in targets, targets
    assert f"feedback:{metrics_port}" in targets, targets


def test_workers_are_healthy_when_they_answer_ready(services: dict[str, Any]) -> None:
    for name in ("worker", "feedback", "features"):
        port = env_of(services[name])["STREAMSCORE_METRICS_PORT"]
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/ready" in test, test


def test_the_feedback_worker_runs_beside_the_scoring_worker(services: dict[str, Any]) -> None:
    feedback = services["feedback"]
    assert feedback["command"] == ["streamscore", "worker", "--role", "feedback"]
    assert env_of(feedback) == env_of(services["worker"])
    assert feedback["depends_on"]["worker"]["condition"] == "service_healthy"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (deploy/tools.sh)"
)
def test_prometheus_config_passes_promtool() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_datasource_is_the_prometheus_service(services: dict[str, Any]) -> None:
    source = mounts_of(services["grafana"])["/etc/grafana/provisioning"]
    provisioning = (ROOT / source).resolve()
    files = sorted((provisioning / "datasources").glob("*.y*ml"))
    assert files, f"no datasource YAML under {provisioning}/datasources"
    datasources = [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert len(prometheus) == 1
    url = urlsplit(prometheus[0]["url"])
    assert url.hostname == "prometheus"
    published = {int(str(p).split(":")[-1]) for p in services["prometheus"]["ports"]}
    assert url.port in published


def test_dockerfile_installs_the_project_against_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.strip()
        for line in dockerfile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert instructions[0] == "FROM python:3.11-slim"
    assert "pip install -c requirements.lock ." in dockerfile
    assert (ROOT / "requirements.lock").is_file()
    assert 'CMD ["streamscore", "worker"]' in instructions
    # The compose worker overrides the command with `sh -c ...`; an ENTRYPOINT
    # would turn that into `streamscore sh -c ...`.
    assert not any(line.startswith("ENTRYPOINT") for line in instructions)


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".streamscore", ".git"} <= ignored


def test_worker_environment_is_valid_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every STREAMSCORE_* key of the worker is a real setting with a valid value
    (Settings forbids unknown keys), so a typo in the compose file fails here."""
    from streams.settings import Settings

    for key, value in env_of(services["worker"]).items():
        assert key.removeprefix("STREAMSCORE_").lower() in Settings.model_fields, key
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.online_store == "redis"
    assert settings.bootstrap_servers.startswith("kafka:")


def test_prometheus_loads_the_alert_rules(services: dict[str, Any]) -> None:
    mounts = mounts_of(services["prometheus"])
    config_file = (ROOT / mounts["/etc/prometheus/prometheus.yml"]).resolve()
    config = yaml.safe_load(config_file.read_text())
    rules_dir = (ROOT / mounts["/etc/prometheus/rules"]).resolve()
    assert config["rule_files"], "prometheus.yml loads no rules"
    for pattern in config["rule_files"]:
        # resolved relative to the config file, in the container as in the repo
        in_container = Path("/etc/prometheus") / pattern
        assert in_container.parent == Path("/etc/prometheus/rules"), pattern
        assert (rules_dir / in_container.name).is_file(), pattern
        assert (config_file.parent / pattern).is_file(), pattern


def test_grafana_provisions_the_streamscore_dashboard(services: dict[str, Any]) -> None:
    import json

    mounts = mounts_of(services["grafana"])
    provisioning = (ROOT / mounts["/etc/grafana/provisioning"]).resolve()
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert providers, "no dashboard provider"
    path = providers[0]["options"]["path"]
    dashboards = (ROOT / mounts[path]).resolve()
    board = json.loads((dashboards / "streamscore.json").read_text())
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("throughput", "latency", "decisions", "dead letters", "fallbacks", "drift"):
        assert topic in titles, topic
    assert "quality per version" in titles
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert all(e.count("(") == e.count(")") for e in exprs)
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"


STREAMSCORE_SERVICES = ("worker", "feedback", "features")


def streamscore_commands(service: dict[str, Any]) -> list[list[str]]:
    """The `streamscore ...` invocations of a service's command (also inside `sh -c`)."""
    import shlex

    command = service["command"]
    if command[:2] == ["sh", "-c"]:
        lines = [shlex.split(part) for part in command[2].split("&&")]
    else:
        lines = [command]
    return [line for line in lines if line and line[0] == "streamscore"]


def test_every_compose_command_is_a_real_cli_command(services: dict[str, Any]) -> None:
    """Each `streamscore ...` line parses with the CLI's own parser (a renamed command,
    option or role fails here, not in a container)."""
    import click

    from streams.cli import cli

    seen = []
    for name in STREAMSCORE_SERVICES:
        for args in streamscore_commands(services[name]):
            ctx = cli.make_context("streamscore", args[1:], resilient_parsing=True)
            command_name, command, rest = cli.resolve_command(ctx, args[1:])
            assert command is not None, (name, args)
            try:
                command.make_context(command_name or "", rest, parent=ctx)
            except click.UsageError as exc:
                raise AssertionError(f"{name}: {' '.join(args)}: {exc}") from exc
            seen.append(" ".join(args[1:]))
    assert "worker --role features" in seen and "bootstrap" in seen, seen


def test_the_feature_worker_runs_once_on_the_shared_feature_data(services: dict[str, Any]) -> None:
    """The feature worker appends to the offline parquet files the scoring worker's
    bootstrap wrote, and every worker reads the same Feast registry: the repo's data
    directory is one volume in all of them. One replica: the file offline store takes
    one writer."""
    from streams.settings import Settings

    features = services["features"]
    assert features["command"] == ["streamscore", "worker", "--role", "features"]
    assert env_of(features) == env_of(services["worker"])
    assert features["depends_on"]["worker"]["condition"] == "service_healthy"
    assert features.get("deploy", {}).get("replicas") == 1

    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, flags=re.M)[-1]
    repo_data = str(Path(workdir) / Settings.model_fields["feature_repo"].default / "data")
    assert f"mkdir -p /data {repo_data}" in dockerfile  # a writable mount point
    sources = {mounts_of(services[name]).get(repo_data) for name in STREAMSCORE_SERVICES}
    assert len(sources) == 1 and None not in sources, sources
    (volume,) = sources
    assert volume in services_volumes(), volume


def services_volumes() -> set[str]:
    return set(yaml.safe_load(COMPOSE_FILE.read_text())["volumes"])


def test_prometheus_scrapes_the_feature_worker(services: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    port = env_of(services["features"])["STREAMSCORE_METRICS_PORT"]
    targets = {
        f"{name}:{dns['port']}"
        for job in config["scrape_configs"]
        for dns in job.get("dns_sd_configs", [])
        for name in dns["names"]
    }
    assert f"features:{port}" in targets, targets
