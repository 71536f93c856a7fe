"""Login latency for a known user with a wrong password vs an unknown user, over real HTTP
against a real auth service process (SQLite), plus the gateway-side cost of verifying a token.

Both failed-login paths must take about the same time (argon2 runs either way), so the
response time says nothing about whether an account exists.

    python bench/auth_login_timing.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.auth import auth_process


def _time(fn: object, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def _summary(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p90 = ms[int(len(ms) * 0.9) - 1]
    return f"{name:<28} median {statistics.median(ms):7.1f} ms  p90 {p90:7.1f} ms  n={len(ms)}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        auth_process(
            Path(tmp), LOGIN_MAX_FAILURES_PER_ACCOUNT="1000000", LOGIN_MAX_FAILURES_PER_IP="1000000"
        ) as auth,
    ):
        user = auth.register()
        http = httpx.Client(base_url=auth.url)

        def login(name: str, pw: str) -> None:
            r = http.post("/api/v1/auth/login", json={"username": name, "password": pw})
            assert r.status_code in (200, 401), r.text

        wrong = _time(lambda: login(user["username"], "wrong password!!"), args.rounds)
        unknown = _time(
            lambda: login(f"nobody{uuid.uuid4().hex[:8]}", "whatever pw 1"), args.rounds
        )
        ok = _time(lambda: login(user["username"], user["password"]), args.rounds)
        print(_summary("known user, wrong password", wrong))
        print(_summary("unknown user", unknown))
        print(_summary("successful login", ok))
        ratio = statistics.median(unknown) / statistics.median(wrong)
        print(f"unknown/known median ratio: {ratio:.2f}")

        from shared.auth import TokenVerifier

        body = {"username": user["username"], "password": user["password"]}
        token = http.post("/api/v1/auth/login", json=body).json()["access_token"]
        keys = http.get("/.well-known/jwks.json").json()

        async def verify_many(n: int) -> float:
            async def jwks() -> dict:
                return keys

            verifier = TokenVerifier(jwks, issuer="dante-auth", audience="dante")
            await verifier.verify(token)
            start = time.perf_counter()
            for _ in range(n):
                await verifier.verify(token)
            return (time.perf_counter() - start) / n * 1e6

        print(f"TokenVerifier.verify (cached key): {asyncio.run(verify_many(2000)):.0f} us/token")


if __name__ == "__main__":
    main()
