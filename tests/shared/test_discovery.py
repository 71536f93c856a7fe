"""shared.discovery against a fake Consul agent that speaks Consul's documented HTTP API.

No Consul agent can be installed on these machines, so ``FakeConsul`` implements the three
endpoints the adapter uses, with Consul's shapes (py-consul is the real client in every test):

* ``PUT /v1/agent/service/register``: JSON body ``Name``/``ID``/``Address``/``Port`` and
  ``Check`` (or ``Checks``) with ``HTTP``/``Interval``/``Timeout``/
  ``DeregisterCriticalServiceAfter``; keys case-insensitive, as Consul decodes them.
* ``PUT /v1/agent/service/deregister/{id}``: 404 for an unknown id.
* ``GET /v1/health/service/{name}?passing=1``: ``[{Node, Service, Checks}]`` with an
  ``X-Consul-Index`` header.

Like Consul, the fake decides passing/critical by calling each registered HTTP check URL (2xx
passing, 429 warning, anything else or no answer critical). Consul runs checks every
``Interval``; the fake runs them when asked for health, which gives the same answers without
waiting for a timer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from shared.discovery import (
    ConsulDiscovery,
    ServiceInstance,
    StaticDiscovery,
    make_discovery,
)
from shared.errors import ServiceUnavailable
from shared.settings import ServiceSettings
from tests.support.servers import free_port

NODE = {"ID": "f1e2d3c4", "Node": "dante-consul", "Address": "127.0.0.1", "Datacenter": "dc1"}


class ThreadServer:
    """An ASGI app under uvicorn on a free port, in its own thread and event loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def _lower_keys(body: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in body.items()}


class FakeConsul:
    """State and routes of one fake agent (single node, no ACLs)."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.registrations: list[dict[str, Any]] = []  # raw bodies, as sent
        self.health_queries = 0
        self.fail_with: int | None = None  # answer every call with this status (a sick agent)
        # Hold health answers until ``gate`` is set (see test_resolve_runs_off_the_event_loop).
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()
        self.gate_opened_in_time: bool | None = None
        self.index = 1
        self.app = self._build()

    def reset(self) -> None:
        self.services.clear()
        self.registrations.clear()
        self.health_queries = 0
        self.fail_with = None
        self.gate = None
        self.waiting.clear()
        self.gate_opened_in_time = None

    def _build(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
            # The checker lives in the fake's own loop (uvicorn's thread), like Consul's prober.
            async with httpx.AsyncClient() as client:
                app.state.checker = client
                yield

        app = FastAPI(lifespan=lifespan)

        @app.middleware("http")
        async def outage(request: Request, call_next):  # type: ignore[no-untyped-def]
            if self.fail_with is not None:
                return Response("rpc error: No cluster leader", status_code=self.fail_with)
            return await call_next(request)

        @app.put("/v1/agent/service/register")
        async def register(request: Request) -> Response:
            raw = await request.json()
            self.registrations.append(raw)
            body = _lower_keys(raw)
            checks = body.get("checks") or ([body["check"]] if body.get("check") else [])
            checks = [_lower_keys(c) for c in checks]
            for check in checks:
                if "http" in check and not check.get("interval"):
                    return Response(
                        "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP or "
                        "UDP checks",
                        status_code=400,
                    )
            service_id = body.get("id") or body["name"]
            self.services[service_id] = {
                "ID": service_id,
                "Service": body["name"],
                "Address": body.get("address", ""),
                "Port": body.get("port", 0),
                "Tags": body.get("tags") or [],
                "Meta": body.get("meta") or {},
                "checks": checks,
            }
            self.index += 1
            return Response(status_code=200)

        @app.put("/v1/agent/service/deregister/{service_id}")
        async def deregister(service_id: str) -> Response:
            if self.services.pop(service_id, None) is None:
                return Response(f'Unknown service ID "{service_id}"', status_code=404)
            self.index += 1
            return Response(status_code=200)

        @app.get("/v1/health/service/{name}")
        async def health(name: str, request: Request, passing: str | None = None) -> Response:
            self.health_queries += 1
            if self.gate is not None:
                self.waiting.set()
                self.gate_opened_in_time = await asyncio.to_thread(self.gate.wait, 10)
            checker: httpx.AsyncClient = request.app.state.checker
            entries = []
            for svc in [s for s in self.services.values() if s["Service"] == name]:
                checks = [
                    {
                        "Node": NODE["Node"],
                        "CheckID": "serfHealth",
                        "Name": "Serf Health Status",
                        "Status": "passing",
                        "ServiceID": "",
                        "ServiceName": "",
                    }
                ]
                for i, check in enumerate(svc["checks"]):
                    status, output = await self._probe(checker, check)
                    checks.append(
                        {
                            "Node": NODE["Node"],
                            "CheckID": f"service:{svc['ID']}" + (f":{i + 1}" if i else ""),
                            "Name": f"Service '{svc['Service']}' check",
                            "Status": status,
                            "Output": output,
                            "ServiceID": svc["ID"],
                            "ServiceName": svc["Service"],
                            "Type": "http",
                        }
                    )
                if (
                    passing
                    and passing not in ("0", "false")
                    and any(c["Status"] != "passing" for c in checks)
                ):
                    continue
                service = {k: v for k, v in svc.items() if k != "checks"}
                entries.append({"Node": NODE, "Service": service, "Checks": checks})
            return JSONResponse(entries, headers={"X-Consul-Index": str(self.index)})

        return app

    @staticmethod
    async def _probe(client: httpx.AsyncClient, check: dict[str, Any]) -> tuple[str, str]:
        if "http" not in check:
            return "critical", "unsupported check type in the fake"
        timeout = float(str(check.get("timeout", "10s")).rstrip("s"))
        try:
            resp = await client.get(check["http"], timeout=timeout)
        except httpx.HTTPError as exc:
            return "critical", f"Get {check['http']!r}: {type(exc).__name__}"
        output = f"HTTP GET {check['http']}: {resp.status_code} Output: {resp.text[:100]}"
        if 200 <= resp.status_code < 300:
            return "passing", output
        if resp.status_code == 429:
            return "warning", output
        return "critical", output


class HealthApp:
    """A service instance's /health, with a switch to make it sick."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.hits = 0
        self.app = FastAPI()

        @self.app.get("/health")
        async def health() -> Response:
            self.hits += 1
            return JSONResponse({"status": "ok" if self.status < 300 else "sick"}, self.status)


