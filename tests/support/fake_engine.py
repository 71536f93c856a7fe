"""A fake Docker Engine: no Docker engine can run on these machines, so this serves the
documented Engine API endpoints the Docker executor uses (https://docs.docker.com/reference/api/engine/)
on a unix socket, records every request with its body, and plays a container's life: output
on the multiplexed log stream, ``wait`` answering when it exits, ``kill`` ending it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class Container:
    id: str
    config: dict[str, Any]
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    killed_with: str | None = None
    removed: bool = False


@dataclass
class Script:
    """What the next container does: its output frames, exit code, whether it runs until killed."""

    output: list[tuple[int, str]] = field(default_factory=list)  # (1 stdout | 2 stderr, text)
    exit_code: int = 0
    runs_until_killed: bool = False
    ignores_term: bool = False  # a SIGTERM does not end it (only SIGKILL does)


class FakeEngine:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.images: set[str] = set()
        self.containers: dict[str, Container] = {}
        self.script = Script()
        self.pull_hangs = False
        self.started = asyncio.Event()  # a container was started
        self.app = self._build()

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def calls(self, method: str, suffix: str) -> list[tuple[str, str, dict[str, str], Any]]:
        return [r for r in self.requests if r[0] == method and r[1].endswith(suffix)]

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Response:
            body = await request.body()
            parsed = json.loads(body) if body else None
            self.requests.append(
                (request.method, request.url.path, dict(request.query_params), parsed)
            )
            return await call_next(request)

        @app.get("/version")
        async def version() -> dict[str, str]:
            return {"ApiVersion": "1.45", "Version": "27.0.3", "MinAPIVersion": "1.24"}

        @app.get("/{v}/version")
        async def versioned(v: str) -> dict[str, str]:
            return await version()

        @app.get("/{v}/images/{name:path}/json")
        async def inspect_image(v: str, name: str) -> Response:
            if name in self.images:
                return JSONResponse({"Id": f"sha256:{uuid.uuid4().hex}", "RepoTags": [name]})
            return JSONResponse({"message": f"No such image: {name}"}, status_code=404)

        @app.post("/{v}/images/create")
        async def pull(v: str, fromImage: str, tag: str | None = None) -> StreamingResponse:
            # fromImage may carry the tag itself ("name:tag"), as aiodocker sends it
            image = f"{fromImage}:{tag}" if tag else fromImage

            async def progress() -> AsyncIterator[bytes]:  # JSON messages, one per line
                yield json.dumps({"status": f"Pulling from {image}"}).encode() + b"\r\n"
                if self.pull_hangs:
                    await asyncio.sleep(3600)
                self.images.add(image)
                done = {"status": f"Downloaded newer image for {image}"}
                yield json.dumps(done).encode() + b"\r\n"

            return StreamingResponse(progress(), media_type="application/json")

        @app.post("/{v}/containers/create")
        async def create(v: str, request: Request, name: str | None = None) -> Response:
            config = await request.json()
            if config["Image"] not in self.images:
                return JSONResponse({"message": "No such image"}, status_code=404)
            c = Container(uuid.uuid4().hex, config)
            self.containers[c.id] = c
            return JSONResponse({"Id": c.id, "Warnings": []}, status_code=201)

        @app.post("/{v}/containers/{cid}/start")
        async def start(v: str, cid: str) -> Response:
            c = self.containers[cid]
            self.started.set()
            if not self.script.runs_until_killed:
                c.exit_code = self.script.exit_code
            return Response(status_code=204)

        @app.get("/{v}/containers/{cid}/json")
        async def inspect(v: str, cid: str) -> dict[str, Any]:
            c = self.containers[cid]
            return {"Id": cid, "Config": {"Tty": False, **c.config}, "State": {}}

        @app.get("/{v}/containers/{cid}/logs")
        async def logs(v: str, cid: str) -> StreamingResponse:
            c = self.containers[cid]

            async def frames() -> AsyncIterator[bytes]:
                for stream, text in self.script.output:
                    data = text.encode()
                    yield struct.pack(">BxxxL", stream, len(data)) + data
                    await asyncio.sleep(0.01)
                if self.script.runs_until_killed:
                    await c.exited.wait()
                c.exited.set()

            return StreamingResponse(
                frames(), media_type="application/vnd.docker.multiplexed-stream"
            )

        @app.post("/{v}/containers/{cid}/wait")
        async def wait(v: str, cid: str) -> dict[str, Any]:
            c = self.containers[cid]
            await c.exited.wait()
            return {"StatusCode": c.exit_code, "Error": None}

        @app.post("/{v}/containers/{cid}/kill")
        async def kill(v: str, cid: str, signal: str = "SIGKILL") -> Response:
            c = self.containers[cid]
            if signal == "SIGTERM" and self.script.ignores_term:
                return Response(status_code=204)
            c.killed_with, c.exit_code = signal, 137
            c.exited.set()
            return Response(status_code=204)

        @app.delete("/{v}/containers/{cid}")
        async def remove(v: str, cid: str, force: bool = False) -> Response:
            c = self.containers.get(cid)
            if c is None or c.removed:
                return JSONResponse({"message": f"No such container: {cid}"}, status_code=404)
            c.removed = True
            c.exited.set()
            return Response(status_code=204)

        return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield  # the test runner keeps its own signal handling


@contextlib.asynccontextmanager
async def serve_engine(socket_path: Path) -> AsyncIterator[FakeEngine]:
    engine = FakeEngine(socket_path)
    server = _Server(uvicorn.Config(engine.app, uds=str(socket_path), log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, no event
                await asyncio.sleep(0.02)
        yield engine
    finally:
        server.should_exit = True
        await task
