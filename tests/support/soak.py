"""The fault soak: many short jobs from several users through the gateway while components are
SIGKILLed and restarted, then an exact account of what happened to every submission.

Everything is real: nats-server from the wheel, every service and three provider daemons (the
NVML double of ``tests/support/gpu_daemon.py``) as processes, SQLite or a throwaway PostgreSQL
cluster (two scheduler replicas on it) that is itself aborted and restarted. Used by
``bench/soak.py`` (1,000 jobs, repeated runs) and by ``tests/e2e/test_soak.py`` (a small one in
``make test``).

How executions are counted: every job's script appends ``<seq> <job id> <attempt> <epoch>`` to
one file before it sleeps, so each start of a job's code is one line (a SIGKILLed daemon's job
processes live on in their own session; their line was written at start).

Threads: the chaos (kill, restart, wait ready) runs in the calling thread, because localdev ties
every child to the thread that spawned it (``PR_SET_PDEATHSIG``); the clients run an asyncio
loop in a second thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from localdev.cluster import ClusterConfig, LocalCluster, Proc
from shared.contracts import TERMINAL_STATES
from tests.support import servers
from tests.support.accounts import PASSWORD
from tests.support.pg_control import ControlledPostgres, controlled_postgres

FETCH_RACE_S = 1.0
"""A stale start this soon after the requeue is reported apart: before the start gate (the
daemon asks the scheduler before starting) it was the fetch-vs-delete race; with it, only an
attempt told to start just before it was requeued (started, then cancelled) lands here."""

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("daemon", "scheduler", "nats", "gateway")
PG_KINDS = (*KINDS, "postgres")
# A second execution of the same attempt counts as explained when an event of that attempt says
# the task was delivered again (at-least-once delivery); these are the words looked for.
EXPLAIN_WORDS = ("redeliver", "at-least-once", "at least once", "delivered again", "ran again")
RETRIED = frozenset({429, 500, 502, 503, 504})
AFTER_OUTAGE = 5.0  # an answer this long after a restart's ready still counts as "while down"


@dataclass
class SoakConfig:
    data_dir: Path
    jobs: int = 1000
    users: int = 4
    daemons: int = 3
    dialect: str = "sqlite"  # or "postgres": own PostgreSQL, two schedulers, PostgreSQL killed too
    seed: int = 0
    rate: float = 10.0  # submissions per second, all users together (within a tranche)
    in_flight: int = 4  # concurrent submissions per user
    # kill rounds (each kind once, random order; submissions come in tranches, one after each
    # kill); None: keep killing until the paced intake ends
    rounds: int | None = 2
    gap: tuple[float, float] = (3.0, 8.0)  # seconds between one restart's ready and the next kill
    down: tuple[float, float] = (0.5, 4.0)  # seconds a killed component stays down
    # per kind, overriding ``down``: nats-server stays away past the gateway's 5 s publish
    # timeout, so submissions meet the "503, but was it published?" case
    down_by_kind: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"nats": (6.0, 8.0)}
    )
    job_sleep: float = 0.2
    max_tasks: int = 8  # per daemon
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0
    ack_wait: float = 5.0  # scheduler JetStream ack wait (a killed replica's messages come back)
    dispatch_timeout: float = 20.0
    settle_limit: float = 60.0  # stop waiting for jobs to end after this long without progress
    retry_for: float = 120.0  # a client gives up a submission after retrying this long
    request_timeout: float = 10.0


@dataclass
class Answer:
    t0: float
    t1: float
    what: str  # submit | read
    status: int | None  # None: no HTTP answer (see error)
    error: str | None = None  # refused | timeout | <exception name>
    retry_after: str | None = None


@dataclass
class Submission:
    seq: int
    user: int
    job_id: str | None = None  # from the 202
    job_ids: list[str] = field(default_factory=list)  # every 202's id (retries included)
    tries: list[str] = field(default_factory=list)  # "503", "timeout", "refused", "202"...
    rejected: str | None = None  # a 4xx other than 429: not retried


@dataclass
class Outage:
    kind: str
    target: str
    killed_at: float
    ready_at: float | None = None


# --- the cluster --------------------------------------------------------------------------------


class SoakCluster(LocalCluster):
    """localdev's cluster, with daemons on the NVML double, an optional second scheduler, and
    SIGKILL + restart of any process (same command, environment, port and data)."""

    def __init__(self, config: ClusterConfig, schedulers: int = 1, max_tasks: int = 8) -> None:
        super().__init__(config)
        self.launch: dict[str, tuple[list[str], dict[str, str], int]] = {}
        self.schedulers = schedulers
        self.max_tasks = max_tasks
        self.pg: ControlledPostgres | None = None

    def _env(self, prefix: str, name: str, **fields: str) -> dict[str, str]:
        env = super()._env(prefix, name, **fields)
        key = prefix + "STATIC_SERVICES"
        static = json.loads(env[key])
        if "scheduler-2" in static:  # the replica is listed under its service
            static["scheduler"] = static["scheduler"] + static.pop("scheduler-2")
        env[key] = json.dumps(static)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
        if name.startswith("daemon"):
            argv = [sys.executable, "-m", "tests.support.gpu_daemon"]
            env = {
                **env,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
                "DANTE_DAEMON_MAX_CONCURRENT_TASKS": str(self.max_tasks),
            }
        self.launch[name] = (argv, env, port)
        return super()._spawn(name, argv, env, port)

    def start(self, timeout: float = 120.0) -> None:
        """localdev's start, but the daemons (and a second scheduler) are spawned together and
        then waited for, instead of one after another: each takes seconds to be ready on a
        loaded machine, and the soak boots three."""
        if self.schedulers > 1:
            self.ports["scheduler-2"] = servers.free_port()
        daemons, self.config.daemons = self.config.daemons, 0
        try:
            super().start(timeout)
        finally:
            self.config.daemons = daemons
        try:
            deadline = time.monotonic() + timeout
            started: list[Proc] = []
            if self.schedulers > 1:
                env = self._env(
                    "DANTE_SCHEDULER_",
                    "scheduler-2",
                    DATABASE_URL=self.config.database_urls["scheduler"],
                    **self._service_client_env("scheduler"),
                )
                if self.nats_creds:
                    env["DANTE_NATS_CREDS"] = str(self.nats_creds)
                argv = [sys.executable, "-m", "scheduler", "serve"]
                started.append(self._spawn("scheduler-2", argv, env, self.ports["scheduler-2"]))
            for n in range(1, daemons + 1):  # what ``start_daemon`` does, without its wait
                name = self.daemon_name(n)
                self.providers[name] = creds = self._provision_provider(name)
                if n == 1:
                    self.provider = creds
                started.append(self._start_daemon(name, creds))
            for proc in started:
                self._wait_ready(proc, deadline)
        except BaseException:
            self.stop()
            raise

    def names(self, kind: str) -> list[str]:
        return [p.name for p in self.procs if p.name.split("-")[0] == kind]

    def _proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def kill(self, name: str) -> None:
        proc = self._proc(name)
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait()

    def restart(self, name: str, timeout: float = 120.0) -> None:
        old = self._proc(name)
        self.procs.remove(old)
        if old.log:
            old.log.close()
        argv, env, port = self.launch[name]
        proc = self._spawn(name, argv, env, port)
        deadline = time.monotonic() + timeout
        if name != "nats":
            self._wait_ready(proc, deadline)
            return
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"nats-server exited at restart: {proc.popen.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.05)
        raise TimeoutError("nats-server did not come back")


@contextlib.contextmanager
def soak_cluster(cfg: SoakConfig) -> Iterator[SoakCluster]:
    """The cluster of one run; on PostgreSQL a throwaway server this run may abort."""
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        pg: ControlledPostgres | None = None
        if cfg.dialect == "postgres":
            pg = stack.enter_context(controlled_postgres())
            urls = {
                name: servers.asyncpg_url(servers.create_database(pg.url, f"soak_{name}"))
                for name in ("auth", "registry", "scheduler", "billing")
            }
        elif cfg.dialect != "sqlite":
            raise ValueError(f"unknown dialect {cfg.dialect!r}")
        limits = ("USER_PER_SECOND", "USER_BURST", "IP_PER_SECOND", "IP_BURST")
        config = ClusterConfig(
            data_dir=cfg.data_dir,
            prefer_default_ports=False,
            log_dir=cfg.data_dir / "logs",
            heartbeat_interval=cfg.heartbeat_interval,
            heartbeat_ttl=cfg.heartbeat_ttl,
            daemons=cfg.daemons,
            database_urls=urls,
            extra_env={
                **{f"DANTE_GATEWAY_RATE_LIMIT_{n}": "1000000" for n in limits},
                "DANTE_SCHEDULER_SHUTDOWN_GRACE_SECONDS": "1",
                "DANTE_SCHEDULER_ACK_WAIT_SECONDS": str(cfg.ack_wait),
                "DANTE_SCHEDULER_DISPATCH_TIMEOUT_SECONDS": str(cfg.dispatch_timeout),
                "DANTE_DAEMON_DRAIN_GRACE_SECONDS": "2",
            },
        )
        cluster = SoakCluster(config, schedulers=2 if pg else 1, max_tasks=cfg.max_tasks)
        cluster.pg = pg
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop(grace=5.0)


# --- the clients --------------------------------------------------------------------------------


class Clients:
    """``users`` requesters submitting through the gateway with an ``Idempotency-Key`` and
    retrying 429/5xx/timeouts/refusals with the same key, plus a reader per user."""

    def __init__(self, cfg: SoakConfig, gateway: str, exec_file: Path, run_tag: str) -> None:
        self.cfg = cfg
        self.gw = gateway
        self.exec_file = exec_file
        self.tag = run_tag
        self.answers: list[Answer] = []
        self.subs = [Submission(seq, seq % cfg.users) for seq in range(cfg.jobs)]
        self.headers: list[dict[str, str]] = []
        self.intake_done = threading.Event()
        self.chaos_done = threading.Event()
        kinds = len(PG_KINDS if cfg.dialect == "postgres" else KINDS)
        self.kills_planned = cfg.rounds * kinds if cfg.rounds else 0
        self.kills_started = 0  # counted by the chaos thread
        self.tranche_at: dict[int, float] = {}
        self.stored: dict[str, dict[str, Any]] = {}  # job id → the job as last listed
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.settle_seconds = 0.0
        self.intake_seconds = 0.0

    def script(self) -> str:
        return (
            f'echo "$SOAK_SEQ $DANTE_JOB_ID $DANTE_ATTEMPT $(date +%s.%N)" >> '
            f"{shlex.quote(str(self.exec_file))}\n"
            f"sleep {self.cfg.job_sleep}\n"
        )

    async def _request(
        self, http: httpx.AsyncClient, what: str, method: str, url: str, **kw: Any
    ) -> httpx.Response | None:
        t0 = time.time()
        try:
            r = await http.request(method, url, **kw)
        except httpx.TimeoutException:
            self.answers.append(Answer(t0, time.time(), what, None, "timeout"))
            return None
        except httpx.ConnectError:
            self.answers.append(Answer(t0, time.time(), what, None, "refused"))
            return None
        except httpx.TransportError as exc:
            self.answers.append(Answer(t0, time.time(), what, None, type(exc).__name__))
            return None
        self.answers.append(
            Answer(t0, time.time(), what, r.status_code, None, r.headers.get("retry-after"))
        )
        return r

    async def _users(self, http: httpx.AsyncClient) -> None:
        for i in range(self.cfg.users):
            name = f"soak{i}-{uuid.uuid4().hex[:8]}"
            await self._setup_call(
                http,
                "/api/v1/auth/register",
                {
                    "username": name,
                    "email": f"{name}@example.com",
                    "password": PASSWORD,
                    "role": "requester",
                },
            )
            login = await self._setup_call(
                http, "/api/v1/auth/login", {"username": name, "password": PASSWORD}
            )
            self.headers.append({"authorization": f"Bearer {login.json()['access_token']}"})

    async def _setup_call(
        self, http: httpx.AsyncClient, path: str, body: dict[str, str]
    ) -> httpx.Response:
        """A set-up request, retried as any client would on a 503 (it carries Retry-After):
        seen once, a freshly started cluster's auth answered ``database_unavailable``."""
        deadline = time.monotonic() + 60
        while True:
            r = await http.post(f"{self.gw}{path}", json=body)
            if r.status_code != 503 or time.monotonic() > deadline:
                r.raise_for_status()
                return r
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    async def _submit(self, http: httpx.AsyncClient, sub: Submission) -> None:
        body = {
            "type": "script",
            "name": f"soak-{sub.seq}",
            "tags": [self.tag],
            "env": {"SOAK_SEQ": str(sub.seq)},
            "params": {"script_content": self.script()},
        }
        headers = {**self.headers[sub.user], "Idempotency-Key": f"{self.tag}-{sub.seq}"}
        give_up = time.monotonic() + self.cfg.retry_for
        backoff = 0.2
        while True:
            r = await self._request(
                http, "submit", "POST", f"{self.gw}/api/v1/jobs", json=body, headers=headers
            )
            if r is not None and r.status_code == 202:
                sub.tries.append("202")
                sub.job_id = r.json()["job_id"]
                sub.job_ids.append(sub.job_id)
                return
            if r is not None and r.status_code not in RETRIED:
                sub.tries.append(str(r.status_code))
                sub.rejected = f"{r.status_code} {r.text[:200]}"
                return
            sub.tries.append(str(r.status_code) if r is not None else self.answers[-1].error or "")
            if time.monotonic() > give_up:
                return
            wait = backoff
            if r is not None and (ra := r.headers.get("retry-after")):
                with contextlib.suppress(ValueError):
                    wait = min(float(ra), 10.0)
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, 2.0)

    async def _user_intake(self, http: httpx.AsyncClient, user: int, start: float) -> None:
        mine = [s for s in self.subs if s.user == user]
        slots = asyncio.Semaphore(self.cfg.in_flight)
        pending: set[asyncio.Task[None]] = set()
        total = self.kills_planned
        per = math.ceil(self.cfg.jobs / (total + 1)) if total else 0
        for sub in mine:
            # paced: the n-th submission overall leaves at start + n / rate
            at = start + sub.seq / self.cfg.rate
            if total:
                # a fixed number of kills: the i-th tranche of jobs leaves once the i-th kill
                # has happened, so every outage meets submissions whatever its length
                tranche = sub.seq // per
                # (the count moves in the chaos thread, which cannot set an asyncio.Event)
                while self.kills_started < tranche and not self.chaos_done.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                opened = self.tranche_at.setdefault(tranche, time.monotonic())
                at = opened + (sub.seq - tranche * per) / self.cfg.rate
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            await slots.acquire()

            async def one(s: Submission = sub) -> None:
                try:
                    await self._submit(http, s)
                finally:
                    slots.release()

            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)

    async def _reader(self, http: httpx.AsyncClient, user: int) -> None:
        """What a user's dashboard does: list recent jobs and read one, twice a second."""
        rng = random.Random(self.cfg.seed * 100 + user)
        while not self.intake_done.is_set():
            h = self.headers[user]
            await self._request(
                http, "read", "GET", f"{self.gw}/api/v1/jobs?limit=10&tag={self.tag}", headers=h
            )
            mine = [s.job_id for s in self.subs if s.user == user and s.job_id]
            if mine:
                url = f"{self.gw}/api/v1/jobs/{rng.choice(mine)}"
                await self._request(http, "read", "GET", url, headers=h)
            await asyncio.sleep(0.5)

    async def _list_all(self, http: httpx.AsyncClient) -> dict[str, dict[str, Any]] | None:
        """Every stored job of this run (all users), or None if a page did not come."""
        found: dict[str, dict[str, Any]] = {}
        for h in self.headers:
            cursor = None
            while True:
                url = f"{self.gw}/api/v1/jobs?limit=500&tag={self.tag}"
                if cursor:
                    url += f"&cursor={cursor}"
                r = await self._request(http, "read", "GET", url, headers=h)
                if r is None or r.status_code != 200:
                    return None
                page = r.json()
                for job in page["jobs"]:
                    found[job["job_id"]] = job
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        return found

    async def _settle(self, http: httpx.AsyncClient) -> None:
        """Until every accepted job is stored and terminal, or no further job has ended for
        ``settle_limit`` seconds (a slow machine still gets there; a stuck job does not)."""
        accepted = {s.job_id for s in self.subs if s.job_id}
        t0 = progress_at = time.monotonic()
        done = -1
        while True:
            found = await self._list_all(http)
            if found is not None:
                self.stored = found
                ended = {j for j, job in found.items() if job["status"] in TERMINAL_STATES}
                if accepted <= ended:
                    break
                if len(ended) > done:
                    done, progress_at = len(ended), time.monotonic()
            if time.monotonic() - progress_at > self.cfg.settle_limit:
                break
            await asyncio.sleep(1.0)
        self.settle_seconds = time.monotonic() - t0

    async def _fetch_events(self, http: httpx.AsyncClient) -> None:
        owner = {s.job_id: s.user for s in self.subs if s.job_id}
        slots = asyncio.Semaphore(8)

        async def one(job_id: str, user: int) -> None:
            async with slots:
                url = f"{self.gw}/api/v1/jobs/{job_id}/events"
                r = await self._request(http, "read", "GET", url, headers=self.headers[user])
                if r is not None and r.status_code == 200:
                    self.events[job_id] = r.json()["events"]

        seq_user = {s.seq: s.user for s in self.subs}
        todo = []
        for job_id, job in self.stored.items():
            user = owner.get(job_id)
            if user is None:  # a job nobody was answered 202 for: its owner by its seq
                user = seq_user[_seq(job)]
            todo.append(one(job_id, user))
        await asyncio.gather(*todo)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        timeout = httpx.Timeout(self.cfg.request_timeout)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            await self._users(http)
            start = time.monotonic()
            readers = [asyncio.create_task(self._reader(http, u)) for u in range(self.cfg.users)]
            try:
                await asyncio.gather(
                    *(self._user_intake(http, u, start) for u in range(self.cfg.users))
                )
            finally:
                self.intake_seconds = time.monotonic() - start
                self.intake_done.set()
                await asyncio.gather(*readers, return_exceptions=True)
            await self._settle(http)
            await self._fetch_events(http)