class FakeClock:
    """Stands in for the ``time`` module inside shared.discovery only (the cache's clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def consul_server() -> Iterator[tuple[FakeConsul, ThreadServer]]:
    fake = FakeConsul()
    server = ThreadServer(fake.app).start()
    yield fake, server
    server.stop()


@pytest.fixture
def consul(consul_server: tuple[FakeConsul, ThreadServer]) -> FakeConsul:
    fake, _ = consul_server
    fake.reset()
    return fake


@pytest.fixture
def consul_port(consul_server: tuple[FakeConsul, ThreadServer]) -> int:
    return consul_server[1].port


@pytest.fixture(scope="module")
def healthy() -> Iterator[tuple[HealthApp, ThreadServer]]:
    app = HealthApp(200)
    server = ThreadServer(app.app).start()
    yield app, server
    server.stop()


@pytest.fixture(scope="module")
def healthy2() -> Iterator[tuple[HealthApp, ThreadServer]]:
    app = HealthApp(200)
    server = ThreadServer(app.app).start()
    yield app, server
    server.stop()


@pytest.fixture(scope="module")
def sick() -> Iterator[tuple[HealthApp, ThreadServer]]:
    app = HealthApp(503)
    server = ThreadServer(app.app).start()
    yield app, server
    server.stop()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    import shared.discovery

    fake = FakeClock()
    monkeypatch.setattr(shared.discovery, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def instance(name: str, port: int) -> ServiceInstance:
    return ServiceInstance(name, f"{name}-{uuid.uuid4().hex[:8]}", "127.0.0.1", port)


# ---------------------------------------------------------------- ConsulDiscovery


async def test_register_sends_consul_service_definition(consul: FakeConsul, consul_port: int):
    disco = ConsulDiscovery("127.0.0.1", consul_port)
    inst = instance("registry", 8002)
    await disco.register(inst)

    [raw] = consul.registrations
    body = _lower_keys(raw)
    assert body["name"] == "registry"
    assert body["id"] == inst.instance_id
    assert body["address"] == "127.0.0.1"
    assert body["port"] == 8002
    [check] = body.get("checks") or [body["check"]]
    check = _lower_keys(check)
    assert check["http"] == "http://127.0.0.1:8002/health"
    assert check["interval"] == "10s"
    assert check["timeout"] == "5s"
    assert check["deregistercriticalserviceafter"] == "1m"
    assert inst.instance_id in consul.services


async def test_register_uses_the_configured_check_timings(consul: FakeConsul, consul_port: int):
    disco = ConsulDiscovery("127.0.0.1", consul_port, check_interval="3s", deregister_after="5m")
    await disco.register(instance("scheduler", 8003))
    [check] = _lower_keys(consul.registrations[0]).get("checks")
    check = _lower_keys(check)
    assert (check["interval"], check["deregistercriticalserviceafter"]) == ("3s", "5m")


async def test_resolve_returns_only_passing_instances(
    consul: FakeConsul,
    consul_port: int,
    healthy: tuple[HealthApp, ThreadServer],
    sick: tuple[HealthApp, ThreadServer],
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    hits_before = healthy[0].hits, sick[0].hits
    await disco.register(instance("storage", healthy[1].port))
    await disco.register(instance("storage", sick[1].port))
    await disco.register(instance("storage", free_port()))  # nothing listens: critical
    await disco.register(instance("auth", healthy[1].port))  # another service

    assert await disco.resolve("storage") == [healthy[1].url]
    # The verdict came from calling each registered check URL, as Consul does.
    assert healthy[0].hits > hits_before[0]
    assert sick[0].hits > hits_before[1]


async def test_instance_becomes_resolvable_when_its_check_passes(
    consul: FakeConsul, consul_port: int, sick: tuple[HealthApp, ThreadServer]
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    await disco.register(instance("registry", sick[1].port))
    with pytest.raises(ServiceUnavailable):
        await disco.resolve("registry")
    sick[0].status = 200
    try:
        assert await disco.resolve("registry") == [sick[1].url]
    finally:
        sick[0].status = 503


async def test_resolve_round_robin_set_has_every_healthy_instance(
    consul: FakeConsul,
    consul_port: int,
    healthy: tuple[HealthApp, ThreadServer],
    healthy2: tuple[HealthApp, ThreadServer],
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    await disco.register(instance("scheduler", healthy[1].port))
    await disco.register(instance("scheduler", healthy2[1].port))
    assert sorted(await disco.resolve("scheduler")) == sorted([healthy[1].url, healthy2[1].url])


async def test_deregister_removes_the_instance(
    consul: FakeConsul,
    consul_port: int,
    healthy: tuple[HealthApp, ThreadServer],
    healthy2: tuple[HealthApp, ThreadServer],
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    first, second = instance("auth", healthy[1].port), instance("auth", healthy2[1].port)
    await disco.register(first)
    await disco.register(second)
    await disco.deregister(first)

    assert first.instance_id not in consul.services
    assert await disco.resolve("auth") == [healthy2[1].url]
    await disco.deregister(second)
    with pytest.raises(ServiceUnavailable):
        await disco.resolve("auth")


async def test_service_address_falls_back_to_the_node_address(
    consul: FakeConsul, consul_port: int, healthy: tuple[HealthApp, ThreadServer]
):
    """Consul leaves Service.Address empty when none was registered; the node's address holds."""
    async with httpx.AsyncClient() as client:
        resp = await client.put(
            f"http://127.0.0.1:{consul_port}/v1/agent/service/register",
            json={
                "Name": "gateway",
                "ID": "gateway-1",
                "Port": healthy[1].port,
                "Check": {"HTTP": f"{healthy[1].url}/health", "Interval": "10s"},
            },
        )
        assert resp.status_code == 200
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    assert await disco.resolve("gateway") == [f"http://{NODE['Address']}:{healthy[1].port}"]


