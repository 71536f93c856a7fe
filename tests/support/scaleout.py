"""A scaled-out local cluster: 3 nats-server nodes clustered on loopback (JetStream, streams
with 3 replicas, fsync on every write as deploy/kubernetes ships it), two gateways, two
schedulers on PostgreSQL, the other services once, and any number of daemons. Real processes
on free ports, built on localdev's LocalCluster."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from localdev.cluster import ClusterConfig, LocalCluster, Proc, free_port
from tests.support.servers import nats_server_binary
from tests.support.wait import eventually

REPLICAS = {"scheduler-2": "scheduler", "gateway-2": "gateway"}


class NatsNode:
    def __init__(self, index: int, root: Path, ports: list[tuple[int, int, int]]) -> None:
        self.index = index
        self.client, self.route, self.monitor = ports[index]
        self.store = root / f"nats-{index}"
        self.store.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f"nats://127.0.0.1:{r}" for _, r, _ in ports)
        self.conf = root / f"nats-{index}.conf"
        self.conf.write_text(
            f"server_name: n{index}\n"
            f"listen: 127.0.0.1:{self.client}\n"
            f"http: 127.0.0.1:{self.monitor}\n"
            f'jetstream {{ store_dir: "{self.store}", sync_interval: always }}\n'
            f"cluster {{ name: dante-test, listen: 127.0.0.1:{self.route}, routes: [{routes}] }}\n"
        )
        self.log = root / f"nats-{index}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def jetstream_ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(
                f"http://127.0.0.1:{self.monitor}/healthz?js-enabled-only=true", timeout=2
            )
            return r.status_code == 200
        return False

    def meta_leader(self) -> str | None:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            jsz = httpx.get(f"http://127.0.0.1:{self.monitor}/jsz", timeout=2).json()
            return jsz["meta_cluster"].get("leader")
        return None


class ScaleOutCluster(LocalCluster):
    def __init__(self, config: ClusterConfig, nodes: int = 3) -> None:
        config.nats_auth = False  # plain cluster; per-provider NATS users are tested elsewhere
        config.extra_env = {
            **config.extra_env,
            "DANTE_NATS_STREAM_REPLICAS": str(nodes),
            # a killed scheduler's unacked messages come back in seconds, not the default 30 s
            "DANTE_SCHEDULER_ACK_WAIT_SECONDS": "5",
            "DANTE_SCHEDULER_DISPATCH_TIMEOUT_SECONDS": "20",
        }
        super().__init__(config)
        root = self.data / "nats-cluster"
        root.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port(), free_port()) for _ in range(nodes)]
        self.nodes = [NatsNode(i, root, ports) for i in range(nodes)]

    # the second scheduler and gateway are listed under their service in every static map
    def _env(self, prefix: str, name: str, **fields: str) -> dict[str, str]:
        env = super()._env(prefix, name, **fields)
        key = prefix + "STATIC_SERVICES"
        static = json.loads(env[key])
        for replica, service in REPLICAS.items():
            if replica in static:
                static[service] = static[service] + static.pop(replica)
        env[key] = json.dumps(static)
        return env

    def _start_nats(self) -> None:
        for node in self.nodes:
            node.start()
        self.nats_url = ",".join(n.url for n in self.nodes)
        eventually(
            lambda: all(n.jetstream_ready() for n in self.nodes) and self.nodes[0].meta_leader(),
            limit=60,
            interval=0.2,
            what="the NATS cluster electing a JetStream meta leader",
        )

    def start(self, timeout: float = 90.0) -> None:
        for replica in REPLICAS:
            self.ports[replica] = free_port()
        super().start(timeout)
        try:
            for replica, service in REPLICAS.items():
                self._start_replica(replica, service, time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _start_replica(self, replica: str, service: str, deadline: float) -> Proc:
        package, prefix = {
            "scheduler": ("scheduler", "DANTE_SCHEDULER_"),
            "gateway": ("api_gateway", "DANTE_GATEWAY_"),
        }[service]
        fields: dict[str, str] = {}
        if service == "scheduler":
            fields["DATABASE_URL"] = self.config.database_urls["scheduler"]
            fields.update(self._liveness_env("scheduler"))
            fields.update(self._service_client_env("scheduler"))
        env = self._env(prefix, replica, **fields)
        proc = self._spawn(
            replica, [sys.executable, "-m", package, "serve"], env, self.ports[replica]
        )
        self._wait_ready(proc, deadline)
        return proc

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.ports[g]}" for g in ("gateway", "gateway-2")]

    def stop(self, grace: float = 15.0) -> None:
        super().stop(grace)
        for node in self.nodes:
            node.stop()
