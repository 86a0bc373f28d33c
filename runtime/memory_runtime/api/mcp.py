"""The MCP endpoint: the memory use cases as Model Context Protocol tools at `/mcp`.

Streamable HTTP, stateless, JSON answers: every POST is complete on its own,
so any replica behind the Service can answer it (no session affinity).

Nothing here re-implements a rule. Each tool validates its arguments with the
HTTP API's own request models, calls the same `MemoryService` method as the
route, and checks the same bearer token, role and rate-limit bucket
(api/auth.py). A problem the HTTP API would answer with problem+json is a tool
error here (`isError: true`) whose structured content is that same problem
document; only a missing or unknown token is refused at the transport (401,
as the protocol's authorization section expects).

Why ~520 lines: one declaration per tool (its argument model, role and
description, what an agent reads), then the one dispatcher and the transport.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import mcp_types as types
from fastapi.concurrency import run_in_threadpool
from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from memory_runtime import __version__
from memory_runtime.api import auth
from memory_runtime.api.errors import (
    PROBLEM_BASE,
    ProblemError,
    error_detail,
    error_message,
    known_problem,
    problem,
    safe_loc,
)
from memory_runtime.api.state import state_of
from memory_runtime.models import (
    MAX_DEPTH,
    MAX_NEIGHBOURS,
    Direction,
    Filters,
    Link,
    LinkIn,
    LinkType,
    Memory,
    MemoryIn,
    MemoryPatch,
    MemoryType,
    NeighborsOut,
    PathOut,
    ScopeValue,
    SearchIn,
    SearchOut,
    Stats,
)
from memory_runtime.service import MemoryService, ServiceError, to_filter
from memory_runtime.settings import ApiToken

log = logging.getLogger("memory_runtime.mcp")

PATH = "/mcp"
TOKEN_STATE = "memory_token"  # where the transport guard leaves the caller's token

Key = Annotated[str, Field(description='the memory\'s id (UUID) or coordinate, e.g. "1,2"')]


# --- tool inputs that are not an HTTP body model ---------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GetArgs(_Args):
    key: Key
    include_vector: bool = Field(False, description="also return the stored vector")


class UpdateArgs(_Args):
    key: Key


class ForgetArgs(_Args):
    key: str | None = Field(
        None,
        description="delete this one memory (id or coordinate; needs a write token). "
        "Leave it out to forget in bulk by scope (needs an admin token).",
    )
    user_id: ScopeValue | None = None
    agent_id: ScopeValue | None = None
    session_id: ScopeValue | None = None
    memory_type: MemoryType | None = Field(None, description="narrows a bulk forget")


class NeighboursArgs(_Args):
    key: Key
    depth: int = Field(1, ge=1, le=MAX_DEPTH, description="hops to follow")
    direction: Direction = Field("out", description="follow links out of, into, or both")
    type: LinkType | None = Field(None, description="only links of this type")
    limit: int = Field(100, ge=1, le=MAX_NEIGHBOURS)


class PathArgs(_Args):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", description="start memory: id or coordinate")
    to: str = Field(description="end memory: id or coordinate")
    max_depth: int = Field(4, ge=1, le=MAX_DEPTH)
    direction: Direction = "out"
    type: LinkType | None = Field(None, description="only links of this type")


class NoArgs(_Args):
    pass


# --- tool outputs that are not an HTTP answer model -------------------------


class Forgotten(BaseModel):
    deleted: int = Field(description="how many memories were deleted")
    memory: Memory | None = Field(None, description="the deleted memory (single forget only)")


class Linked(BaseModel):
    created: bool = Field(description="false when an existing link was updated")
    link: Link


# --- the tools ----------------------------------------------------------------

Role = Literal["read", "write", "admin"]


@dataclass(frozen=True)
class Call:
    """What a tool body gets: the service, its validated arguments, the caller."""

    service: MemoryService
    args: Any
    token: ApiToken
    request: Request


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    role: Role
    args: type[BaseModel]
    result: type[BaseModel]
    run: Callable[[Call], BaseModel]
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    extra_args: type[BaseModel] | None = None  # flattened beside `args` (update)

    def input_schema(self) -> dict[str, Any]:
        schema = self.args.model_json_schema(by_alias=True)
        if self.extra_args is not None:
            extra = self.extra_args.model_json_schema(by_alias=True)
            schema["properties"] = {**extra["properties"], **schema["properties"]}
            schema["required"] = extra.get("required", []) + schema.get("required", [])
            defs = {**extra.get("$defs", {}), **schema.get("$defs", {})}
            if defs:
                schema["$defs"] = defs
            if self.extra_args.__doc__:
                schema["description"] = self.extra_args.__doc__.strip()
        return schema

    def parse(self, arguments: dict[str, Any]) -> Any:
        if self.extra_args is None:
            return self.args.model_validate(arguments)
        keys = set(self.extra_args.model_fields)
        head = self.extra_args.model_validate({k: v for k, v in arguments.items() if k in keys})
        body = self.args.model_validate({k: v for k, v in arguments.items() if k not in keys})
        return head, body


def _remember(c: Call) -> Memory:
    [(memory, created)] = c.service.store([c.args])
    metrics = state_of(c.request.app).metrics
    metrics.memories_written.labels("created" if created else "updated").inc()
    return memory


def _recall(c: Call) -> SearchOut:
    from memory_runtime.api.routes import recall  # the route's own recall (metrics included)

    return recall(c.service, c.args, c.request)


def _get(c: Call) -> Memory:
    return c.service.get(c.args.key, c.args.include_vector)


def _update(c: Call) -> Memory:
    head, change = c.args
    return c.service.patch(head.key, change)


def _forget(c: Call) -> Forgotten:
    args: ForgetArgs = c.args
    if args.key is not None:
        scope = {"user_id", "agent_id", "session_id", "memory_type"} & args.model_fields_set
        if scope:
            raise ProblemError(422, f"give a key or scope filters, not both ({sorted(scope)[0]})")
        return Forgotten(deleted=1, memory=c.service.delete(args.key))
    auth.authorize(c.token, "admin", "bulk forget")
    f = Filters(
        user_id=args.user_id,
        agent_id=args.agent_id,
        session_id=args.session_id,
        memory_type=args.memory_type,
    )
    return Forgotten(deleted=c.service.forget(to_filter(f)))


def _link(c: Call) -> Linked:
    link, created = c.service.link(c.args)
    return Linked(created=created, link=link)


def _neighbours(c: Call) -> NeighborsOut:
    a: NeighboursArgs = c.args
    return c.service.neighbors(a.key, a.depth, a.direction, a.type, a.limit)


def _path(c: Call) -> PathOut:
    a: PathArgs = c.args
    return c.service.path(a.from_, a.to, a.max_depth, a.direction, a.type)


def _stats(c: Call) -> Stats:
    return Stats.model_validate(c.service.stats())


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "remember",
        "Store a memory",
        "Store one memory for later recall. Put what should be found again in `payload.text` "
        "(or `text`); add `tags`, `metadata` and the scope fields `user_id` / `agent_id` / "
        "`session_id` to filter on later, and `importance` (0-1). Storing at an existing "
        "`coordinate` replaces that memory; without a coordinate the server assigns one. "
        "Returns the stored memory with its `id`. Needs a write token.",
        "write",
        MemoryIn,
        Memory,
        _remember,
    ),
    ToolSpec(
        "recall",
        "Recall memories",
        "Find the memories most relevant to a `query` text (and/or a `vector`). `mode` is "
        "`hybrid` (default: meaning + keywords), `vector` (meaning only) or `keyword` (words "
        "only). Narrow with filters: `tags` (all must match), `user_id`, `agent_id`, "
        "`session_id`, `memory_type`, `metadata` (equality per top-level key), "
        "`created_from`/`created_to`, a coordinate box. `top_k` (1-100) hits come back best "
        "first, each with its `score` and the parts that made it; `degraded` lists a part "
        "skipped because a dependency was down.",
        "read",
        SearchIn,
        SearchOut,
        _recall,
        read_only=True,
        idempotent=True,
    ),
    ToolSpec(
        "get",
        "Get a memory",
        "Fetch one memory by its id or coordinate (counts as an access, which resets its "
        "decay). Not found is a tool error.",
        "read",
        GetArgs,
        Memory,
        _get,
        read_only=True,
        idempotent=True,
    ),
    ToolSpec(
        "update",
        "Update a memory",
        "Change some fields of the memory at `key`: `payload`, `text`, `importance`, "
        "`metadata`, `tags`, `expires_at` (fields left out are kept). Changing the payload "
        "without `text` re-derives the text. `if_version` makes the change conditional "
        "(a conflict error if the memory moved on). Needs a write token.",
        "write",
        MemoryPatch,
        Memory,
        _update,
        idempotent=True,
        extra_args=UpdateArgs,
    ),
    ToolSpec(
        "forget",
        "Forget memories",
        "Delete memories for good, with their links. Either one memory by `key` (write "
        "token), or in bulk every memory matching the scope filters `user_id` / `agent_id` / "
        "`session_id` (at least one; `memory_type` narrows) - bulk forget, e.g. for an "
        "erasure request, needs an admin token. Returns how many were deleted.",
        "write",
        ForgetArgs,
        Forgotten,
        _forget,
        destructive=True,
    ),
    ToolSpec(
        "link",
        "Link two memories",
        "Create or update a typed link `from` -> `to` (ids or coordinates) with a `strength` "
        "(0-1) and optional `metadata`; at most one link per (from, to, type). Links are "
        "removed with either memory. Needs a write token.",
        "write",
        LinkIn,
        Linked,
        _link,
        idempotent=True,
    ),
    ToolSpec(
        "neighbours",
        "Neighbours of a memory",
        "The memories linked to `key`, breadth first up to `depth` hops, following links "
        "`out`, `in` or `both` ways, optionally only links of one `type`. Each neighbour "
        "comes with its depth and the link it was reached by.",
        "read",
        NeighboursArgs,
        NeighborsOut,
        _neighbours,
        read_only=True,
        idempotent=True,
    ),
    ToolSpec(
        "path",
        "Path between two memories",
        "The chain of links from one memory to another with the fewest hops (and among "
        "those the strongest), within `max_depth` hops; `found` is false when there is none.",
        "read",
        PathArgs,
        PathOut,
        _path,
        read_only=True,
        idempotent=True,
    ),
    ToolSpec(
        "stats",
        "Memory statistics",
        "Counts and sizes of this memory namespace: memories (by type), links, memories "
        "waiting for the index, event lag, bytes on disk, the quota.",
        "read",
        NoArgs,
        Stats,
        _stats,
        read_only=True,
        idempotent=True,
    ),
)

BY_NAME = {tool.name: tool for tool in TOOLS}


def _mcp_tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=spec.input_schema(),
        output_schema=spec.result.model_json_schema(mode="serialization", by_alias=True),
        annotations=types.ToolAnnotations(
            title=spec.title,
            read_only_hint=spec.read_only,
            destructive_hint=spec.destructive,
            idempotent_hint=spec.idempotent,
            open_world_hint=False,
        ),
    )


# --- problems as tool errors -------------------------------------------------


def tool_error(
    status: int, slug: str, title: str, detail: str, **extra: Any
) -> types.CallToolResult:
    """The problem document the HTTP API would answer, as an MCP tool error."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{title} ({status}): {detail}")],
        structured_content=body,
        is_error=True,
    )


