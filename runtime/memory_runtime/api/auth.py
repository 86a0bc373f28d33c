"""Bearer-token auth with roles, and per-token rate limiting.

The three checks (who is this token, may it do this, is its bucket empty) are
plain functions raising `ProblemError`, shared by the HTTP routes (through the
`require` dependency) and the MCP tools (api/mcp.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from memory_runtime.api.errors import ProblemError
from memory_runtime.api.state import RuntimeState, state_of
from memory_runtime.settings import ROLE_RANK, ApiToken

log = logging.getLogger("memory_runtime.api")

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="memory"'}


def token_key(token: str) -> str:
    """Rate-limit key for a token: a hash, so Redis never holds the secret."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def _match(presented: str, tokens: tuple[ApiToken, ...]) -> ApiToken | None:
    # compare against every token (constant time each), never short-circuit on a prefix
    found: ApiToken | None = None
    for candidate in tokens:
        if hmac.compare_digest(presented.encode(), candidate.token.encode()) and found is None:
            found = candidate
    return found


def authenticate(header: str, tokens: tuple[ApiToken, ...]) -> ApiToken:
    """The token an `Authorization` header carries; 401 without a valid one."""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise ProblemError(401, "send Authorization: Bearer <token>", headers=CHALLENGE)
    token = _match(credentials.strip(), tokens)
    if token is None:
        raise ProblemError(
            401,
            "the token is not valid for this namespace",
            headers={"WWW-Authenticate": 'Bearer realm="memory", error="invalid_token"'},
        )
    return token


def authorize(token: ApiToken, role: str, what: str = "this route") -> None:
    """403 if the token's role is below `role`."""
    if ROLE_RANK[token.role] < ROLE_RANK[role]:
        raise ProblemError(403, f"{what} needs the {role} role; the token has {token.role}")


async def rate_limit(state: RuntimeState, token: ApiToken) -> dict[str, str]:
    """Take one request from the token's bucket: its RateLimit headers, or 429."""
    limiter = state.rate_limiter
    if limiter is None:
        return {}
    try:
        if getattr(limiter, "blocking", True):
            decision = await run_in_threadpool(limiter.acquire, token_key(token.token))
        else:
            decision = limiter.acquire(token_key(token.token))
    except Exception as exc:
        # fail open: a Redis outage must not take the memory API down with it
        log.warning("rate limiter unavailable, request allowed: %s", exc)
        return {}
    reset = max(0, math.ceil(decision.reset_seconds))
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(max(0, decision.remaining)),
        "RateLimit-Reset": str(reset),
    }
    if not decision.allowed:
        state.metrics.rate_limited.inc()
        retry = max(1, math.ceil(decision.retry_after_seconds))
        raise ProblemError(
            429,
            f"rate limit exceeded; retry in {retry} s",
            headers={**headers, "Retry-After": str(retry)},
        )
    return headers


def require(role: str) -> Callable[[Request], Awaitable[ApiToken]]:
    """A dependency: 401 without a valid token, 403 if its role is too low, 429 if limited."""
    ROLE_RANK[role]  # unknown roles fail at import, not per request

    async def dependency(request: Request) -> ApiToken:
        # async: a sync dependency costs a worker-thread hop per request; only a
        # limiter that does I/O (Redis) is sent to the thread pool
        state = state_of(request.app)
        token = authenticate(request.headers.get("authorization", ""), state.tokens)
        authorize(token, role)
        try:
            headers = await rate_limit(state, token)
        except ProblemError as exc:
            request.scope.setdefault("state", {})["ratelimit_headers"] = {
                k: v for k, v in exc.headers.items() if k.startswith("RateLimit")
            }
            raise
        if headers:
            request.scope.setdefault("state", {})["ratelimit_headers"] = headers
        return token

    return dependency


read = require("read")
write = require("write")
admin = require("admin")
