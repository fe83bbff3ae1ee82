"""The Kubernetes manifests parse and agree with each other and with TF Serving's configuration."""
import pathlib
import re

import pytest
import yaml

from serving import config

K8S = pathlib.Path(__file__).resolve().parents[2] / "serving" / "k8s"


@pytest.fixture(scope="module")
def manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            documents[doc["kind"]] = doc
    return documents


def test_every_resource_is_listed_and_parses(manifests):
    assert set(manifests) == {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"}
    assert {p.name for p in K8S.glob("*.yaml")} == {"kustomization.yaml", "pvc.yaml", "configmap.yaml",
                                                    "deployment.yaml", "service.yaml"}


def test_config_files_are_valid_tf_serving_configs(manifests):
    data = manifests["ConfigMap"]["data"]
    entries = config.model_entries(config.parse_model_server_config(data["models.config"]))
    assert entries and all(entry.base_path.startswith("/models/") for entry in entries)
    assert config.parse_monitoring_config(data["monitoring.config"]).prometheus_enabled


def test_deployment_serves_the_configured_models_from_the_claim(manifests):
    deployment, configmap = manifests["Deployment"], manifests["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    container, = pod["containers"]
    assert container["image"] == "tensorflow/serving:2.16.1"
    args = dict(arg.split("=", 1) for arg in container["args"])
    assert (args["--port"], args["--rest_api_port"]) == ("8500", "8501")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert args["--model_config_file"] == f"{mounts['config']}/models.config"
    assert args["--monitoring_config_file"] == f"{mounts['config']}/monitoring.config"
    claim = manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim
    entries = config.model_entries(config.parse_model_server_config(configmap["data"]["models.config"]))
    assert all(entry.base_path.startswith(mounts["models"] + "/") for entry in entries)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_readiness_probe_asks_the_rest_status_of_a_configured_model(manifests):
    container, = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    probe = container["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == 8501
    model = re.fullmatch(r"/v1/models/([^/:]+)", probe["path"]).group(1)
    names = [e.name for e in config.model_entries(
        config.parse_model_server_config(manifests["ConfigMap"]["data"]["models.config"]))]
    assert model in names


def test_service_exposes_grpc_and_rest(manifests):
    service, deployment = manifests["Service"], manifests["Deployment"]
    assert {p["port"]: p["targetPort"] for p in service["spec"]["ports"]} == {8500: "grpc", 8501: "http"}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
