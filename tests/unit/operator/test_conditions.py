"""conditions.py: API conventions, lastTransitionTime only on flips."""

from __future__ import annotations

from typing import Any

import pytest

from memory_operator import conditions as c


def test_transition_time_kept_unless_status_flips() -> None:
    conds = c.set_condition([], c.SCHEMA_READY, c.FALSE, "PostgresUnavailable", "down", 1, "t1")
    conds = c.set_condition(conds, c.SCHEMA_READY, c.FALSE, "PostgresRejected", "no", 2, "t2")
    cond = c.get_condition(conds, c.SCHEMA_READY)
    assert cond is not None
    assert cond["lastTransitionTime"] == "t1"
    assert (cond["reason"], cond["message"], cond["observedGeneration"]) == (
        "PostgresRejected",
        "no",
        2,
    )
    conds = c.set_condition(conds, c.SCHEMA_READY, c.TRUE, "SchemaReady", "ok", 2, "t3")
    assert c.get_condition(conds, c.SCHEMA_READY)["lastTransitionTime"] == "t3"


def test_set_condition_does_not_mutate_input() -> None:
    original = [{"type": "X", "status": "True", "reason": "A", "lastTransitionTime": "t0"}]
    c.set_condition(original, "X", c.FALSE, "SchemaReady", "m", 1, "t1")
    assert original[0]["status"] == "True"


@pytest.mark.parametrize("reason", ["not camel", "lower", "With-Dash", "", "SchemaReadyy"])
def test_reason_must_be_a_known_reason(reason: str) -> None:
    with pytest.raises(ValueError, match="is not a valid Reason"):
        c.set_condition([], "X", c.TRUE, reason, "", 1, "t")


def test_a_reason_is_stored_as_its_plain_string() -> None:
    (cond,) = c.set_condition([], "X", c.TRUE, c.Reason.SCHEMA_READY, "", 1, "t")
    assert type(cond["reason"]) is str
    assert cond["reason"] == "SchemaReady"


def test_bad_status_rejected() -> None:
    with pytest.raises(ValueError, match="True, False or Unknown"):
        c.set_condition([], "X", "yes", "Ready", "", 1, "t")


def _all_true() -> list[dict]:
    conds: list[dict] = []
    for t in c.STEP_TYPES:
        reason = "DeploymentAvailable" if t == c.API_READY else t
        conds = c.set_condition(conds, t, c.TRUE, reason, "ok", 1, "t0")
    return conds


def test_summary_ready_when_all_steps_true() -> None:
    conds = c.summarize(_all_true(), 1, "t1")
    ready = c.get_condition(conds, c.READY)
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Ready")


def test_summary_takes_first_failing_step() -> None:
    conds = _all_true()
    conds = c.set_condition(conds, c.TOPICS_READY, c.FALSE, "KafkaUnavailable", "broker", 1, "t")
    conds = c.set_condition(conds, c.API_READY, c.FALSE, "DeploymentNotAvailable", "0/1", 1, "t")
    ready = c.get_condition(c.summarize(conds, 1, "t1"), c.READY)
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "KafkaUnavailable")
    assert ready["message"] == "TopicsReady: broker"


def test_summary_unknown_when_step_missing() -> None:
    conds = c.set_condition([], c.SCHEMA_READY, c.TRUE, "SchemaReady", "ok", 1, "t")
    ready = c.get_condition(c.summarize(conds, 1, "t"), c.READY)
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("Unknown", "Reconciling")


def test_long_messages_truncated() -> None:
    conds = c.set_condition([], "X", c.FALSE, "PostgresError", "m" * 10000, 1, "t")
    assert len(conds[0]["message"]) == c.MAX_MESSAGE


def _ready_cr(generation: int, ready: dict[str, Any] | None) -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "status": {"conditions": [ready] if ready else []}}  # fmt: skip


@pytest.mark.parametrize(
    ("cr", "expected"),
    [
        ({"metadata": {"generation": 1}}, c.UNKNOWN),  # not reconciled yet
        (_ready_cr(1, {"type": "Ready", "status": "True", "observedGeneration": 1}), c.TRUE),
        (_ready_cr(1, {"type": "Ready", "status": "False", "observedGeneration": 1}), c.FALSE),
        (_ready_cr(1, {"type": "Ready", "status": "Unknown", "observedGeneration": 1}), c.UNKNOWN),
        # judged for the previous spec: says nothing about this one
        (_ready_cr(2, {"type": "Ready", "status": "True", "observedGeneration": 1}), c.UNKNOWN),
    ],
)
def test_ready_status_for_monitoring(cr: dict[str, Any], expected: str) -> None:
    assert c.ready_status(cr) == expected
