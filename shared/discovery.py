"""Service discovery: one small interface, a static map (local default) and Consul."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import structlog

from shared.errors import ServiceUnavailable
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ServiceInstance:
    name: str
    instance_id: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Discovery(Protocol):
    async def register(self, instance: ServiceInstance) -> None: ...

    async def deregister(self, instance: ServiceInstance) -> None: ...

    async def resolve(self, service: str) -> list[str]:
        """Base URLs of the instances of ``service`` that are currently healthy."""
        ...

    async def close(self) -> None: ...


class StaticDiscovery:
    """A fixed map from service name to base URLs; registering is a no-op."""

    def __init__(self, services: dict[str, list[str]]) -> None:
        self._services = {k: [u.rstrip("/") for u in v] for k, v in services.items()}

    async def register(self, instance: ServiceInstance) -> None:
        return None

    async def deregister(self, instance: ServiceInstance) -> None:
        return None

    async def resolve(self, service: str) -> list[str]:
        urls = self._services.get(service)
        if not urls:
            raise ServiceUnavailable(f"no instance of {service!r} is configured")
        return list(urls)

    async def close(self) -> None:
        return None


class ConsulDiscovery:
    """Consul through py-consul's agent and health endpoints.

    py-consul's client is synchronous (its asyncio flavour needs aiohttp), so calls run in a
    thread; answers to ``resolve`` are cached for ``cache_ttl`` seconds because the gateway
    resolves on every request and the set of instances changes on the scale of seconds.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8500,
        *,
        check_interval: str = "10s",
        deregister_after: str = "1m",
        cache_ttl: float = 2.0,
    ) -> None:
        import consul

        self._consul = consul.Consul(host=host, port=port)
        self._check_interval = check_interval
        self._deregister_after = deregister_after
        self._cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def register(self, instance: ServiceInstance) -> None:
        import consul

        check = consul.Check.http(
            f"{instance.url}/health",
            interval=self._check_interval,
            timeout="5s",
            deregister=self._deregister_after,
        )
        await asyncio.to_thread(
            self._consul.agent.service.register,
            instance.name,
            service_id=instance.instance_id,
            address=instance.host,
            port=instance.port,
            check=check,
        )
        log.info("discovery.registered", service=instance.name, instance=instance.instance_id)

    async def deregister(self, instance: ServiceInstance) -> None:
        await asyncio.to_thread(self._consul.agent.service.deregister, instance.instance_id)
        log.info("discovery.deregistered", service=instance.name, instance=instance.instance_id)

    async def resolve(self, service: str) -> list[str]:
        cached = self._cache.get(service)
        now = time.monotonic()
        if cached and now - cached[0] < self._cache_ttl:
            return list(cached[1])
        try:
            _, nodes = await asyncio.to_thread(self._consul.health.service, service, passing=True)
        except Exception as exc:
            if cached:  # Consul hiccup: the last known set beats no answer at all.
                log.warning("discovery.stale", service=service, error=str(exc))
                return list(cached[1])
            raise ServiceUnavailable(f"discovery failed for {service!r}") from exc
        urls = []
        for node in nodes:
            svc = node["Service"]
            address = svc.get("Address") or node["Node"]["Address"]
            urls.append(f"http://{address}:{svc['Port']}")
        if not urls:
            raise ServiceUnavailable(f"no healthy instance of {service!r}")
        self._cache[service] = (now, urls)
        return list(urls)

    async def close(self) -> None:
        return None


def make_discovery(settings: ServiceSettings) -> Discovery:
    if settings.discovery == "consul":
        return ConsulDiscovery(settings.consul_host, settings.consul_port)
    return StaticDiscovery(settings.static_services)
