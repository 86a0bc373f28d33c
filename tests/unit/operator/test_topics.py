"""Pure Kafka topic planning: create, grow, retention; shrink and RF changes refused."""

from __future__ import annotations

import dataclasses

import pytest

from memory_operator.adapters.kafka import group_prefix
from memory_operator.domain import PlanError, TopicsTarget
from memory_operator.topics import TopicsPlan, TopicState, plan_topics

TARGET = TopicsTarget(
    names=("mem.acme.events",), partitions=3, replication_factor=1, retention_ms=604800000
)
SAME = TopicState(partitions=3, replication_factor=1, retention_ms="604800000")


def test_absent_topics_are_created() -> None:
    assert plan_topics({"mem.acme.events": None}, TARGET) == TopicsPlan(create=("mem.acme.events",))
    assert plan_topics({}, TARGET).create == ("mem.acme.events",)


def test_matching_topics_need_nothing() -> None:
    assert plan_topics({"mem.acme.events": SAME}, TARGET).empty


def test_partitions_grow_and_retention_is_reset() -> None:
    state = dataclasses.replace(SAME, partitions=2, retention_ms="1000")
    plan = plan_topics({"mem.acme.events": state}, TARGET)
    assert plan == TopicsPlan(grow={"mem.acme.events": 3}, retention=("mem.acme.events",))


def test_unset_retention_counts_as_different() -> None:
    state = dataclasses.replace(SAME, retention_ms=None)
    assert plan_topics({"mem.acme.events": state}, TARGET).retention == ("mem.acme.events",)


def test_shrink_is_refused() -> None:
    with pytest.raises(PlanError, match="can't shrink"):
        plan_topics({"mem.acme.events": dataclasses.replace(SAME, partitions=6)}, TARGET)


def test_replication_factor_change_is_refused() -> None:
    with pytest.raises(PlanError, match="replication factor 3"):
        plan_topics({"mem.acme.events": dataclasses.replace(SAME, replication_factor=3)}, TARGET)


def test_one_refused_topic_refuses_the_whole_plan() -> None:
    target = dataclasses.replace(TARGET, names=("a", "b"))
    with pytest.raises(PlanError):
        plan_topics({"a": None, "b": dataclasses.replace(SAME, partitions=9)}, target)


@pytest.mark.parametrize(
    "change",
    [
        {"names": ()},
        {"names": ("has space",)},
        {"names": ("x" * 250,)},
        {"names": ("..",)},
        {"partitions": 0},
        {"replication_factor": 0},
        {"retention_ms": -2},
        {"principal": "mem-acme"},
        {"password": "pw"},
        {"principal": "mem-acme", "password": ""},
    ],
)
def test_bad_targets_are_refused(change: dict) -> None:
    with pytest.raises(PlanError):
        plan_topics({}, dataclasses.replace(TARGET, **change))


def test_infinite_retention_is_allowed() -> None:
    target = dataclasses.replace(TARGET, retention_ms=-1)
    assert plan_topics(
        {"mem.acme.events": dataclasses.replace(SAME, retention_ms="-1")}, target
    ).empty


def test_group_prefix_cannot_match_another_tenant() -> None:
    # Tenant names are [a-z0-9-]: "mem-acme." never prefixes "mem-acme-corp.*".
    assert not f"{group_prefix('mem-acme-corp')}reader".startswith(group_prefix("mem-acme"))
