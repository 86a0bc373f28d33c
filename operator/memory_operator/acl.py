"""Pure access-control planning for Redis ACL users and Kafka ACL bindings.

The adapters observe (ACL GETUSER, ACL CAT, describe_acls), these functions
decide whether anything must change and build the exact rules. No I/O here.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memory_contract.redis_functions import TENANT_COMMANDS
from memory_operator.domain import CacheUserTarget, PlanError

# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------

# Only the commands the runtime sends (memory_contract.redis_functions), nothing
# else: no EVAL/SCRIPT/FUNCTION (a spinning script blocks every tenant), no
# DBSIZE/MEMORY/INFO (facts about other tenants), no SCAN/KEYS/RANDOMKEY (key
# patterns do not filter their replies). `-@all` first, so a command a newer
# server adds is denied too.
REDIS_COMMAND_RULES: tuple[str, ...] = ("-@all", *(f"+{c}" for c in TENANT_COMMANDS))

_GLOB_SPECIALS = re.compile(r"[*?\[\]\\\s]")


def validate_cache_target(target: CacheUserTarget) -> None:
    if not target.username or re.search(r"\s", target.username):
        raise PlanError("redis username must be non-empty and contain no whitespace")
    if target.username == "default":
        raise PlanError("redis user 'default' is the server's admin user, not a tenant")
    if not target.password or re.search(r"[\s\x00]", target.password):
        raise PlanError("redis password must be non-empty and contain no whitespace")
    # The prefix ends up in ACL key patterns and SCAN MATCH globs: a glob
    # character would widen the tenant's reach or the keys a delete removes.
    if not target.key_prefix or _GLOB_SPECIALS.search(target.key_prefix):
        raise PlanError(
            f"redis key prefix {target.key_prefix!r} must be non-empty and free of glob "
            "characters (* ? [ ] \\) and whitespace"
        )


def redis_setuser_args(target: CacheUserTarget) -> list[str]:
    """Arguments after `ACL SETUSER`: a full replacement, so the result never depends
    on what the user had before (`reset` alone keeps channels open on Redis 6.2)."""
    validate_cache_target(target)
    pattern = f"{target.key_prefix}:*"
    return [
        target.username,
        "reset",
        "resetchannels",
        "on",
        f">{target.password}",
        f"~{pattern}",
        f"&{pattern}",
        *REDIS_COMMAND_RULES,
    ]


@dataclass(frozen=True)
class RedisUserState:
    """ACL GETUSER, normalised across Redis 6.2 (lists) and 7.x (strings, selectors)."""

    flags: frozenset[str]
    password_hashes: frozenset[str]
    command_rules: tuple[str, ...]
    key_patterns: tuple[str, ...]
    channel_patterns: tuple[str, ...]
    selectors: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _patterns(value: Any, sigil: str) -> tuple[str, ...]:
    # 6.2: a list of bare patterns; 7.x: one string "~a ~b" (or "%R~a" for read-only).
    items = [_text(v) for v in value] if isinstance(value, list | tuple) else _text(value).split()
    return tuple(i[len(sigil) :] if i.startswith(sigil) else i for i in items)


def parse_getuser(reply: Any) -> RedisUserState | None:
    """Parse an ACL GETUSER reply (flat list or a client's dict); None if no such user."""
    if reply is None:
        return None
    if isinstance(reply, Mapping):
        fields = {_text(k): v for k, v in reply.items()}
    else:
        items = list(reply)
        fields = {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
    commands = fields.get("commands", "")
    rules = (
        tuple(_text(c) for c in commands)
        if isinstance(commands, list | tuple)
        else tuple(_text(commands).split())
    )
    return RedisUserState(
        flags=frozenset(_text(f) for f in fields.get("flags", [])),
        password_hashes=frozenset(_text(p) for p in fields.get("passwords", [])),
        command_rules=rules,
        key_patterns=_patterns(fields.get("keys", []), "~"),
        channel_patterns=_patterns(fields.get("channels", []), "&"),
        selectors=len(fields.get("selectors") or []),
    )


def effective_commands(
    rules: Iterable[str], categories: Mapping[str, frozenset[str]]
) -> frozenset[str] | None:
    """The set of commands a rule list allows, given each category's members.

    Servers render the same permissions differently (6.2 drops `-@admin` when
    `-@dangerous` covers it, 7.x keeps rules as written), so rules are compared by
    what they allow, not by their text. None when a rule can't be evaluated here."""
    # Every tenant has the same rules: a resync evaluates them once, not per tenant.
    return _effective_commands(tuple(rules), tuple(sorted(categories.items())))


@functools.lru_cache(maxsize=64)
def _effective_commands(
    rules: tuple[str, ...], category_items: tuple[tuple[str, frozenset[str]], ...]
) -> frozenset[str] | None:
    categories = dict(category_items)
    universe: frozenset[str] = frozenset().union(*categories.values())
    allowed: set[str] = set()
    for raw in rules:
        rule = raw.lower()
        if rule in ("allcommands", "+@all"):
            allowed = set(universe)
        elif rule in ("nocommands", "-@all"):
            allowed = set()
        elif rule[:2] in ("+@", "-@"):
            members = categories.get(rule[2:])
            if members is None:
                return None
            allowed = allowed | members if rule[0] == "+" else allowed - members
        elif rule[:1] in ("+", "-") and len(rule) > 1:
            name = rule[1:]
            # `+cmd` also covers its subcommands (7.x lists them as "cmd|sub").
            names = {name} | {c for c in universe if c.startswith(name + "|")}
            allowed = allowed | names if rule[0] == "+" else allowed - names
        else:
            return None
    return frozenset(allowed)


def redis_password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()  # what ACL GETUSER lists


def redis_user_matches(
    state: RedisUserState | None,
    target: CacheUserTarget,
    categories: Mapping[str, frozenset[str]],
) -> bool:
    """True when the existing user grants exactly what redis_setuser_args would."""
    validate_cache_target(target)
    if state is None:
        return False
    pattern = f"{target.key_prefix}:*"
    if "on" not in state.flags or state.flags & {"nopass", "allkeys", "allchannels"}:
        return False
    if state.password_hashes != {redis_password_hash(target.password)}:
        return False
    if state.key_patterns != (pattern,) or state.channel_patterns != (pattern,):
        return False
    if state.selectors:
        return False
    have = effective_commands(state.command_rules, categories)
    want = effective_commands(REDIS_COMMAND_RULES, categories)
    return have is not None and have == want


# ---------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------

CLUSTER_RESOURCE = "kafka-cluster"


@dataclass(frozen=True, order=True)
class KafkaAcl:
    """One ALLOW binding for a principal from any host, in confluent-kafka's enum names."""

    resource_type: str  # TOPIC | GROUP | BROKER (the cluster)
    resource_name: str
    pattern_type: str  # LITERAL | PREFIXED
    operation: str  # READ | WRITE | DESCRIBE | IDEMPOTENT_WRITE
    principal: str  # "User:<name>"
    host: str = "*"
    permission: str = "ALLOW"


_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def validate_topic(name: str) -> None:
    if not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise PlanError(f"invalid Kafka topic name {name!r} (1-249 of [A-Za-z0-9._-])")


def kafka_acls(principal: str, topics: Sequence[str], group_prefix: str) -> frozenset[KafkaAcl]:
    """What the tenant principal needs: produce/consume its topics, consumer groups
    under its prefix, and idempotent produce (needed by brokers before 3.0)."""
    if not principal or ":" in principal or re.search(r"\s", principal):
        raise PlanError(f"invalid Kafka principal name {principal!r}")
    if not group_prefix:
        raise PlanError("consumer group prefix must not be empty")
    user = f"User:{principal}"
    out = {
        KafkaAcl("TOPIC", topic, "LITERAL", op, user)
        for topic in topics
        for op in ("READ", "WRITE", "DESCRIBE")
    }
    out.add(KafkaAcl("GROUP", group_prefix, "PREFIXED", "READ", user))
    out.add(KafkaAcl("BROKER", CLUSTER_RESOURCE, "LITERAL", "IDEMPOTENT_WRITE", user))
    return frozenset(out)


def diff_acls(
    have: Iterable[KafkaAcl], want: frozenset[KafkaAcl]
) -> tuple[list[KafkaAcl], list[KafkaAcl]]:
    """(to create, to delete): bindings of the principal nobody asked for are removed,
    so a grant made by hand can't widen a tenant's reach for long."""
    have_set = frozenset(have)
    return sorted(want - have_set), sorted(have_set - want)