def _from_problem(exc: ProblemError) -> types.CallToolResult:
    extra: dict[str, Any] = {}
    if "Retry-After" in exc.headers:
        extra["retry_after"] = int(exc.headers["Retry-After"])
    return tool_error(exc.status, exc.slug, exc.title, exc.detail, **extra)


def _from_validation(exc: ValidationError) -> types.CallToolResult:
    errors = [
        {"loc": safe_loc(e.get("loc", ())), "message": error_message(e)} for e in exc.errors()
    ]
    detail = error_detail(exc.errors()[0]) if errors else "invalid input"
    # same wording as the HTTP 422 (api/errors.py); the input is never echoed
    return tool_error(422, "validation-error", "Invalid tool arguments", detail, errors=errors)


async def call_tool(
    spec: ToolSpec, arguments: dict[str, Any], token: ApiToken, request: Request
) -> types.CallToolResult:
    state = state_of(request.app)
    try:
        auth.authorize(token, spec.role, f"the {spec.name} tool")
        await auth.rate_limit(state, token)
        args = spec.parse(arguments)
        result = await run_in_threadpool(spec.run, Call(state.service, args, token, request))
    except ValidationError as exc:
        return _from_validation(exc)
    except Exception as exc:
        known = known_problem(exc)  # the same mapping as the HTTP handlers (api/errors.py)
        if known is None:
            log.exception("unhandled error in tool %s", spec.name)
            return tool_error(
                500, "internal-error", "Internal server error", "the tool failed (see the log)"
            )
        if not isinstance(exc, ProblemError | ServiceError):
            log.warning("tool %s: %r", spec.name, exc)
        return _from_problem(known)
    data = result.model_dump(mode="json", by_alias=True, exclude_none=False)
    if isinstance(result, Memory) and result.vector is None:
        data.pop("vector", None)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(data, separators=(",", ":")))],
        structured_content=data,
    )


