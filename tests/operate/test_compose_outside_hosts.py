"""deploy/compose.outside-hosts.yml layered on docker-compose.yml, as the real `docker compose`
binary resolves it: NATS published with TLS required, HTTPS in front of the gateway, every
client trusting the private CA, presigned URLs on the public name, and the GPU daemon's image
with CUDA user-space."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.support.compose import COMPOSE_FILE, ENV_EXAMPLE, ROOT, SECRETS, compose_binary

OVERRIDE = ROOT / "deploy" / "compose.outside-hosts.yml"


def config(
    *extra: str, public_host: str | None = "dante.example.com"
) -> subprocess.CompletedProcess:
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    env |= {name: f"{name.lower()}-x1" for name in SECRETS}
    if public_host:
        env["DANTE_PUBLIC_HOST"] = public_host
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE),
         "--env-file", str(ENV_EXAMPLE), *extra, "config", "--format", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def outside() -> dict[str, Any]:
    proc = config("--profile", "gpu")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_nats_requires_tls_and_is_published(outside: dict[str, Any]) -> None:
    nats = outside["services"]["nats"]
    cmd = nats["command"]
    assert "--tls" in cmd
    assert cmd[cmd.index("--tlscert") + 1] == "/etc/nats/tls/server.pem"
    sources = {v["target"]: v["source"] for v in nats["volumes"]}
    assert sources["/etc/nats/tls/server.pem"].endswith("deploy/tls/certs/dante.example.com.pem")
    assert [p["target"] for p in nats["ports"]] == [4222]


def test_every_client_trusts_the_ca_and_urls_are_public(outside: dict[str, Any]) -> None:
    services = outside["services"]
    for name in ("auth", "registry", "scheduler", "storage", "gateway", "provider-cpu"):
        assert services[name]["environment"]["SSL_CERT_FILE"] == "/etc/dante/tls/ca.pem", name
        targets = {v["target"] for v in services[name]["volumes"]}
        assert "/etc/dante/tls/ca.pem" in targets, name
        # the override adds to each service's volumes, it does not replace them
        if name != "provider-cpu":
            assert "/var/lib/dante/nats-auth" in targets, name
    storage = services["storage"]["environment"]
    assert storage["DANTE_STORAGE_PUBLIC_URL"] == "https://dante.example.com"
    https = services["https"]
    assert [p["target"] for p in https["ports"]] == [443]
    assert "reverse_proxy gateway:8080" in (ROOT / "deploy" / "tls" / "Caddyfile").read_text()


def test_the_gpu_daemon_image_has_cuda(outside: dict[str, Any]) -> None:
    gpu = outside["services"]["provider-gpu"]
    assert gpu["build"]["dockerfile"] == "deploy/gpu-host/Dockerfile"
    dockerfile = (ROOT / "deploy" / "gpu-host" / "Dockerfile").read_text()
    assert "nvidia/cuda:" in dockerfile and "USER dante" in dockerfile


def test_the_public_host_is_required() -> None:
    proc = config(public_host=None)
    assert proc.returncode != 0 and "DANTE_PUBLIC_HOST" in proc.stderr
