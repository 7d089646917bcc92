"""The chart rendered by the real Helm engine (no helm binary: helm-python-sdk binds Helm v4's Go SDK),
linted, and every rendered object validated against the Kubernetes schemas of two versions."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.helm_chart import (
    CHART,
    KUBE_VERSIONS,
    REPO,
    SCHEMA,
    TABLE_MARK,
    load_values,
    manifests,
    render,
    settings_schema,
    values_table,
)

VALUE_SETS = ["default", "sentinel.yaml", "cluster.yaml", "existing-secret.yaml", "legacy.yaml", "everything.yaml"]
# Custom resources of the Prometheus operator: kubernetes-validate ships no schema for them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def values_of(name: str) -> dict[str, Any]:
    return {} if name == "default" else load_values(name)


@cache
def rendered(name: str) -> tuple[dict[str, str], tuple[dict[str, Any], ...]]:
    text = render(values_of(name))
    return text, tuple(manifests(text))


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_reports_no_error_or_warning(name: str, kube_version: str) -> None:
    report = helm_python.lint(CHART, values_of(name), strict=True, kube_version=f"v{kube_version}")
    assert report["errors"] == [], report
    # Severity 2 is a warning, 3 an error; an info ("icon is recommended") is fine.
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_validates_against_kubernetes(name: str, kube_version: str) -> None:
    _, objects = rendered(name)
    assert objects
    checked = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        # strict: an unknown or misspelt field fails too, not only a wrong type.
        kubernetes_validate.validate(obj, kube_version, strict=True)
        checked += 1
    assert checked == len([o for o in objects if o["kind"] not in CRD_KINDS])


def test_custom_resources_have_the_operator_shape() -> None:
    _, objects = rendered("everything.yaml")
    by_kind = {o["kind"]: o for o in objects}
    monitor = by_kind["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    service = by_kind["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {p["name"] for p in service["spec"]["ports"]} >= {endpoint["port"]}
    rule = by_kind["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert item["expr"] and (item.get("alert") or item.get("record"))


def test_defaults_render_what_the_issue_asks_for() -> None:
    _, objects = rendered("default")
    kinds = [o["kind"] for o in objects]
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert deployments["df-df-supernode"]["spec"]["replicas"] == 3
    assert "df-df-supernode-worker" in deployments
    assert kinds.count("PodDisruptionBudget") == 2 and "PersistentVolumeClaim" in kinds
    assert "HorizontalPodAutoscaler" not in kinds and "DaemonSet" not in kinds
    claim = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_everything_renders_each_optional_part() -> None:
    _, objects = rendered("everything.yaml")
    kinds = {o["kind"] for o in objects}
    assert {"HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule", "DaemonSet", "NetworkPolicy"} <= kinds
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "df-df-supernode")
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["externalTrafficPolicy"] == "Local"
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    supernode = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "df-df-supernode")
    assert hpa["spec"]["scaleTargetRef"]["name"] == supernode["metadata"]["name"]
    assert "replicas" not in supernode["spec"]  # the HPA owns the count


def test_config_schema_names_every_setting() -> None:
    """values.schema.json's `config` is derived from Settings (python -m tests.helm_chart rewrites it)."""
    schema = json.loads(SCHEMA.read_text())
    assert schema["properties"]["config"] == settings_schema(), "run: python -m tests.helm_chart"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"peer_up_limt": 5}}, "additional properties 'peer_up_limt' not allowed"),
        ({"config": {"api_tokens": "a:b"}}, "additional properties 'api_tokens' not allowed"),
        ({"config": {"peer_up_limit": 0}}, "/config/peer_up_limit"),
        ({"persistence": {"accessModes": ["ReadWriteOnce"]}}, "/persistence/accessModes"),
        ({"externalRedis": {"url": "redis://:pw@redis:6379/0"}}, "/externalRedis/url"),
        (
            {"redis": {"enabled": False}},
            "set externalRedis.url, externalRedis.sentinel.addrs or externalRedis.cluster.addrs",
        ),
        ({"externalRedis": {"cluster": {"addrs": ["c1:6379"]}}}, "externalRedis.cluster needs broker.url"),
        (
            {"externalRedis": {"url": "redis://r:6379/0", "cluster": {"addrs": ["c1:6379"]}}, "broker": {"url": "redis://b/1"}},
            "externalRedis: set one of url, sentinel.addrs and cluster.addrs, not url and cluster",
        ),
        ({"externalRedis": {"cluster": {"addrs": ["c1:6379/0"]}}}, "/externalRedis/cluster/addrs/0"),
        ({"supernode": {"configData": {"base": {"failAccessInterval": "three minutes"}}}}, "is not a duration"),
        ({"supernode": {"configData": {"base": {"youngGCThreshold": "lots"}}}}, "is not a size"),
        (
            {"secrets": {"existingSecret": "mine"}, "externalRedis": {"url": "redis://r:6379/0", "password": "pw"}},
            "externalRedis.password is not used with secrets.existingSecret",
        ),
    ],
)
def test_bad_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError) as failure:
        render(values)
    assert message in str(failure.value)