# --- one run ------------------------------------------------------------------------------------


def _chaos(
    cluster: SoakCluster, cfg: SoakConfig, rng: random.Random, clients: Clients
) -> list[Outage]:
    """Kill and restart components in rounds (each kind once per round, random order)."""
    kinds = PG_KINDS if cfg.dialect == "postgres" else KINDS
    outages: list[Outage] = []
    rounds = 0
    while cfg.rounds is None or rounds < cfg.rounds:
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            if clients.intake_done.wait(rng.uniform(*cfg.gap)) and cfg.rounds is None:
                return outages
            target = "postgres" if kind == "postgres" else rng.choice(cluster.names(kind))
            outage = Outage(kind, target, time.time())
            outages.append(outage)
            clients.kills_started += 1
            if kind == "postgres":
                assert cluster.pg is not None
                cluster.pg.stop("immediate")  # every server process aborts, as in a crash
            else:
                cluster.kill(target)
            time.sleep(rng.uniform(*cfg.down_by_kind.get(kind, cfg.down)))
            if kind == "postgres":
                assert cluster.pg is not None
                cluster.pg.start()
            else:
                cluster.restart(target)
            outage.ready_at = time.time()
        rounds += 1
    return outages


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """One run: boot, submit under chaos, settle, account. Returns the report (JSON-able)."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    exec_file = cfg.data_dir / "executions.txt"
    exec_file.touch()
    rng = random.Random(cfg.seed)
    tag = f"soak-{cfg.seed}-{uuid.uuid4().hex[:6]}"
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    with soak_cluster(cfg) as cluster:
        phases["boot_s"] = time.monotonic() - t0
        clients = Clients(cfg, cluster.gateway_url, exec_file, tag)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                asyncio.run(clients.run())
            except BaseException as exc:  # reported in the calling thread
                failure.append(exc)
                clients.intake_done.set()

        worker = threading.Thread(target=work, name="soak-clients")
        worker.start()
        try:
            try:
                outages = _chaos(cluster, cfg, rng, clients)
            finally:
                clients.chaos_done.set()
            phases["chaos_s"] = time.monotonic() - t0 - phases["boot_s"]
        finally:
            worker.join()
        if failure:
            raise failure[0]
        t1 = time.monotonic()
    phases["stop_s"] = time.monotonic() - t1
    report = account(cfg, clients, outages, exec_file)
    report["phases"] = {k: round(v, 1) for k, v in phases.items()}
    # what the figures were made from, for a look afterwards
    (cfg.data_dir / "events.json").write_text(json.dumps(clients.events))
    (cfg.data_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report


# --- the account --------------------------------------------------------------------------------


def _seq(job: dict[str, Any]) -> int:
    """A submission's number, from the job's name ``soak-<seq>``."""
    return int(job["name"].removeprefix("soak-"))


def _ts(value: str) -> float:
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _explained(events: list[dict[str, Any]], attempt: int) -> bool:
    return any(
        e["attempt"] == attempt and any(w in e["cause"].lower() for w in EXPLAIN_WORDS)
        for e in events
    )


def account(
    cfg: SoakConfig, clients: Clients, outages: list[Outage], exec_file: Path
) -> dict[str, Any]:
    subs = clients.subs
    stored = clients.stored
    by_seq: dict[int, list[str]] = defaultdict(list)
    for job_id, job in stored.items():
        by_seq[_seq(job)].append(job_id)

    accepted = [s for s in subs if s.job_id]
    lost_unstored = [s.job_id for s in accepted if s.job_id not in stored]
    lost_running = {
        s.job_id: stored[s.job_id]["status"]
        for s in accepted
        if s.job_id in stored and stored[s.job_id]["status"] not in TERMINAL_STATES
    }
    # with what the client was answered, try by try ("503", "timeout", "refused", "202")
    phantom = {
        s.seq: {"jobs": by_seq[s.seq], "tries": s.tries}
        for s in subs
        if not s.job_id and by_seq.get(s.seq)
    }
    duplicates = {
        s.seq: {"jobs": by_seq[s.seq], "tries": s.tries}
        for s in accepted
        if any(j != s.job_id for j in by_seq.get(s.seq, []))
    }
    states = Counter(stored[s.job_id]["status"] for s in accepted if s.job_id in stored)
    # every soak job's code exits 0: "failed" with exit code 0 is an outcome changed afterwards
    failed_exit_0 = {
        j: job["error"]
        for j, job in stored.items()
        if job["status"] == "failed" and job.get("exit_code") == 0
    }

    runs: dict[tuple[str, int], list[float]] = defaultdict(list)
    for line in exec_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            with contextlib.suppress(ValueError):
                runs[(parts[1], int(parts[2]))].append(float(parts[3]))
    executed_jobs = {j for j, _ in runs}
    same_attempt = {k: len(v) for k, v in runs.items() if len(v) > 1}
    same_unexplained = sorted(
        f"{j}#{a}" for (j, a) in same_attempt if not _explained(clients.events.get(j, []), a)
    )
    attempts_run: dict[str, set[int]] = defaultdict(set)
    for j, a in runs:
        attempts_run[j].add(a)
    rerun_jobs = {j for j, a in attempts_run.items() if len(a) > 1}
    rerun_unexplained = []
    stale_starts = []
    fetch_races = []
    for j in rerun_jobs:
        events = clients.events.get(j, [])
        requeued = {e["attempt"] for e in events if e["to"] == "queued" and e["from"]}
        if not all(a in requeued for a in attempts_run[j] if a != max(attempts_run[j])):
            rerun_unexplained.append(j)
    for (j, a), starts in runs.items():
        # an attempt's code starting after the job had moved on to a later attempt
        later = [_ts(e["at"]) for e in clients.events.get(j, []) if e["attempt"] > a]
        if later and any(t > min(later) for t in starts):
            # within a second of the requeue: an attempt the scheduler let start just before it
            # requeued it (provider lost, lease); counted apart (see FETCH_RACE_S)
            if all(t - min(later) < FETCH_RACE_S for t in starts if t > min(later)):
                fetch_races.append(f"{j}#{a}")
            else:
                stale_starts.append(f"{j}#{a}")
    completed_unrun = [
        s.job_id
        for s in accepted
        if s.job_id in stored
        and stored[s.job_id]["status"] == "completed"
        and s.job_id not in executed_jobs
    ]

    def down_at(a: Answer) -> bool:
        return any(
            a.t1 >= o.killed_at and a.t0 <= (o.ready_at or math.inf) + AFTER_OUTAGE for o in outages
        )

    codes = Counter(
        f"{a.what} {a.status if a.status is not None else a.error}" for a in clients.answers
    )
    fives = [a for a in clients.answers if a.status is not None and a.status >= 500]
    s503 = [a for a in fives if a.status == 503]
    report: dict[str, Any] = {
        "dialect": cfg.dialect,
        "seed": cfg.seed,
        "jobs": cfg.jobs,
        "users": cfg.users,
        "daemons": cfg.daemons,
        "intake_s": round(clients.intake_seconds, 1),
        "settle_s": round(clients.settle_seconds, 1),
        "accepted": len(accepted),
        "gave_up": sum(1 for s in subs if not s.job_id and not s.rejected),
        "rejected": [s.rejected for s in subs if s.rejected][:5],
        "retried_submissions": sum(1 for s in subs if len(s.tries) > 1),
        "lost": len(lost_unstored) + len(lost_running),
        "lost_unstored": lost_unstored,
        "lost_not_terminal": lost_running,
        "phantom": len(phantom),
        "phantom_jobs": phantom,
        "duplicate_submissions": len(duplicates),
        "duplicate_jobs": duplicates,
        "final_states": dict(states),
        "failed_with_exit_0": failed_exit_0,
        "jobs_executed": len(executed_jobs),
        "completed_without_execution": completed_unrun,
        "attempt_executed_twice": len(same_attempt),
        "attempt_executed_twice_unexplained": same_unexplained,
        "jobs_run_in_several_attempts": len(rerun_jobs),
        "reruns_unexplained": sorted(rerun_unexplained),
        "stale_attempt_starts": sorted(stale_starts),
        "stale_starts_in_fetch_race": sorted(fetch_races),
        "answers": dict(sorted(codes.items())),
        "5xx": len(fives),
        "5xx_while_down": sum(1 for a in fives if down_at(a)),
        "500": sum(1 for a in fives if a.status == 500),
        "502": sum(1 for a in fives if a.status == 502),
        "503": len(s503),
        "503_with_retry_after": sum(1 for a in s503 if a.retry_after),
        "no_answer_while_down": sum(1 for a in clients.answers if a.status is None and down_at(a)),
        "outages": [
            {
                "kind": o.kind,
                "target": o.target,
                "down_s": round((o.ready_at or o.killed_at) - o.killed_at, 1),
            }
            for o in outages
        ],
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("data_dir",)},
    }
    return report


def table(report: dict[str, Any]) -> str:
    """The report's headline figures as an aligned two-column table."""

    def n(key: str) -> int:
        return len(report[key])

    rows = [
        ("dialect / seed", f"{report['dialect']} / {report['seed']}"),
        (
            "jobs submitted (users, daemons)",
            f"{report['jobs']} ({report['users']}, {report['daemons']})",
        ),
        ("intake / settle seconds", f"{report['intake_s']} / {report['settle_s']}"),
        ("boot / chaos / stop seconds", " / ".join(str(v) for v in report["phases"].values())),
        ("accepted (202)", report["accepted"]),
        (
            "gave up after retries / rejected 4xx",
            f"{report['gave_up']} / {len(report['rejected'])}",
        ),
        ("submissions retried", report["retried_submissions"]),
        (
            "lost (202, not stored / never terminal)",
            f"{report['lost']} ({n('lost_unstored')} / {n('lost_not_terminal')})",
        ),
        ("phantom (no 202, job exists)", report["phantom"]),
        ("duplicate submissions (retry made 2nd job)", report["duplicate_submissions"]),
        ("final states", ", ".join(f"{k} {v}" for k, v in sorted(report["final_states"].items()))),
        ("completed without an execution", len(report["completed_without_execution"])),
        ("failed although the code exited 0", len(report["failed_with_exit_0"])),
        (
            "attempt executed twice (unexplained)",
            f"{report['attempt_executed_twice']} ({n('attempt_executed_twice_unexplained')})",
        ),
        (
            "jobs run in several attempts (no requeue event)",
            f"{report['jobs_run_in_several_attempts']} ({n('reruns_unexplained')})",
        ),
        ("stale attempt start (job on a later attempt)", len(report["stale_attempt_starts"])),
        (
            "stale start < 1 s after the requeue (fetch race)",
            len(report["stale_starts_in_fetch_race"]),
        ),
        (
            "5xx answers (while a component was down)",
            f"{report['5xx']} ({report['5xx_while_down']})",
        ),
        ("500 / 502 answers", f"{report['500']} / {report['502']}"),
        ("503 answers (with Retry-After)", f"{report['503']} ({report['503_with_retry_after']})"),
        ("no answer (refused/timeout) while down", report["no_answer_while_down"]),
        ("outages", ", ".join(f"{o['target']} {o['down_s']}s" for o in report["outages"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