async def test_resolve_cache_respects_ttl(
    consul: FakeConsul,
    consul_port: int,
    clock: FakeClock,
    healthy: tuple[HealthApp, ThreadServer],
    healthy2: tuple[HealthApp, ThreadServer],
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=2.0)
    await disco.register(instance("registry", healthy[1].port))
    assert await disco.resolve("registry") == [healthy[1].url]
    assert consul.health_queries == 1

    # Within the TTL the cached set answers, even though Consul now knows a second instance.
    await disco.register(instance("registry", healthy2[1].port))
    clock.now += 1.9
    assert await disco.resolve("registry") == [healthy[1].url]
    assert consul.health_queries == 1

    # Past the TTL Consul is asked again.
    clock.now += 0.2
    assert sorted(await disco.resolve("registry")) == sorted([healthy[1].url, healthy2[1].url])
    assert consul.health_queries == 2


async def test_resolve_returns_a_copy_of_the_cached_set(
    consul: FakeConsul, consul_port: int, clock: FakeClock, healthy: tuple[HealthApp, ThreadServer]
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=60)
    await disco.register(instance("storage", healthy[1].port))
    (await disco.resolve("storage")).clear()
    assert await disco.resolve("storage") == [healthy[1].url]


async def test_consul_outage_after_a_resolve_serves_the_stale_set(
    clock: FakeClock, healthy: tuple[HealthApp, ThreadServer]
):
    fake = FakeConsul()
    server = ThreadServer(fake.app).start()
    disco = ConsulDiscovery("127.0.0.1", server.port, cache_ttl=1.0)
    try:
        await disco.register(instance("scheduler", healthy[1].port))
        assert await disco.resolve("scheduler") == [healthy[1].url]
    finally:
        server.stop()  # Consul is gone: connections are refused from here on

    clock.now += 10
    assert await disco.resolve("scheduler") == [healthy[1].url]
    # A service never resolved before has nothing stale to fall back on.
    with pytest.raises(ServiceUnavailable):
        await disco.resolve("storage")


