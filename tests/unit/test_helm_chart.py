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
# The sandbox group on, as an operator who prepared tainted nodes would set it.
SANDBOX = {
    "ray": {"workerGroups": {"sandbox": {
        "enabled": True, "runtimeClassName": "runc", "maxReplicas": 20,
        "tolerations": [{"key": "farm-sandbox", "operator": "Exists", "effect": "NoSchedule"}],
    }}},
}  # fmt: skip


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


@pytest.mark.parametrize("values", [{}, NON_DEFAULT, SANDBOX], ids=["defaults", "non-default", "sandbox"])
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


def groups(values: dict) -> dict[str, dict]:
    ray = next(d for d in render(values) if d["kind"] == "RayCluster")
    return {g["groupName"]: g for g in ray["spec"]["workerGroupSpecs"]}


def farm_yaml(values: dict, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The settings executors get: farm.yaml under the autoscaler's environment, which starts
    them and hands them its settings (its data dir included)."""
    from farm.settings import Settings

    docs = render(values)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "farm.yaml" in d["data"])
    (tmp_path / "farm.yaml").write_text(config["data"]["farm.yaml"])
    head = next(d for d in docs if d["kind"] == "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for c in head["containers"] if c["name"] == "autoscaler" for e in c["env"]}
    return Settings.load(tmp_path / "farm.yaml", data_dir=env["FARM_DATA_DIR"])


@pytest.mark.parametrize("values", [{}, SANDBOX, {"ray": {"workerGroups": {"sandbox": {"enabled": True, "buildStoreHostPath": "/srv/b"}}}}],
                         ids=["defaults", "sandbox", "sandbox-node-store"])  # fmt: skip
def test_every_worker_group_is_a_valid_pod(values):
    """Each group's pod template, as the Pod KubeRay makes of it, against the API's own schema."""
    for name, group in groups(values).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"worker-{name}"}, "spec": group["template"]["spec"]}
        kubernetes_validate.validate(pod, K8S, strict=True)


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


def test_the_sandbox_group_runs_steps_in_gvisor_and_builds_rootless_unprivileged(tmp_path):
    from agents.workspace import workspace_root

    assert "sandbox" not in groups({})  # its nodes need preparing: off until asked for
    group = groups(SANDBOX)["sandbox"]
    assert group["maxReplicas"] == 20 and group["rayStartParams"]["resources"] == '{"farm-sandbox": 4}'
    spec = group["template"]["spec"]
    assert spec["runtimeClassName"] == "runc" and spec["nodeSelector"] == {"farm-sandbox": "true"}
    assert spec["tolerations"][0]["key"] == "farm-sandbox"
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    # One container, farm's: no sidecar, not privileged, /proc masked as usual, every capability
    # dropped but those farm itself uses (builds drop to farm-build), the profiles named.
    [worker] = spec["containers"]
    sc = worker["securityContext"]
    assert sc["privileged"] is False and sc["capabilities"]["drop"] == ["ALL"] and "procMount" not in sc
    assert set(sc["capabilities"]["add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETUID", "SETGID", "SYS_ADMIN"}
    assert sc["allowPrivilegeEscalation"] is True  # newuidmap/newgidmap's file capabilities
    assert sc["seccompProfile"] == sc["appArmorProfile"] == {"type": "Unconfined"}
    assert spec.get("hostUsers") is not False  # the node's socket is the host's root's
    assert "FARM_ADMIN_TOKEN" not in {e["name"] for e in worker["env"]}
    # The node's socket reaches farm's container only (steps are containers the runtime makes
    # with the workspace alone); the workspaces sit on the node at the path they have in here.
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert {n for n, v in volumes.items() if "hostPath" in v} == {"docker-sock", "workspaces"}
    assert volumes["docker-sock"]["hostPath"]["type"] == "Socket" and mounts["docker-sock"] == "/var/run/docker.sock"
    assert volumes["build-store"]["emptyDir"] == {"sizeLimit": "50Gi"}
    # farm.yaml: the sandbox runtime on this group's resource, paths as the pod mounts them.
    settings = farm_yaml(SANDBOX, tmp_path)
    assert settings.executors.runtime == "sandbox" and settings.executors.ray_resources == {"farm-sandbox": 1}
    assert not settings.cache.overlay  # a mount in the pod never reaches the node's daemon
    assert volumes["workspaces"]["hostPath"]["path"] == mounts["workspaces"] == str(workspace_root(settings))
    assert mounts["build-store"] == str(settings.rootless_dir)
    # Without a size limit the build store is still an emptyDir (a real filesystem, for overlay).
    unlimited = {"ray": {"workerGroups": {"sandbox": {"enabled": True, "buildStoreSizeLimit": ""}}}}
    spec = groups(unlimited)["sandbox"]["template"]["spec"]
    assert next(v for v in spec["volumes"] if v["name"] == "build-store")["emptyDir"] == {}
    assert "runtimeClassName" not in spec
    # Or the node's directory, which its sandbox pods share.
    shared = {"ray": {"workerGroups": {"sandbox": {"enabled": True, "buildStoreHostPath": "/srv/farm/rootless"}}}}
    spec = groups(shared)["sandbox"]["template"]["spec"]
    store = next(v for v in spec["volumes"] if v["name"] == "build-store")
    assert store == {"name": "build-store", "hostPath": {"path": "/srv/farm/rootless", "type": "DirectoryOrCreate"}}


def test_executors_on_the_nodes_daemon_share_workspaces_with_it_by_path(tmp_path):
    from agents.workspace import workspace_root

    settings = farm_yaml({}, tmp_path)
    assert settings.executors.runtime == "docker" and not settings.cache.overlay
    dood = groups({})["dood"]["template"]["spec"]
    mount = next(m for m in dood["containers"][0]["volumeMounts"] if m["name"] == "workspaces")
    volume = next(v for v in dood["volumes"] if v["name"] == "workspaces")
    assert volume["hostPath"]["path"] == mount["mountPath"] == str(workspace_root(settings))
    # An operator's own cache settings stand.
    assert farm_yaml({"config": {"cache": {"overlay": True}}}, tmp_path).cache.overlay


@pytest.mark.parametrize("bad", [{"api": {"replicas": 0}}, {"redis": {"externalUrl": "http://x"}}, {"typo": 1},
                                 {"tenants": [{"name": "t", "token_sha256": "not-a-hash"}]},
                                 {"ray": {"workerGroups": {"sandbox": {"capabilities": ["ALL"]}}}},
                                 {"ray": {"workerGroups": {"sandbox": {"appArmorProfile": {"type": "Unconfined",
                                                                                           "localhostProfile": "x"}}}}},
                                 {"ray": {"workerGroups": {"sandbox": {"seccompProfile": {"type": "Localhost"}}}}},
                                 {"ray": {"workerGroups": {"sandbox": {"runtimeClassName": "Not A Name"}}}},
                                 {"ray": {"workerGroups": {"sandbox": {"buildStoreHostPath": "relative/dir"}}}},
                                 {"ray": {"workerGroups": {"sandbox": {"privileged": True}}}}])  # fmt: skip
def test_the_values_schema_refuses_bad_values(bad):
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError):
        chart.render(bad, name="ci", namespace="farm")
