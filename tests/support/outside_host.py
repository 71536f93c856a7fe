"""A GPU host outside the control plane's network: its own network namespace joined to the host
by a veth pair, so the daemon there reaches only the control plane's public addresses, both
over TLS: NATS (``tls://``, the server refuses plain clients) and the gateway (HTTPS through a
TLS-terminating reverse proxy, socat here, nginx/Caddy in production: deploy/README.md).
Certificates come from deploy/tls/make-certs.sh, the documented step."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from localdev.cluster import ClusterConfig, LocalCluster, Proc, free_port
from tests.support.servers import nats_server_binary
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class Namespace:
    """``ip netns`` + a veth pair on a random /30; names are random so parallel runs coexist."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"dante-{tag}"
        self.host_if, self.ns_if = f"dh{tag}", f"dn{tag}"
        # a /30 in the shared address space (100.64.0.0/10): not a LAN's or Docker's range
        net = f"100.{random.randint(64, 127)}.{random.randint(0, 255)}"
        b = random.randint(0, 63) * 4
        self.host_ip, self.ns_ip = f"{net}.{b + 1}", f"{net}.{b + 2}"

    def create(self) -> None:
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
           "netns", self.name)  # fmt: skip
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        sh("ip", "-n", self.name, "link", "set", self.ns_if, "up")
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def delete(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "netns", "del", self.name)  # takes the veth pair with it
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "link", "del", self.host_if)

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def make_certs(out: Path, host_ip: str) -> dict[str, Path]:
    sh(str(ROOT / "deploy" / "tls" / "make-certs.sh"), str(out), "dante-public",
       "DNS:localhost", f"IP:{host_ip}")  # fmt: skip
    return {"ca": out / "ca.pem", "cert": out / "dante-public.pem", "key": out / "dante-public.key"}


class TlsCluster(LocalCluster):
    """The local cluster with NATS on the public address over TLS only, and the gateway
    published through a TLS proxy on the public address; services keep their loopback ports."""

    def __init__(self, config: ClusterConfig, ns: Namespace, certs: dict[str, Path]) -> None:
        config.extra_env = {**config.extra_env, "SSL_CERT_FILE": str(certs["ca"])}
        super().__init__(config)
        self.ns, self.certs = ns, certs
        self.public_port = free_port()
        self.proxy: subprocess.Popen[bytes] | None = None

    @property
    def public_url(self) -> str:
        return f"https://{self.ns.host_ip}:{self.public_port}"

    def _env(self, prefix: str, name: str, **fields: str) -> dict[str, str]:
        env = super()._env(prefix, name, **fields)
        if name == "storage":  # presigned URLs must name the address outside hosts reach
            env["DANTE_STORAGE_PUBLIC_URL"] = self.public_url
        return env

    def _start_nats(self) -> None:
        super()._start_nats()  # the operator-mode config and keys (per-provider NATS users)
        proc = self.procs.pop()
        proc.popen.terminate()
        proc.popen.wait(10)
        port = int(self.nats_url.rsplit(":", 1)[1])
        argv = [nats_server_binary(), "-a", self.ns.host_ip, "-p", str(port), "-js",
                "-sd", str(self.data / "nats"), "--tls", "--tlscert", str(self.certs["cert"]),
                "--tlskey", str(self.certs["key"])]  # fmt: skip
        if self.nats_creds:
            argv += ["-c", str(self.nats_creds.parent / "server.conf")]
        self._spawn("nats", argv, dict(os.environ), port)
        self.nats_url = f"tls://{self.ns.host_ip}:{port}"

        def listening() -> bool:
            with contextlib.suppress(OSError), socket.create_connection((self.ns.host_ip, port), 1):
                return True
            return False

        eventually(listening, limit=15, what="nats-server (TLS) listening")

    def start_proxy(self) -> None:
        """HTTPS on the public address, plain HTTP to the gateway on loopback (socat)."""
        c = self.certs
        log = (self.data / "proxy.log").open("ab")
        self.proxy = subprocess.Popen(
            ["socat",
             f"OPENSSL-LISTEN:{self.public_port},bind={self.ns.host_ip},reuseaddr,fork,"
             f"cert={c['cert']},key={c['key']},verify=0",
             f"TCP:127.0.0.1:{self.ports['gateway']}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        ctx = ssl.create_default_context(cafile=str(c["ca"]))

        def handshakes() -> bool:
            with contextlib.suppress(OSError):
                raw = socket.create_connection((self.ns.host_ip, self.public_port), 1)
                with ctx.wrap_socket(raw, server_hostname=self.ns.host_ip):
                    return True
            return False

        eventually(handshakes, limit=15, interval=0.1, what="TLS proxy handshake")

    def start_outside_daemon(self, name: str = "outside") -> Proc:
        creds = self._provision_provider(name)
        self.providers[name] = creds
        port = free_port()
        self.ports[name] = port
        env = self._env(
            "DANTE_DAEMON_",
            name,
            GATEWAY_URL=self.public_url,
            API_KEY=creds["api_key"],
            STATE_DIR=str(self.data / name),
            NAME="outside-gpu-host",
            HOST="0.0.0.0",
            HEARTBEAT_INTERVAL_SECONDS=str(self.config.heartbeat_interval),
        )
        env.pop("DANTE_NATS_CREDS", None)
        env["DANTE_DAEMON_STATIC_SERVICES"] = "{}"  # it knows only the two public addresses
        argv = ["ip", "netns", "exec", self.ns.name, sys.executable, "-m", "provider_daemon", "run"]
        return self._spawn(name, argv, env, port)

    def stop(self, grace: float = 15.0) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            self.proxy.wait(10)
        super().stop(grace)
