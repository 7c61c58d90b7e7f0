"""The Kubernetes manifests keep the trust model: keys only in the sidecar container, gateway on loopback."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from sidecar.config import load_settings

K8S = Path(__file__).parent.parent / "k8s"


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def test_kustomization_lists_existing_files() -> None:
    (kustomization,) = load("kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_provider_keys_reach_only_the_sidecar_container(tmp_path: Path) -> None:
    (deployment,) = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "sidecar"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar
    (agent,) = pod["containers"]
    keys_volume = next(
        v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "agent-provider-keys"
    )
    assert keys_volume in {m["name"] for m in sidecar["volumeMounts"]}
    assert keys_volume not in {m["name"] for m in agent.get("volumeMounts", [])}
    agent_env = {e["name"]: e for e in agent["env"]}
    assert not any(name.endswith("_API_KEY") for name in agent_env)
    assert agent_env["SIDECAR_URL"]["value"] == "http://127.0.0.1:4000"
    for container in (sidecar, agent):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]

    # The mounted config really makes the sidecar read keys from the mounted Secret and bind loopback only.
    (configmap,) = load("configmap.yaml")
    toml_text = configmap["data"]["sidecar.toml"]
    tomllib.loads(toml_text)
    config = tmp_path / "sidecar.toml"
    config.write_text(toml_text)
    settings = load_settings(config, {"HOME": str(tmp_path)})
    assert settings.host == "127.0.0.1"
    mount = next(m["mountPath"] for m in sidecar["volumeMounts"] if m["name"] == keys_volume)
    assert str(settings.secrets_dir) == mount


def test_the_ledger_lives_on_a_disk_volume_of_the_sidecar_only(tmp_path: Path) -> None:
    (deployment,) = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "sidecar"]
    (configmap,) = load("configmap.yaml")
    config = tmp_path / "sidecar.toml"
    config.write_text(configmap["data"]["sidecar.toml"])
    settings = load_settings(config, {"HOME": str(tmp_path)})
    assert settings.ledger_url is None  # SQLite unless the optional Secret provides a PostgreSQL URL
    mount = next(m for m in sidecar["volumeMounts"] if settings.ledger_file.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory" and not mount.get("readOnly")
    (agent,) = pod["containers"]
    assert mount["name"] not in {m["name"] for m in agent.get("volumeMounts", [])}
    ledger_env = next(e for e in sidecar["env"] if e["name"] == "SIDECAR_LEDGER_URL")
    assert ledger_env["valueFrom"]["secretKeyRef"]["optional"] is True  # a URL may hold a password: a Secret


def test_network_policy_allows_only_dns_and_https_egress() -> None:
    (policy,) = load("networkpolicy.yaml")
    ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443] and policy["spec"]["ingress"] == []


def test_the_public_realtime_example_routes_only_the_socket_to_the_public_port() -> None:
    service, ingress, policy = load("realtime-public.example.yaml")
    assert service["spec"]["ports"][0]["targetPort"] == 4443
    (rule,) = ingress["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/v4/ai/realtime-model"]
    assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == [4443]
    (kustomization,) = load("kustomization.yaml")
    assert "realtime-public.example.yaml" not in kustomization["resources"]
