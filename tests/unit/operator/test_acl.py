"""Pure ACL planning: Redis user rules/comparison and Kafka bindings."""

from __future__ import annotations

import hashlib

import pytest

from memory_operator.acl import (
    KafkaAcl,
    diff_acls,
    effective_commands,
    kafka_acls,
    parse_getuser,
    redis_setuser_args,
    redis_user_matches,
)
from memory_operator.domain import CacheUserTarget, PlanError

TARGET = CacheUserTarget(username="mem-acme", password="tok", key_prefix="mem:acme")
PW_HASH = hashlib.sha256(b"tok").hexdigest()
CATEGORIES = {
    "all": frozenset(),  # unused by the evaluator, present in some servers' lists
    "admin": frozenset({"config", "acl", "shutdown"}),
    "dangerous": frozenset({"config", "acl", "shutdown", "flushall", "keys", "sort"}),
    "scripting": frozenset({"eval", "evalsha", "script"}),
    "connection": frozenset({"ping", "auth", "client", "client|kill"}),
    "keyspace": frozenset({"scan", "randomkey", "del", "keys"}),
    "string": frozenset({"get", "set"}),
}

# ACL GETUSER as Redis 7.0 renders the user redis_setuser_args creates (its own
# rule order), and as a raw flat reply with lists.
GRANTED = "-@all +set +del +pexpire +hmget +time +fcall +ping +get +hset"
REPLY_7 = {
    "flags": ["on", "sanitize-payload"],
    "passwords": [PW_HASH],
    "commands": GRANTED,
    "keys": "~mem:acme:*",
    "channels": "&mem:acme:*",
    "selectors": [],
}
REPLY_FLAT = [
    "flags", ["on"],
    "passwords", [PW_HASH],
    "commands", "-@all +ping +set +fcall +time +get +del +hmget +hset +pexpire",
    "keys", ["mem:acme:*"],
    "channels", ["mem:acme:*"],
]  # fmt: skip


def test_setuser_args_replace_everything() -> None:
    args = redis_setuser_args(TARGET)
    assert args[:7] == ["mem-acme", "reset", "resetchannels", "on", ">tok", "~mem:acme:*",
                        "&mem:acme:*"]  # fmt: skip
    # Deny everything, then only what the runtime sends: no scripting, no inspection.
    assert args[7] == "-@all"
    assert set(args[8:]) == set(GRANTED.split()[1:])
    assert not {"+eval", "+evalsha", "+script", "+function", "+dbsize", "+memory"} & set(args)


@pytest.mark.parametrize("reply", [REPLY_7, REPLY_FLAT])
def test_both_server_renderings_match_the_target(reply: object) -> None:
    state = parse_getuser(reply)
    assert state is not None
    assert redis_user_matches(state, TARGET, CATEGORIES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("passwords", [hashlib.sha256(b"old").hexdigest()]),
        ("passwords", [PW_HASH, hashlib.sha256(b"old").hexdigest()]),
        ("keys", ["*"]),
        ("keys", ["mem:acme:*", "mem:other:*"]),
        ("channels", ["*"]),
        ("flags", ["off"]),
        ("flags", ["on", "nopass"]),
        ("commands", "+@all -@dangerous -scan -randomkey"),  # the pre-issue-14 rules
        ("commands", GRANTED + " +eval"),
        ("commands", GRANTED + " +@scripting"),
        ("commands", GRANTED.replace(" +fcall", "")),
        ("commands", GRANTED + " -@unknowncategory"),
    ],
)
def test_any_difference_is_detected(field: str, value: object) -> None:
    reply = dict(zip(REPLY_FLAT[::2], REPLY_FLAT[1::2], strict=True))
    reply[field] = value
    assert not redis_user_matches(parse_getuser(reply), TARGET, CATEGORIES)


def test_selectors_are_a_difference() -> None:
    reply = dict(REPLY_7, selectors=[["commands", "+@all", "keys", "~*"]])
    assert not redis_user_matches(parse_getuser(reply), TARGET, CATEGORIES)


def test_missing_user() -> None:
    assert parse_getuser(None) is None
    assert not redis_user_matches(None, TARGET, CATEGORIES)


def test_effective_commands_semantics() -> None:
    allowed = effective_commands(["+@all", "-@dangerous", "+sort"], CATEGORIES)
    assert allowed is not None
    assert {"sort", "get"} <= allowed
    assert "flushall" not in allowed
    # A command rule covers its subcommands.
    without_client = effective_commands(["+@all", "-client"], CATEGORIES)
    assert without_client is not None
    assert "client|kill" not in without_client
    assert "ping" in without_client
    assert effective_commands(["nocommands", "+get"], CATEGORIES) == {"get"}
    assert effective_commands(["bogus"], CATEGORIES) is None


@pytest.mark.parametrize(
    "target",
    [
        CacheUserTarget("mem-x", "pw", "mem:*"),
        CacheUserTarget("mem-x", "pw", "mem:[ab]"),
        CacheUserTarget("mem-x", "pw", ""),
        CacheUserTarget("default", "pw", "mem:x"),
        CacheUserTarget("", "pw", "mem:x"),
        CacheUserTarget("mem-x", "", "mem:x"),
        CacheUserTarget("mem-x", "p w", "mem:x"),
    ],
)
def test_bad_redis_targets_are_refused(target: CacheUserTarget) -> None:
    with pytest.raises(PlanError):
        redis_setuser_args(target)


def test_kafka_acls_cover_topics_groups_and_idempotence() -> None:
    acls = kafka_acls("mem-acme", ["mem.acme.events"], "mem-acme")
    user = "User:mem-acme"
    assert acls == {
        KafkaAcl("TOPIC", "mem.acme.events", "LITERAL", "READ", user),
        KafkaAcl("TOPIC", "mem.acme.events", "LITERAL", "WRITE", user),
        KafkaAcl("TOPIC", "mem.acme.events", "LITERAL", "DESCRIBE", user),
        KafkaAcl("GROUP", "mem-acme", "PREFIXED", "READ", user),
        KafkaAcl("BROKER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE", user),
    }


def test_kafka_acl_diff_creates_missing_and_removes_unrequested() -> None:
    want = kafka_acls("t", ["a"], "t")
    stray = KafkaAcl("TOPIC", "other", "LITERAL", "READ", "User:t")
    have = [*sorted(want)[:2], stray]
    create, delete = diff_acls(have, want)
    assert set(create) == want - set(have)
    assert delete == [stray]
    assert diff_acls(want, want) == ([], [])


@pytest.mark.parametrize("principal", ["", "a b", "User:x"])
def test_bad_kafka_principal(principal: str) -> None:
    with pytest.raises(PlanError):
        kafka_acls(principal, ["t"], "g")
