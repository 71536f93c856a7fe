"""Failed-login throttling cannot lock out the right password of a known user (issue 18): the
auth service as a real process; attackers and the owner differ by the address the gateway
reports (``X-Forwarded-For``)."""

from __future__ import annotations

from pathlib import Path

from auth_service.settings import DEV_ADMIN_PASSWORD
from tests.support.auth import auth_process

ATTACKER = {"x-forwarded-for": "198.51.100.66"}
OWNER = {"x-forwarded-for": "203.0.113.10"}


def test_a_guesser_cannot_lock_out_the_right_password_admin_included(tmp_path: Path) -> None:
    with auth_process(tmp_path, LOGIN_MAX_FAILURES_PER_IP="40") as auth:
        user = auth.register()
        for name in ("admin", user["username"]):
            codes = [auth.login(name, "wrong password!", headers=ATTACKER).status_code]
            codes += [auth.login(name, "wrong password!", headers=OWNER).status_code]
            codes += [
                auth.login(name, "wrong password!", headers=ATTACKER).status_code for _ in range(8)
            ]
            # five failures per account, then every further wrong guess is refused with 429
            assert codes == [401] * 5 + [429] * 5, (name, codes)
        # ...but the right password still gets in: from the owner's address, and even from
        # the guesser's (which is under its own address limit)
        r = auth.login("admin", DEV_ADMIN_PASSWORD, headers=OWNER)
        assert r.status_code == 200 and r.json()["role"] == "admin"
        assert auth.login(user["username"], headers=ATTACKER).status_code == 200
        # a success starts the account's count afresh: the next wrong guess is a plain 401
        assert auth.login("admin", "wrong password!", headers=OWNER).status_code == 401


def test_the_address_throttle_still_caps_one_guesser_across_accounts(tmp_path: Path) -> None:
    with auth_process(tmp_path, LOGIN_MAX_FAILURES_PER_IP="6") as auth:
        victims = [auth.register() for _ in range(3)]
        codes = [
            auth.login(v["username"], "wrong password!", headers=ATTACKER).status_code
            for v in victims
            for _ in range(2)
        ]
        assert codes == [401] * 6
        # this address is done guessing, right or wrong, on any account
        r = auth.login(victims[0]["username"], headers=ATTACKER)
        assert r.status_code == 429 and "address" in r.json()["detail"]
        # the owners, elsewhere, are not affected
        assert all(auth.login(v["username"], headers=OWNER).status_code == 200 for v in victims)
