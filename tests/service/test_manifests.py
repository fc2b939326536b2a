"""Kubernetes manifests: every overlay renders, validates against the Kubernetes schemas offline, and
agrees with the application — env vars, secret keys, ports, probes, shutdown deadline, metrics."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import bridge.observability.metrics  # noqa: F401  registers every metric the alerts may name
from bridge.service.app import ServiceSettings
from bridge.service.http import ADMIN_PATHS
from bridge.service.settings import ConfigError, load_settings, secret_values

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.29"
KUBECTL = shutil.which("kubectl")
OVERLAYS = ["dev", "prod"]

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")


def render(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)  # type: ignore[list-item]
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def workload(resources: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [r for r in resources if r["kind"] in ("Deployment", "StatefulSet")]
    return found


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    [bridge] = workload(resources)["spec"]["template"]["spec"]["containers"]
    return bridge


def app_settings(resources: list[dict[str, Any]], tmp_path: Path) -> tuple[ServiceSettings, dict[str, str], list[str]]:
    """Load the settings exactly as the pod would: mounted config file, env and envFrom, the
    Secret's keys as files (placeholder values)."""
    spec = workload(resources)["spec"]["template"]["spec"]
    bridge = container(resources)
    configmaps = {c["metadata"]["name"]: c["data"] for c in of_kind(resources, "ConfigMap")}
    env = {e["name"]: e["value"] for e in bridge.get("env", [])}
    for source in bridge.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    mounts = {m["name"]: m["mountPath"] for m in bridge["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    root = tmp_path / "pod"
    secret_keys: list[str] = []
    for name, volume in volumes.items():
        target = root / mounts[name].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, text in configmaps[volume["configMap"]["name"]].items():
                (target / key).write_text(text)
        if "secret" in volume:
            for item in volume["secret"]["items"]:
                secret_keys.append(item["key"])
                (target / item["path"]).write_text(f"placeholder-{item['key']}\n")
    env = {k: (str(root / v.lstrip("/")) if k in ("BRIDGE_CONFIG", "BRIDGE_SECRETS_DIR") else v) for k, v in env.items()}
    settings = load_settings(ServiceSettings, environ=env)
    return settings, env, secret_keys


def test_every_resource_validates_against_the_kubernetes_schemas(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    checked = 0
    for resource in resources:
        if resource["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: checked against the app below
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 7


def test_the_validator_rejects_a_misspelled_field(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    broken = copy.deepcopy(workload(overlay[1]))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_env_vars_config_file_and_secret_keys_are_settings_the_app_accepts(overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    _, resources = overlay
    settings, env, secret_keys = app_settings(resources, tmp_path)  # an unknown name would raise ConfigError
    assert all(name.startswith("BRIDGE_") for name in env)
    assert set(secret_values(settings)) == {f"placeholder-{key}" for key in secret_keys}  # every secret from the Secret
    assert secret_keys and all(f"placeholder-{key}" in secret_values(settings) for key in secret_keys)


def test_a_misspelled_env_var_in_a_manifest_would_fail_this_check(overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    resources = copy.deepcopy(overlay[1])
    container(resources)["env"].append({"name": "BRIDGE_LOG__LEVLE", "value": "DEBUG"})
    with pytest.raises(ConfigError, match="log.levle: unknown setting"):
        app_settings(resources, tmp_path)


def test_no_secret_value_is_committed(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    assert of_kind(resources, "Secret") == []
    secret_name = re.compile(r"(?i)(api_key|secret_key|passphrase|password|secrets|token)$")

    def keys(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [str(k) for k in node] + [k for v in node.values() for k in keys(v)]
        if isinstance(node, list):
            return [k for v in node for k in keys(v)]
        return []

    for configmap in of_kind(resources, "ConfigMap"):
        for key, text in configmap["data"].items():
            names = keys(yaml.safe_load(text)) if key.endswith(".yaml") else [key.split("__")[-1]]
            assert not [n for n in names if secret_name.search(n)], (configmap["metadata"]["name"], key)


def test_ports_and_probes_match_the_server_settings(overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    _, resources = overlay
    settings, _, _ = app_settings(resources, tmp_path)
    bridge = container(resources)
    ports = {p["name"]: p["containerPort"] for p in bridge["ports"]}
    assert ports == {"webhooks": settings.server.port, "admin": settings.server.admin_port}
    assert settings.server.host == "0.0.0.0"  # only in the container config; the default stays loopback
    probes = {kind: bridge[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: (p["path"], p["port"]) for kind, p in probes.items()} == {
        "startupProbe": ("/healthz", "admin"),
        "livenessProbe": ("/healthz", "admin"),
        "readinessProbe": ("/readyz", "admin"),
    }
    assert {p["path"] for p in probes.values()} <= ADMIN_PATHS
    for service in of_kind(resources, "Service"):
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
        assert service["spec"]["selector"].items() <= workload(resources)["spec"]["template"]["metadata"]["labels"].items()
    [policy] = of_kind(resources, "NetworkPolicy")
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == set(ports)


def test_grace_period_covers_the_shutdown_deadline(overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    _, resources = overlay
    settings, _, _ = app_settings(resources, tmp_path)
    grace = workload(resources)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings.shutdown.deadline_seconds + 3 <= grace <= settings.shutdown.deadline_seconds + 15


def test_pod_runs_non_root_with_a_read_only_root_and_writes_only_to_volumes(overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    _, resources = overlay
    settings, _, _ = app_settings(resources, tmp_path)
    spec = workload(resources)["spec"]["template"]["spec"]
    bridge = container(resources)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert bridge["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert "memory" in bridge["resources"]["limits"] and bridge["resources"]["requests"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    writable = [m["mountPath"] for m in bridge["volumeMounts"] if not m.get("readOnly")]
    if settings.dedup.store == "sqlite":
        assert any(str(settings.dedup.path).startswith(path + "/") for path in writable)


def test_embedded_store_runs_as_a_statefulset_on_a_volume_and_kafka_store_as_a_deployment(overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    name, resources = overlay
    settings, _, _ = app_settings(resources, tmp_path)
    runs = workload(resources)
    if not settings.cluster.enabled:
        assert runs["spec"]["replicas"] == 1  # a singleton: each replica would publish every push again
    if settings.dedup.store == "sqlite":
        assert runs["kind"] == "StatefulSet"
        [claim] = runs["spec"]["volumeClaimTemplates"]
        assert {m["name"] for m in container(resources)["volumeMounts"]} >= {claim["metadata"]["name"]}
    elif not settings.cluster.enabled:
        assert runs["kind"] == "Deployment" and runs["spec"]["strategy"]["type"] == "Recreate"
        assert settings.dedup.store == "kafka" and settings.dedup.transactional_id
    assert (name, settings.dedup.store) in {("dev", "sqlite"), ("prod", "kafka")}


def test_prod_runs_three_cluster_replicas_that_roll_and_drain_without_dropping_below_two(overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    name, resources = overlay
    settings, _, _ = app_settings(resources, tmp_path)
    if name != "prod":
        assert not settings.cluster.enabled
        return
    runs = workload(resources)
    assert settings.cluster.enabled and settings.dedup.store == "kafka"
    assert runs["kind"] == "Deployment" and runs["spec"]["replicas"] == 3
    assert runs["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    [budget] = of_kind(resources, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 2, "selector": budget["spec"]["selector"]}
    assert budget["spec"]["selector"]["matchLabels"].items() <= runs["spec"]["template"]["metadata"]["labels"].items()
    [term] = runs["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= runs["spec"]["template"]["metadata"]["labels"].items()


def test_service_monitor_scrapes_the_admin_port_of_exactly_one_service(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    [monitor] = of_kind(resources, "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in of_kind(resources, "Service") if wanted.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 1
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert next(p for p in selected[0]["spec"]["ports"] if p["name"] == endpoint["port"])["targetPort"] == "admin"


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_every_alert_uses_metrics_the_bridge_exports(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    [rules] = of_kind(resources, "PrometheusRule")
    exported = exported_names()
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert len(alerts) >= 10
    for alert in alerts:
        used = set(re.findall(r"\bbridge_[a-z_]+", alert["expr"]))
        assert used <= exported, (alert["alert"], used - exported)
        assert alert["labels"]["severity"] in {"critical", "warning", "info"} and alert["annotations"]["summary"]


def test_dockerfile_pins_its_base_and_runs_as_the_pod_user() -> None:
    dockerfile = (K8S / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    prod = render(K8S / "overlays" / "prod")
    assert workload(prod)["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M)[0].split()}
    defaults = ServiceSettings.model_fields["server"].default
    assert exposed == {defaults.port, defaults.admin_port}


def test_the_image_build_context_holds_the_service_and_its_schemas_but_no_test_tooling() -> None:
    allowed = [line[1:] for line in (K8S / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")]
    assert set(allowed) == {"pyproject.toml", "README.md", "bridge/", "schemas/"}
    copied = re.findall(r"^COPY (?!--from)(\S+)", (K8S / "Dockerfile").read_text(), re.M)
    assert not any("testkit" in source or "tests" in source for source in copied)
