"""API tokens and their roles (no I/O, no settings: the client reads them too)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["read", "write", "admin"]
ROLE_RANK: dict[str, int] = {"read": 1, "write": 2, "admin": 3}


@dataclass(frozen=True)
class ApiToken:
    role: Role
    token: str

    def __repr__(self) -> str:  # never print secrets
        return f"ApiToken(role={self.role!r}, token=***)"


def parse_tokens(raw: str) -> tuple[ApiToken, ...]:
    """`role:token` or bare `token` (= admin), separated by commas or newlines."""
    tokens: list[ApiToken] = []
    for item in re.split(r"[,\n]", raw):
        entry = item.strip()
        if not entry:
            continue
        role, sep, secret = entry.partition(":")
        if sep and role.strip() in ROLE_RANK:
            tokens.append(ApiToken(role=role.strip(), token=secret.strip()))  # type: ignore[arg-type]
        else:
            tokens.append(ApiToken(role="admin", token=entry))
    for t in tokens:
        if len(t.token) < 16:
            raise ValueError("every API token must be at least 16 characters long")
    return tuple(tokens)
