"""Semantic checks of the rendered chart against the code, so that the chart cannot drift from it: env vars
are real settings, probes hit real routes on the right ports, the hook runs the real migrations, selectors
select the replica pods, dfclient names the Service, credentials stay out of everything but Secrets."""

from __future__ import annotations

import base64
import re
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp.test_utils import TestServer

from app.core import cluster_url
from app.core.config import Settings
from app.download.server import create_download_app
from app.main import create_app
from tests.helm_chart import CHART, REPO, SECRET_SETTINGS, load_values, manifests, render

VALUE_SETS = ["default", "sentinel.yaml", "cluster.yaml", "existing-secret.yaml", "legacy.yaml", "everything.yaml"]
SETTINGS = {f"DF_{name.upper()}" for name in Settings.model_fields}
SECRET_ENV = {f"DF_{name.upper()}" for name in SECRET_SETTINGS}
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@cache
def objects(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(manifests(render({} if name == "default" else load_values(name))))


def find(name: str, kind: str, suffix: str = "") -> dict[str, Any]:
    matches = [o for o in objects(name) if o["kind"] == kind and o["metadata"]["name"] == f"df-df-supernode{suffix}"]
    assert len(matches) == 1, (kind, suffix, [o["metadata"]["name"] for o in objects(name)])
    return matches[0]


def our_pods(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of everything running our image: replicas, workers, the migration Job."""
    out = []
    for obj in objects(name):
        if obj["kind"] in ("Deployment", "Job", "DaemonSet"):
            spec = obj["spec"]["template"]["spec"]
            if any(c["image"].startswith("df-supernode:") for c in spec["containers"]):
                out.append((obj, spec))
    return out


def config_map_keys(name: str, ref: str) -> set[str]:
    found = [o for o in objects(name) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref]
    assert found, f"envFrom names ConfigMap {ref}, which the chart does not render"
    return set(found[0]["data"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_env_var_on_a_pod_is_a_real_setting(name: str) -> None:
    pods = our_pods(name)
    assert pods
    for obj, spec in pods:
        for container in spec["containers"]:
            env = container.get("env", [])
            names = [e["name"] for e in env]
            for source in container.get("envFrom", []):
                names += config_map_keys(name, source["configMapRef"]["name"])
            settings = [n for n in names if n.startswith("DF_")]
            assert set(settings) <= SETTINGS, (obj["metadata"]["name"], set(settings) - SETTINGS)
            # The only other variables are credentials read from a Secret, each there only to be put
            # into a DF_ value at container start by Kubernetes' $(NAME) expansion.
            referenced = {
                ref for e in env if e["name"].startswith("DF_") for ref in _REFERENCE.findall(e.get("value", ""))
            }
            for entry in env:
                if not entry["name"].startswith("DF_"):
                    assert "secretKeyRef" in entry.get("valueFrom", {}), entry
                    assert entry["name"] in referenced, (entry["name"], "is set but used by no DF_ setting")
            # Each DF_ variable set once: a duplicate would leave which value wins to the reader.
            assert len(settings) == len(set(settings)), settings


@pytest.mark.parametrize("name", VALUE_SETS)
def test_settings_parse_from_what_the_pods_get(name: str) -> None:
    """The ConfigMap's values are valid for their settings (types, bounds), as the replicas will read them."""
    data = next(
        o for o in objects(name) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "df-df-supernode-config"
    )
    kwargs = {key.removeprefix("DF_").lower(): value for key, value in data["data"].items()}
    Settings(**kwargs)  # raises on a bad value


async def _answers(name: str) -> dict[str, dict[str, int]]:
    """Status of each probe path as the real apps answer it: the API app (in-process ASGI) and the piece
    server (aiohttp, on loopback)."""
    paths = {c[p]["httpGet"]["path"] for c in _supernode_containers(name) for p in _PROBES}
    api = create_app(Settings(redis_url="", home=Path("/nonexistent")))
    answers: dict[str, dict[str, int]] = {"http": {}, "nginx": {}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api") as client:
        for path in paths:
            answers["http"][path] = (await client.get(path)).status_code
    piece = TestServer(create_download_app(storage=None), host="127.0.0.1")  # type: ignore[arg-type]
    await piece.start_server()
    try:
        async with httpx.AsyncClient(base_url=str(piece.make_url(""))) as client:
            for path in paths:
                answers["nginx"][path] = (await client.get(path)).status_code
    finally:
        await piece.close()
    return answers


_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def _supernode_containers(name: str) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = find(name, "Deployment")["spec"]["template"]["spec"]["containers"]
    return containers


@pytest.mark.parametrize("name", ["default", "legacy.yaml", "everything.yaml"])
async def test_probes_hit_routes_that_exist_on_the_right_ports(name: str) -> None:
    answers = await _answers(name)
    container = _supernode_containers(name)[0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = config_data(name)
    assert ports == {"http": int(config["DF_PORT"]), "nginx": int(config["DF_DOWNLOAD_PORT"])}
    for probe_name in _PROBES:
        probe = container[probe_name]["httpGet"]
        assert answers[probe["port"]][probe["path"]] == 200, (probe_name, probe, answers)
    # Liveness is dfget's own check; readiness is the piece port's drain-only /readyz (see values.yaml).
    assert container["livenessProbe"]["httpGet"] == {"path": "/_ping", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "nginx"}


def config_data(name: str) -> dict[str, str]:
    data: dict[str, str] = next(
        o for o in objects(name) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "df-df-supernode-config"
    )["data"]
    return data


@pytest.mark.parametrize("name", ["default", "everything.yaml"])
def test_grace_period_outlasts_the_drain_and_the_shutdown(name: str) -> None:
    spec = find(name, "Deployment")["spec"]["template"]["spec"]
    config = config_data(name)
    container = spec["containers"][0]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    budget = sleep + float(config["DF_DRAIN_SECONDS"]) + float(config["DF_SHUTDOWN_TIMEOUT_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > budget
    # Nothing in the preStop signals the process: kubelet's SIGTERM must stay the first one (it drains).
    assert not any("kill" in part for part in pre_stop)


def test_migration_hook_runs_the_real_alembic_command() -> None:
    job = find("sentinel.yaml", "Job", "-migrate")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"] and "command" not in container  # the image's entrypoint
    entrypoint = (REPO / "deploy/image/entrypoint.sh").read_text()
    assert re.search(r"^\s*migrate\) exec alembic -c /app/alembic\.ini upgrade head ", entrypoint, re.M)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY alembic.ini /app/alembic.ini" in dockerfile and "COPY migrations /app/migrations" in dockerfile
    assert 'ENTRYPOINT ["df-supernode"]' in dockerfile and "entrypoint.sh /usr/local/bin/df-supernode" in dockerfile
    # The password's hook Secret exists before the Job (a pre-install hook runs before the release's Secret).
    secret = next(
        o for o in objects("sentinel.yaml") if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-migrate")
    )
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    ref = container["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"]
    assert all("configMapRef" not in s for s in container.get("envFrom", []))


def test_no_migration_job_without_a_database() -> None:
    assert not [o for o in objects("default") if o["kind"] == "Job"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pdb_and_service_select_exactly_the_replica_pods(name: str) -> None:
    replica_labels = find(name, "Deployment")["spec"]["template"]["metadata"]["labels"]
    other_pods = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in objects(name)
        if o["kind"] in ("Deployment", "DaemonSet", "Job") and o["metadata"]["name"] != "df-df-supernode"
    ]
    assert other_pods  # the workers at least
    selectors = [
        find(name, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        find(name, "Service")["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector.items() <= replica_labels.items()
        for labels in other_pods:
            assert not selector.items() <= labels.items(), (selector, labels)
    assert find(name, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", ["legacy.yaml", "everything.yaml"])
def test_dfclient_node_list_names_the_service_several_times(name: str) -> None:
    config = yaml.safe_load(find(name, "ConfigMap", "-dfclient")["data"]["dfdaemon.yml"])
    service = find(name, "Service")
    http_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    expected = f"{service['metadata']['name']}.dragonfly.svc:{http_port}"
    assert len(config["node"]) >= 3 and set(config["node"]) == {expected}
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["dfclient"]["configData"]
    given = load_values(name)["dfclient"].get("configData", defaults)
    assert {k: v for k, v in config.items() if k != "node"} == given  # verbatim, node: appended
    daemonset = find(name, "DaemonSet", "-dfclient")["spec"]["template"]["spec"]
    assert daemonset["hostNetwork"] is True and daemonset["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert daemonset["containers"][0]["ports"][0]["containerPort"] == 65001


SECRETS_IN_VALUES = {
    "sentinel.yaml": [
        "sentinel-case-db-password-5c1e",
        "sentinel-case-token-ops-77aa",
        "sentinel-case-token-harbor-88bb",
    ],
    "cluster.yaml": [
        "cluster-case-db-password-9d3e",
        "cluster-case-token-ops-41c7",
        "cluster-case-token-harbor-a0f2",
    ],
    "everything.yaml": [
        "everything-case-token-ops-1f2e",
        "everything-case-webhook-secret-9a8b",
        "everything-case-robot-password-7c6d",
        "everything-case-redis-password-5e4f",
        "everything-case-db-password-2b1a",
        "robot$preheat",
    ],
}


@pytest.mark.parametrize("name", sorted(SECRETS_IN_VALUES))
def test_credentials_appear_only_in_secrets(name: str) -> None:
    secret_data = []
    for obj in objects(name):
        if obj["kind"] == "Secret":
            secret_data += [base64.b64decode(v).decode() for v in obj.get("data", {}).values()]
            continue
        text = yaml.safe_dump(obj)
        for secret in SECRETS_IN_VALUES[name]:
            assert secret not in text, (obj["kind"], obj["metadata"]["name"], secret)
    for secret in SECRETS_IN_VALUES[name]:
        assert any(secret in value for value in secret_data), f"{secret} reaches no Secret: it would be lost"
    for obj in objects(name):
        if obj["kind"] == "ConfigMap":
            assert not set(obj["data"]) & SECRET_ENV, obj["metadata"]["name"]


def test_existing_secrets_are_referenced_and_no_credential_secret_is_made() -> None:
    names = {o["metadata"]["name"] for o in objects("existing-secret.yaml") if o["kind"] == "Secret"}
    assert names == set()
    env = {
        e["name"]: e
        for e in find("existing-secret.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["DF_API_TOKENS"]["valueFrom"]["secretKeyRef"]["name"] == "df-credentials"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "password"}
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg-auth", "key": "password"}
    assert env["DF_REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis-master.redis:6379/2"
    assert env["DF_DATABASE_URL"]["value"] == "postgresql://df:$(DATABASE_PASSWORD)@pg.db.svc:5432/df?ssl=require"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in find("existing-secret.yaml", "Deployment")["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["seed-nfs"]


def test_a_redis_cluster_reaches_replicas_and_workers_as_a_url_the_app_parses() -> None:
    """externalRedis.cluster: the replicas and the workers get the same redis+cluster:// URL, the password
    put in by Kubernetes, the broker as given (Celery cannot use a cluster), and no demo Redis is made."""
    urls = set()
    deployments = [(obj, spec) for obj, spec in our_pods("cluster.yaml") if obj["kind"] == "Deployment"]
    assert len(deployments) == 2
    for obj, spec in deployments:
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-cluster", "key": "redis-password"}
        assert env["DF_BROKER_URL"]["value"] == load_values("cluster.yaml")["broker"]["url"], obj["metadata"]["name"]
        urls.add(env["DF_REDIS_URL"]["value"])
    nodes = [f"redis-cluster-{i}.redis-cluster-headless.redis:6379" for i in range(3)]
    assert urls == {"redis+cluster://:$(REDIS_PASSWORD)@" + ",".join(nodes)}
    assert not [o for o in objects("cluster.yaml") if o["metadata"]["name"].endswith("-redis")]
    # As the replica reads it once Kubernetes has expanded $(REDIS_PASSWORD).
    expanded = urls.pop().replace("$(REDIS_PASSWORD)", "s3cret-pw")
    parsed = cluster_url.parse(expanded)
    assert parsed.hosts == [(node.split(":")[0], 6379) for node in nodes] and parsed.password == "s3cret-pw"
    Settings(redis_url=expanded, broker_url=load_values("cluster.yaml")["broker"]["url"])


def test_legacy_config_data_maps_onto_settings_with_units() -> None:
    config = config_data("legacy.yaml")
    assert {
        k: config[k]
        for k in (
            "DF_PEER_UP_LIMIT",
            "DF_PEER_DOWN_LIMIT",
            "DF_ELIMINATION_LIMIT",
            "DF_FAIL_COUNT_LIMIT",
            "DF_FAIL_ACCESS_SECONDS",
            "DF_TASK_TTL_SECONDS",
            "DF_GC_INTERVAL_SECONDS",
            "DF_GC_YOUNG_FREE_BYTES",
            "DF_GC_FULL_FREE_BYTES",
            "DF_PORT",
            "DF_DOWNLOAD_PORT",
            "DF_HOME",
        )
    } == {
        "DF_PEER_UP_LIMIT": "5",
        "DF_PEER_DOWN_LIMIT": "4",
        "DF_ELIMINATION_LIMIT": "5",
        "DF_FAIL_COUNT_LIMIT": "5",
        "DF_FAIL_ACCESS_SECONDS": "180",
        "DF_TASK_TTL_SECONDS": "180",
        "DF_GC_INTERVAL_SECONDS": "15",
        "DF_GC_YOUNG_FREE_BYTES": str(100 << 30),
        "DF_GC_FULL_FREE_BYTES": str(5 << 30),
        "DF_PORT": "8002",
        "DF_DOWNLOAD_PORT": "8001",
        "DF_HOME": "/home/admin/supernode",
    }
    ignored = find("legacy.yaml", "ConfigMap", "-config")["metadata"]["annotations"][
        "df-supernode/legacy-keys-without-effect"
    ]
    assert set(ignored.split(",")) == {
        "schedulerCorePoolSize",
        "systemReservedBandwidth",
        "maxBandwidth",
        "gcInitialDelay",
        "gcMetaInterval",
        "peerGCDelay",
        "IntervalThreshold",
    }


def test_config_wins_over_legacy_keys_and_durations_compose() -> None:
    data = next(
        o
        for o in manifests(
            render(
                {
                    "config": {"peer_up_limit": 9},
                    "supernode": {
                        "configData": {
                            "base": {"peerUpLimit": 5, "failAccessInterval": "1m30s", "gcDiskInterval": "500ms"}
                        }
                    },
                }
            )
        )
        if o["kind"] == "ConfigMap"
    )["data"]
    assert (data["DF_PEER_UP_LIMIT"], data["DF_FAIL_ACCESS_SECONDS"], data["DF_GC_INTERVAL_SECONDS"]) == (
        "9",
        "90",
        "0.5",
    )


def test_replica_workers_come_from_supernode_workers_unless_config_sets_them() -> None:
    # The pods have no CPU limit: DF_WORKERS=0 would count the node's CPUs, so the chart sets a number.
    assert config_data("default")["DF_WORKERS"] == "2"
    rendered = manifests(render({"supernode": {"workers": 3}}))
    data = next(o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config"))["data"]
    assert data["DF_WORKERS"] == "3"
    rendered = manifests(render({"supernode": {"workers": 3}, "config": {"workers": 5}}))
    data = next(o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config"))["data"]
    assert data["DF_WORKERS"] == "5"
