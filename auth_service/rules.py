"""Username and password rules (NIST SP 800-63B: length and a deny-list, no composition rules)."""

from __future__ import annotations

MIN_PASSWORD = 10
MAX_PASSWORD = 256
RESERVED_USERNAMES = frozenset(
    {"admin", "administrator", "root", "system", "service", "dante", "support", "security"}
)
# The most common passwords of at least MIN_PASSWORD characters (breach corpora top list).
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "123456789a",
        "0987654321",
        "qwertyuiop",
        "1q2w3e4r5t",
        "password123",
        "password1234",
        "iloveyou123",
        "qwerty12345",
        "abcdefghij",
        "letmein123",
        "welcome123",
        "administrator",
        "passw0rd123",
        "changeme123",
        "1111111111",
        "0000000000",
    }
)


def password_problem(password: str, username: str | None = None) -> str | None:
    """Why ``password`` is not acceptable, or None."""
    if len(password) < MIN_PASSWORD:
        return f"password must be at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"password must be at most {MAX_PASSWORD} characters"
    if password.lower() in COMMON_PASSWORDS or len(set(password)) < 4:
        return "password is too common or too repetitive"
    if username and username.lower() in password.lower():
        return "password must not contain the username"
    return None


def username_problem(username: str) -> str | None:
    if username.lower() in RESERVED_USERNAMES:
        return "username is reserved"
    return None
