"""A daemon on another "host" (its own network namespace, reaching only the public addresses)
joins the control plane over TLS for NATS and the gateway, and runs a job end to end: NATS
dispatch, status, log upload through the HTTPS presigned URL. Needs root for ``ip netns``
(CI runs as root); elsewhere it is skipped, and with CI=true it fails instead."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from localdev.cluster import ClusterConfig
from tests.support.accounts import new_user
from tests.support.outside_host import Namespace, TlsCluster, make_certs
from tests.support.wait import eventually

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsCluster, str]]:
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True)
    if os.geteuid() != 0 or probe.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("network namespaces need root and iproute2")
        pytest.skip("network namespaces need root and iproute2")
    data = tmp_path_factory.mktemp("tls")
    ns = Namespace()
    ns.create()
    try:
        certs = make_certs(data / "tls", ns.host_ip)
        config = ClusterConfig(
            data_dir=data, prefer_default_ports=False, log_dir=data / "logs",
            heartbeat_interval=1.0, daemons=0,
        )  # fmt: skip
        c = TlsCluster(config, ns, certs)
        c.start()
        try:
            c.start_proxy()
            proc = c.start_outside_daemon()
            yield c, c.providers[proc.name]["provider_id"]
        finally:
            c.stop()
    finally:
        ns.delete()


def test_the_outside_host_reaches_only_the_public_addresses(
    outside: tuple[TlsCluster, str],
) -> None:
    c, _ = outside
    code = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
    py = [os.environ.get("PYTHON", "python3"), "-c", code]
    # the registry on the control plane's loopback: not reachable from the other host
    assert c.ns.run(*py, "127.0.0.1", str(c.ports["registry"])).returncode != 0
    # the public TLS endpoints are
    nats_port = c.nats_url.rsplit(":", 1)[1]
    assert c.ns.run(*py, c.ns.host_ip, nats_port).returncode == 0
    assert c.ns.run(*py, c.ns.host_ip, str(c.public_port)).returncode == 0


def test_plain_clients_are_refused(outside: tuple[TlsCluster, str]) -> None:
    c, _ = outside
    nats_port = int(c.nats_url.rsplit(":", 1)[1])
    # NATS announces TLS as required; a client that does not speak it gets nowhere
    with __import__("socket").create_connection((c.ns.host_ip, nats_port), 5) as s:
        assert b'"tls_required":true' in s.recv(4096)
    # HTTP to the HTTPS port is not answered as HTTP
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{c.ns.host_ip}:{c.public_port}/health", timeout=5).raise_for_status()
    # and an HTTPS client that does not trust the CA refuses the certificate
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{c.public_url}/health", verify=True, trust_env=False, timeout=5)


def test_outside_daemon_joins_over_tls_and_runs_a_job(outside: tuple[TlsCluster, str]) -> None:
    c, provider_id = outside
    ca = ssl.create_default_context(cafile=str(c.certs["ca"]))
    user = new_user(c.gateway_url)

    def online() -> bool:  # registered, heartbeating through the TLS proxy
        r = httpx.get(f"{c.public_url}/api/v1/providers/{provider_id}", headers=user["headers"],
                      verify=ca)  # fmt: skip
        assert r.status_code == 200, f"outside provider not found: {r.status_code} {r.text}"
        assert r.json()["status"] == "online", f"outside provider not online: {r.text}"
        return True

    eventually(online, limit=90, interval=0.5)
    r = httpx.post(
        f"{c.public_url}/api/v1/jobs",
        json={"type": "script", "name": "tls", "params": {"script_content": "echo over-tls"}},
        headers=user["headers"],
        verify=ca,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]

    def ended() -> dict | None:
        got = httpx.get(f"{c.public_url}/api/v1/jobs/{job_id}", headers=user["headers"], verify=ca)
        return got.json() if got.status_code == 200 and got.json()["status"] in TERMINAL else None

    job: dict = eventually(ended, limit=90, interval=0.3, what=f"job {job_id} ending")
    assert job.get("status") == "completed", job
    assert job["provider_id"] == provider_id
    logs = httpx.get(f"{c.public_url}/api/v1/jobs/{job_id}/logs", headers=user["headers"],
                     verify=ca)  # fmt: skip
    assert "over-tls" in logs.text
    # the log reached storage through the HTTPS presigned URL (the daemon's only way there)
    assert any(a["kind"] == "log" for a in job["artifacts"]), job["artifacts"]


def test_the_daemon_is_connected_from_its_own_address(outside: tuple[TlsCluster, str]) -> None:
    """The host side of the veth sees the daemon's connections to both public TLS ports."""
    c, _ = outside
    nats_port = c.nats_url.rsplit(":", 1)[1]
    for port in (nats_port, str(c.public_port)):
        out = subprocess.run(
            ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"{c.ns.ns_ip}:" in out, (port, out)
