"""The Helm chart, linted and rendered through Helm's own Go SDK (helm-python-sdk), every
manifest validated against the Kubernetes 1.30 API schemas (kubernetes-validate), and the
custom resources against their CRDs' schemas (../shared/schemas/crds, which CI always has)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "farm"
CRDS = REPO.parent / "shared" / "schemas" / "crds"
K8S = "1.30.0"
helm.disable_logging()  # Helm notes each symlink it follows (files/ links to dashboards/ and alerts/)

NON_DEFAULT = {
    "auth": {"existingSecret": "farm-tokens"},
    "tenants": [{"name": "team-a", "token_sha256": "a" * 64, "protected_token_sha256": "b" * 64, "weight": 2}],
    "api": {"replicas": 3, "service": {"type": "LoadBalancer", "port": 80}},
    "redis": {"enabled": False, "externalUrl": "rediss://redis.example:6380/0"},
    "ray": {"workerGroups": {"dind": {"enabled": False, "minReplicas": 0, "maxReplicas": 1}, "dood": {"enabled": True, "minReplicas": 1, "maxReplicas": 30}}},
    "metrics": {"serviceMonitor": {"labels": {"release": "kube-prometheus"}}, "prometheusRule": {"enabled": False}},
    "dashboards": {"enabled": False},
    "networkPolicy": {"enabled": False},
}


def render(values: dict) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="ci", namespace="farm")
    docs = []
    for name, text in out.items():
        if name.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def crd_schema(kind_file: str, version: str) -> dict:
    require("../shared/schemas/crds", CRDS.exists(), "CRD schemas beside the repository (CI always has them)")
    crd = yaml.safe_load((CRDS / kind_file).read_text())
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


CUSTOM = {"RayCluster": "ray.io_rayclusters.yaml", "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml"}


def test_the_chart_lints_clean():
    report = helm.lint(str(CHART))
    assert report["errors"] == [] and all(m["severity"] < 2 for m in report["messages"]), report


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["defaults", "non-default"])
def test_every_rendered_manifest_validates(values, tmp_path):
    docs = render(values)
    kinds = sorted(d["kind"] for d in docs)
    assert "Deployment" in kinds and "RayCluster" in kinds and "ServiceMonitor" in kinds
    for doc in docs:
        if doc["kind"] in CUSTOM:
            version = doc["apiVersion"].split("/")[1]
            jsonschema.validate(doc, crd_schema(CUSTOM[doc["kind"]], version))
        elif doc["kind"] == "PrometheusRule":
            rules = tmp_path / "rules.yml"
            rules.write_text(yaml.safe_dump(doc["spec"]))
            tool = shutil.which("promtool")
            if tool is None and os.environ.get("CI") == "true":
                pytest.fail("promtool is required in CI")
            if tool:
                run = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True)
                assert run.returncode == 0, run.stdout + run.stderr
        else:
            kubernetes_validate.validate(doc, K8S, strict=True)


def test_values_change_what_is_rendered():
    defaults = {d["kind"]: d for d in render({})}
    custom = render(NON_DEFAULT)
    kinds = [d["kind"] for d in custom]
    assert "StatefulSet" not in kinds and "NetworkPolicy" not in kinds and "PrometheusRule" not in kinds
    assert "Secret" not in kinds  # the existing one is used
    api = next(d for d in custom if d["kind"] == "Deployment")
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FARM_REDIS_URL"]["value"] == "rediss://redis.example:6380/0"
    assert env["FARM_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "farm-tokens"
    ray = next(d for d in custom if d["kind"] == "RayCluster")
    assert [g["groupName"] for g in ray["spec"]["workerGroupSpecs"]] == ["dood"]
    assert ray["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 30
    config = yaml.safe_load(next(d for d in custom if d["kind"] == "ConfigMap")["data"]["farm.yaml"])
    assert config["tenants"][0]["name"] == "team-a" and config["api"]["host"] == "0.0.0.0"
    # The defaults ship both executor kinds, Redis with AOF on a PVC, and the dashboards.
    groups = {g["groupName"]: g for g in defaults["RayCluster"]["spec"]["workerGroupSpecs"]}
    worker, daemon = groups["dind"]["template"]["spec"]["containers"]
    assert daemon["securityContext"]["privileged"] is True
    # The sidecar daemon sees the executor's workspaces at the same path (it mounts them into steps).
    mounts = [{m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (worker, daemon)]
    assert mounts[0]["workspaces"] == mounts[1]["workspaces"] == "/var/lib/farm/workspaces"
    assert any(v.get("hostPath") for v in groups["dood"]["template"]["spec"]["volumes"])
    assert "--appendonly" in defaults["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["args"]
    dashboards = next(d for d in render({}) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("dashboards"))
    assert set(dashboards["data"]) == {"farm-overview.json", "farm-capacity.json"}
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["defaults", "non-default"])
def test_the_rendered_farm_yaml_is_valid_farm_configuration(values, tmp_path):
    from farm.settings import Settings

    config = next(d for d in render(values) if d["kind"] == "ConfigMap" and "farm.yaml" in d["data"])
    path = tmp_path / "farm.yaml"
    path.write_text(config["data"]["farm.yaml"])
    settings = Settings.load(path)
    assert settings.policies["default"].kind == "predictive" and settings.executors.ray_resources == {"farm-dood": 1}
    assert settings.executors.runtime == "docker"


def test_a_dind_only_chart_runs_executors_on_the_pods_daemon(tmp_path):
    from farm.settings import Settings

    values = {"ray": {"workerGroups": {"dood": {"enabled": False}}}}
    config = next(d for d in render(values) if d["kind"] == "ConfigMap" and "farm.yaml" in d["data"])
    (tmp_path / "farm.yaml").write_text(config["data"]["farm.yaml"])
    settings = Settings.load(tmp_path / "farm.yaml")
    assert settings.executors.runtime == "dind" and settings.executors.ray_resources == {"farm-dind": 1}
    assert settings.dind.docker_host == "unix:///var/run/dind/docker.sock"


@pytest.mark.parametrize("bad", [{"api": {"replicas": 0}}, {"redis": {"externalUrl": "http://x"}}, {"typo": 1},
                                 {"tenants": [{"name": "t", "token_sha256": "not-a-hash"}]}])  # fmt: skip
def test_the_values_schema_refuses_bad_values(bad):
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError):
        chart.render(bad, name="ci", namespace="farm")