@pytest.mark.parametrize(
    ("copy", "source"),
    [
        ("files/alerts.yml", "deploy/prometheus/alerts.yml"),
        ("files/df-supernode.json", "deploy/grafana/df-supernode.json"),
    ],
)
def test_packaged_monitoring_files_equal_their_sources(copy: str, source: str) -> None:
    """Helm reads nothing outside the chart: it packages copies, which must not drift from deploy/."""
    original = REPO / source
    if not original.exists():
        pytest.skip(f"{source} does not exist yet (written by the monitoring work)")
    assert (CHART / copy).read_bytes() == original.read_bytes(), f"cp {source} helm/df-supernode/{copy}"


def test_monitoring_objects_carry_the_packaged_rules_and_dashboard() -> None:
    _, objects = rendered("everything.yaml")
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((CHART / "files/alerts.yml").read_text())["groups"]
    board = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard"))
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"  # the Grafana sidecar's default label
    assert json.loads(board["data"]["df-supernode.json"]) == json.loads((CHART / "files/df-supernode.json").read_text())


def test_chart_readme_carries_the_values_table() -> None:
    """Every key of values.yaml, with its default, is in the chart README (python -m tests.helm_chart)."""
    readme = (CHART / "README.md").read_text()
    assert readme.endswith(TABLE_MARK + "\n" + "\n".join(values_table()) + "\n"), "run: python -m tests.helm_chart"


def test_notes_say_how_to_point_dfget_and_harbor_at_the_cluster() -> None:
    default = rendered("default")[0]["df-supernode/templates/NOTES.txt"]
    assert "dfget --node df-df-supernode.dragonfly.svc:8002,df-df-supernode.dragonfly.svc:8002 " in default
    assert "Endpoint:  http://df-df-supernode.dragonfly.svc:8002" in default
    assert "NOT FOR PRODUCTION" in default and "no externalDatabase" in default
    everything = rendered("everything.yaml")[0]["df-supernode/templates/NOTES.txt"]
    assert "Endpoint:  http://203.0.113.10:8002" in everything and "LoadBalancer address" in everything
    assert "NOT FOR PRODUCTION" not in everything and "no externalDatabase" not in everything
    assert "everything-case" not in everything  # no credential printed


def test_notes_name_the_legacy_keys_that_have_no_effect() -> None:
    notes = rendered("legacy.yaml")[0]["df-supernode/templates/NOTES.txt"]
    line = next(x for x in notes.splitlines() if x.startswith("NOTE: keys of the legacy chart"))
    for key in ("supernode.statefulSet", "supernode.persistence", "supernode.image", "supernode.configData.plugins",
                "rbac", "serviceAccounts"):
        assert key in line
    assert "NOTE: keys of the legacy chart" not in rendered("everything.yaml")[0]["df-supernode/templates/NOTES.txt"]


def test_the_default_broker_behind_sentinel_is_the_state_stores_form() -> None:
    """With externalRedis.sentinel and no broker.url, the workers' broker goes through the same sentinels
    and master name (tests/test_sentinel_broker.py shows a worker following a failover on that form)."""
    values = {"externalRedis": {"sentinel": {"addrs": ["s1:26379", "s2:26379"], "masterName": "m1"}}}
    env = {
        (obj["metadata"]["name"], item["name"]): item.get("value")
        for obj in manifests(render(values)) if obj["kind"] == "Deployment"
        for container in obj["spec"]["template"]["spec"]["containers"]
        for item in container.get("env", [])
    }
    brokers = {value for (_, name), value in env.items() if name == "DF_BROKER_URL"}
    assert brokers == {"redis+sentinel://s1:26379,s2:26379/1?master=m1"}, env
