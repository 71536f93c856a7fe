"""``dante-provider check``: is this host ready to run the daemon? One line per dependency."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import httpx

from provider_daemon.client import GatewayClient
from provider_daemon.inventory import Nvml, collect
from provider_daemon.settings import DaemonSettings
from shared.nats import UserCredentials, auth_options
from shared.nats_auth import KeyPair

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    status: str
    detail: str


def check_nvml(require_gpu: bool) -> Check:
    nvml = Nvml()
    try:
        if not nvml.available:
            return Check("nvml", FAIL if require_gpu else WARN, f"CPU only: {nvml.reason}")
        inv = collect(nvml)
        sick = [g.index for g in inv.gpus if not g.healthy]
        detail = f"{len(inv.gpus)} GPU(s), driver {inv.driver_version}, CUDA {inv.cuda_version}"
        if sick:
            return Check("nvml", WARN, f"{detail}; unhealthy: {sick}")
        return Check("nvml", OK, detail)
    finally:
        nvml.close()


def check_state_dir(s: DaemonSettings) -> Check:
    try:
        s.state_dir.mkdir(parents=True, exist_ok=True)
        probe = s.state_dir / f".check-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
        return Check("state dir", OK, str(s.state_dir.resolve()))
    except OSError as exc:
        return Check("state dir", FAIL, f"{s.state_dir}: {exc.strerror or exc}")


async def nats_user(s: DaemonSettings, http: httpx.AsyncClient) -> UserCredentials | None:
    """The provider's own NATS user, as ``run`` gets it; None where NATS has no users or the
    key is refused (the credentials line says why)."""
    if not s.api_key:
        return None
    key = KeyPair.generate("user")
    try:
        issued = await GatewayClient(s.gateway_url, s.api_key, http).nats_credentials(
            key.public_key
        )
    except Exception:
        return None
    return UserCredentials(key, issued["jwt"], issued["inbox_prefix"]) if issued else None


async def check_nats(s: DaemonSettings, creds: UserCredentials | None = None) -> Check:
    import nats

    async def quiet(_: Exception) -> None:  # the table reports the failure, once
        return None

    auth = auth_options(creds)
    try:
        # nats-py keeps retrying a refused connection on its own; the outer bound ends that.
        nc = await asyncio.wait_for(
            nats.connect(
                s.nats_url,
                connect_timeout=5,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=quiet,
                **auth,
            ),
            10,
        )
    except TimeoutError:
        return Check("nats", FAIL, f"{s.nats_url}: no answer in 10 s")
    except Exception as exc:
        return Check("nats", FAIL, f"{s.nats_url}: {type(exc).__name__} {exc}".strip())
    try:
        if creds is not None:  # a provider's user may read its tasks' stream, nothing wider
            await nc.jetstream().stream_info("TASKS")
            return Check("nats", OK, f"{s.nats_url} (as this provider's user, TASKS stream)")
        info = await nc.jetstream().account_info()
        return Check("nats", OK, f"{s.nats_url} (JetStream, {info.streams} streams)")
    except Exception as exc:
        return Check("nats", FAIL, f"{s.nats_url}: JetStream unavailable: {exc}")
    finally:
        await nc.close()


async def check_gateway(s: DaemonSettings, http: httpx.AsyncClient) -> list[Check]:
    base = s.gateway_url.rstrip("/")
    try:
        r = await http.get(f"{base}/health")
        gateway = Check("gateway", OK if r.status_code == 200 else FAIL, f"{base}: {r.status_code}")
    except httpx.HTTPError as exc:
        return [
            Check("gateway", FAIL, f"{base}: {type(exc).__name__} {exc}".strip()),
            Check("credentials", FAIL, "not checked: the gateway is unreachable"),
        ]
    if not s.api_key:
        return [gateway, Check("credentials", FAIL, "DANTE_DAEMON_API_KEY is not set")]
    try:
        r = await http.post(f"{base}/api/v1/auth/token", json={"api_key": s.api_key})
    except httpx.HTTPError as exc:
        return [gateway, Check("credentials", FAIL, f"token exchange failed: {exc}")]
    if r.status_code == 200:
        body = r.json()
        return [gateway, Check("credentials", OK, f"provider {body.get('provider_id')}")]
    if r.status_code == 401:
        return [gateway, Check("credentials", FAIL, "the gateway refused this API key")]
    return [gateway, Check("credentials", FAIL, f"token exchange answered {r.status_code}")]


async def check_docker(s: DaemonSettings) -> Check:
    """Only container jobs need it: an engine that cannot be reached is a warning."""
    try:
        import aiodocker

        async with aiodocker.Docker(url=s.docker_url) as docker:
            version = await asyncio.wait_for(docker.version(), 5)
        return Check("docker", OK, f"Engine {version.get('Version')} API {version['ApiVersion']}")
    except (AssertionError, ValueError):  # aiodocker found no socket to talk to
        return Check("docker", WARN, "no Docker engine socket: container jobs unavailable")
    except Exception as exc:
        return Check("docker", WARN, f"container jobs unavailable: {type(exc).__name__} {exc}")


async def run_checks(s: DaemonSettings, require_gpu: bool = False) -> list[Check]:
    out = [check_nvml(require_gpu), check_state_dir(s)]
    async with httpx.AsyncClient(timeout=10) as http:
        gateway = await check_gateway(s, http)
        creds = await nats_user(s, http) if all(c.status == OK for c in gateway) else None
    out += [await check_nats(s, creds), *gateway, await check_docker(s)]
    return out