async def test_consul_errors_after_a_resolve_serve_the_stale_set(
    consul: FakeConsul, consul_port: int, clock: FakeClock, healthy: tuple[HealthApp, ThreadServer]
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=1.0)
    await disco.register(instance("gateway", healthy[1].port))
    assert await disco.resolve("gateway") == [healthy[1].url]

    consul.fail_with = 500  # e.g. a server that lost its leader
    clock.now += 10
    assert await disco.resolve("gateway") == [healthy[1].url]
    with pytest.raises(ServiceUnavailable):
        await disco.resolve("auth")


async def test_no_instance_is_service_unavailable(
    consul: FakeConsul, consul_port: int, sick: tuple[HealthApp, ThreadServer]
):
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    with pytest.raises(ServiceUnavailable) as err:
        await disco.resolve("registry")
    assert err.value.status_code == 503
    await disco.register(instance("registry", sick[1].port))
    with pytest.raises(ServiceUnavailable):  # registered, but critical
        await disco.resolve("registry")


async def test_consul_down_from_the_start_is_service_unavailable():
    disco = ConsulDiscovery("127.0.0.1", free_port(), cache_ttl=0)
    with pytest.raises(ServiceUnavailable):
        await disco.resolve("auth")


async def test_service_runtime_registers_on_start_and_deregisters_on_stop(
    consul: FakeConsul, consul_port: int
):
    """A real service app: its lifespan registers, Consul's check reaches its /health."""
    from shared.app import create_service_app, service_runtime

    settings = ServiceSettings(
        service_name="registry",
        host="127.0.0.1",
        port=free_port(),
        discovery="consul",
        consul_host="127.0.0.1",
        consul_port=consul_port,
    )

    async def no_jwks() -> dict[str, Any]:
        return {"keys": []}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        async with service_runtime(app, settings, jwks=no_jwks):
            yield

    app = create_service_app(settings, title="probe", lifespan=lifespan)
    server = ThreadServer(app, settings.port).start()
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    try:
        [registered] = consul.services.values()
        assert registered["Service"] == "registry"
        assert registered["checks"][0]["http"] == f"{settings.base_url}/health"
        assert await disco.resolve("registry") == [settings.base_url]
    finally:
        server.stop()
    assert consul.services == {}
    with pytest.raises(ServiceUnavailable):
        await disco.resolve("registry")


async def test_resolve_runs_off_the_event_loop(
    consul: FakeConsul, consul_port: int, healthy: tuple[HealthApp, ThreadServer]
):
    """py-consul is synchronous; resolve must not hold the loop while Consul answers.

    The fake holds its answer until this test's coroutine opens a gate, which it can only do
    if the loop is free while ``resolve`` waits. (The fake gives up after 10 s so a blocked loop
    fails the test instead of hanging it.)
    """
    disco = ConsulDiscovery("127.0.0.1", consul_port, cache_ttl=0)
    await disco.register(instance("auth", healthy[1].port))
    consul.gate = threading.Event()
    try:
        resolving = asyncio.create_task(disco.resolve("auth"))
        assert await asyncio.to_thread(consul.waiting.wait, 10)
        consul.gate.set()
        assert await resolving == [healthy[1].url]
        assert consul.gate_opened_in_time is True
    finally:
        consul.gate = None


# ---------------------------------------------------------------- StaticDiscovery


async def test_static_resolves_configured_urls_without_trailing_slash():
    disco = StaticDiscovery({"auth": ["http://a:8090/", "http://b:8090"]})
    assert await disco.resolve("auth") == ["http://a:8090", "http://b:8090"]


async def test_static_unknown_or_empty_service_is_unavailable():
    disco = StaticDiscovery({"auth": []})
    for name in ("auth", "storage"):
        with pytest.raises(ServiceUnavailable):
            await disco.resolve(name)


async def test_static_register_is_a_noop_and_answers_are_copies():
    disco = StaticDiscovery({"registry": ["http://r:8002"]})
    await disco.register(instance("registry", 9999))
    (await disco.resolve("registry")).append("http://evil:1")
    assert await disco.resolve("registry") == ["http://r:8002"]
    await disco.deregister(instance("registry", 9999))
    await disco.close()


def test_make_discovery_follows_settings(consul_port: int):
    static = make_discovery(ServiceSettings(static_services={"auth": ["http://x:1"]}))
    assert isinstance(static, StaticDiscovery)
    consul = make_discovery(
        ServiceSettings(discovery="consul", consul_host="127.0.0.1", consul_port=consul_port)
    )
    assert isinstance(consul, ConsulDiscovery)


def test_default_static_map_covers_every_service():
    settings = ServiceSettings()
    assert set(settings.static_services) >= {"gateway", "auth", "registry", "scheduler", "storage"}
