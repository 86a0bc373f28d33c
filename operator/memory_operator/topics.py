"""Pure planning for a tenant's Kafka topics: observed topics in, the change out.

The adapter (adapters/kafka.py) describes the topics into `TopicState`s;
`plan_topics` compares them with the `TopicsTarget` and returns only what must
change (an empty plan = no write at all). What Kafka can't do in place (shrink
partitions, change the replication factor) is a PlanError before any write.
No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from memory_operator.acl import validate_topic
from memory_operator.domain import PlanError, TopicsTarget


@dataclass(frozen=True)
class TopicState:
    partitions: int
    replication_factor: int
    retention_ms: str | None


@dataclass(frozen=True)
class TopicsPlan:
    create: tuple[str, ...] = ()
    grow: Mapping[str, int] = field(default_factory=dict)  # topic -> new partition count
    retention: tuple[str, ...] = ()  # topics whose retention.ms must be set

    @property
    def empty(self) -> bool:
        return not (self.create or self.grow or self.retention)


def validate_target(target: TopicsTarget) -> None:
    if not target.names:
        raise PlanError("at least one topic name is required")
    for name in target.names:
        validate_topic(name)
    if target.partitions < 1:
        raise PlanError(f"partitions must be >= 1, not {target.partitions}")
    if target.replication_factor < 1:
        raise PlanError(f"replication factor must be >= 1, not {target.replication_factor}")
    if target.retention_ms < -1:
        raise PlanError(f"retention.ms must be >= -1 (-1 = forever), not {target.retention_ms}")
    if (target.principal is None) != (target.password is None) or target.password == "":
        raise PlanError("principal and password are given together, and the password is not empty")


def plan_topics(observed: Mapping[str, TopicState | None], target: TopicsTarget) -> TopicsPlan:
    """What to create/grow/reconfigure; raises PlanError for what Kafka can't do."""
    validate_target(target)
    create: list[str] = []
    grow: dict[str, int] = {}
    retention: list[str] = []
    for name in target.names:
        state = observed.get(name)
        if state is None:
            create.append(name)
            continue
        if state.partitions > target.partitions:
            raise PlanError(
                f"topic {name!r} has {state.partitions} partitions; Kafka can't shrink it "
                f"to {target.partitions}"
            )
        if state.replication_factor != target.replication_factor:
            raise PlanError(
                f"topic {name!r} has replication factor {state.replication_factor}, the spec "
                f"asks {target.replication_factor}; it can't change in place"
            )
        if state.partitions < target.partitions:
            grow[name] = target.partitions
        if state.retention_ms != str(target.retention_ms):
            retention.append(name)
    return TopicsPlan(tuple(create), grow, tuple(retention))