# --- server and transport ----------------------------------------------------


def build_server(instructions: str) -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[_mcp_tool(spec) for spec in TOOLS])

    async def on_call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        request: Request = ctx.request
        token: ApiToken = request.scope["state"][TOKEN_STATE]
        spec = BY_NAME.get(params.name)
        if spec is None:
            known = ", ".join(BY_NAME)
            return tool_error(
                404, "not-found", "Unknown tool", f"no tool {params.name!r} ({known})"
            )
        return await call_tool(spec, dict(params.arguments or {}), token, request)

    return Server(
        "somafractal-memory",
        version=__version__,
        title="SomaFractalMemory",
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=on_call,
    )


class McpEndpoint:
    """The ASGI app at `/mcp`: authenticates the bearer token, then the MCP transport."""

    def __init__(self, tenant: str, max_body_bytes: int) -> None:
        self.server = build_server(
            f"Long-term memory of the namespace {tenant!r}: remember facts and events, recall "
            "them by meaning or words, link related memories and follow those links."
        )
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            json_response=True,
            stateless=True,
            max_request_body_size=max_body_bytes,
            # every request needs the bearer token, which a DNS-rebinding page
            # cannot attach, and the Host is the Service's name in a cluster
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            token = auth.authenticate(
                headers.get("authorization", ""), state_of(scope["app"]).tokens
            )
        except ProblemError as exc:
            response = problem(
                exc.status, exc.detail, instance=PATH, slug=exc.slug, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[TOKEN_STATE] = token
        await self.manager.handle_request(scope, receive, send)


def mount(app: Any, endpoint: ASGIApp) -> None:
    """Serve `endpoint` at exactly `/mcp` (no redirect to `/mcp/`)."""
    from starlette.routing import Route

    app.router.routes.append(Route(PATH, endpoint=endpoint))
