"""The daemon's life: register, get a NATS user, connect; then the health server, heartbeats,
the task runner and JWT renewal in one TaskGroup, until the one stop event (SIGTERM) drains it.

The parts: fence.py (what is kept on disk), heartbeat.py (registration and heartbeats),
tasks.py (intake, runs, drain), reporting.py (statuses), renewal.py (the NATS JWT),
health.py (the HTTP server), executor.py (``supervise`` and the process executor).
"""

from __future__ import annotations

import asyncio

import httpx
import structlog

from provider_daemon.client import GatewayClient
from provider_daemon.docker_executor import DockerExecutor, engine_problem
from provider_daemon.executor import Executor, ProcessExecutor
from provider_daemon.fence import Fence, Unreported
from provider_daemon.health import health_app, health_server
from provider_daemon.heartbeat import STARTUP, Registration, refused
from provider_daemon.inventory import Nvml, collect
from provider_daemon.jobio import Transfers
from provider_daemon.orphans import Containers, ProcessGroups
from provider_daemon.renewal import renew_nats_jwt
from provider_daemon.reporting import Reporter
from provider_daemon.settings import DaemonSettings
from provider_daemon.startgate import StartGate
from provider_daemon.tasks import TaskRunner
from shared.app import service_state
from shared.contracts import AttemptRef, task_subject
from shared.loops import retry
from shared.nats import PullConsumer, UserCredentials, close_nats, connect
from shared.nats_auth import KeyPair

log = structlog.get_logger(__name__)


def executors(
    s: DaemonSettings, groups: ProcessGroups | None = None, containers: Containers | None = None
) -> dict[str, Executor]:
    docker = DockerExecutor(s.docker_url, s.docker_pull_timeout_seconds, s.docker_pull, containers)
    return {"script": ProcessExecutor(groups), "container": docker}


async def run(settings: DaemonSettings, stop: asyncio.Event, nvml: Nvml | None = None) -> None:
    """Run the daemon until ``stop`` is set (raises ``shared.loops.Stopped`` if that happens
    before it is registered and connected, ``CredentialsRejected`` for a refused API key)."""
    s = settings
    fence = Fence(s.state_dir / "seen-tasks.jsonl", s.fence_keep)
    fence.load()
    unreported = Unreported(s.state_dir / "unreported-statuses.jsonl")
    unreported.load()
    # jobs a previous run left running (killed with it) go before any task is taken
    groups = ProcessGroups(s.state_dir / "process-groups.json")
    groups.reap()
    containers = Containers(s.state_dir / "containers.json")
    nvml = nvml or Nvml()
    async with (
        httpx.AsyncClient(timeout=10) as http,
        httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10)) as io_http,
    ):
        client = GatewayClient(s.gateway_url, s.api_key, http)
        inventory = collect(nvml)
        # container jobs are placed only on a host whose Docker engine answers
        docker_problem = await engine_problem(s.docker_url)
        inventory.docker = docker_problem is None
        if docker_problem is not None:
            log.info("daemon.no_docker", reason=docker_problem)
        else:  # what a previous run left goes before any task is taken; no engine: next start
            await containers.reap(s.docker_url)
        # Registration lists the attempts whose final status a previous run still owes, so the
        # scheduler waits for those reports instead of requeueing the attempts.
        registration = Registration(
            s, client, inventory, held=lambda: [_ref(k) for k in unreported.attempts()]
        )
        provider_id = await registration.register_until_done(stop)
        # The nkey is made here and its seed never leaves this process; the platform signs
        # a JWT for its public half that allows this provider's own tasks only.
        key = KeyPair.generate("user")
        issued = await retry(
            "nats_credentials",
            lambda: client.nats_credentials(key.public_key),
            stop=stop,
            backoff=STARTUP,
            give_up=refused,
        )
        creds = (
            None if issued is None else UserCredentials(key, issued["jwt"], issued["inbox_prefix"])
        )
        nc = await connect(s.nats_url, f"daemon-{provider_id}", creds)
        try:
            js = nc.jetstream()
            # Streams are the services' to create (a daemon's NATS user may not): wait for them.
            await retry("streams", lambda: js.stream_info("TASKS"), stop=stop, backoff=STARTUP)
            app = health_app(s, nc, lambda: client.provider_id is not None)
            ready = service_state(app).ready_checks
            reporter = Reporter(js, unreported)
            gate = StartGate(nc, s.start_request_timeout_seconds) if s.ask_before_start else None
            runner = TaskRunner(
                s, js, Transfers(io_http), executors(s, groups, containers), fence, reporter, gate
            )
            registration.held = runner.held
            # beats over NATS only as a NATS user of this provider's own: on a server without
            # per-provider users anyone could send them, so they stay on the gateway's auth
            registration.nats = nc if creds is not None else None
            consumer = PullConsumer(
                js,
                "TASKS",
                f"daemon-{provider_id}",
                task_subject(provider_id),
                runner.accept,
                batch=8,
                idle_poll=1.0,
                ack_wait=60,
                ready=ready,
            )
            server = health_server(app, s)
            taking = asyncio.Event()  # the consumer's own stop: set first, so drain is two-step
            async with asyncio.TaskGroup() as tg:
                tg.create_task(server.serve())
                tg.create_task(
                    registration.heartbeats(nvml, lambda: len(runner.running), stop, ready)
                )
                tg.create_task(runner.serve(consumer, taking))
                tg.create_task(reporter.resend())
                tg.create_task(runner.resend_logs(stop))
                if creds is not None and issued is not None:
                    tg.create_task(renew_nats_jwt(client, creds, issued["expires_at"], stop, ready))
                log.info("daemon.ready", provider_id=provider_id)
                await stop.wait()
                taking.set()
                await runner.drain()
                server.should_exit = True
        finally:
            await close_nats(nc)
            nvml.close()
    log.info("daemon.stopped")


def _ref(key: tuple[str, int]) -> AttemptRef:
    return AttemptRef(job_id=key[0], attempt=key[1])
