"""steps.py: what a step reports, and how a StepError becomes a failed outcome."""

from __future__ import annotations

import pytest

from memory_operator import conditions as c
from memory_operator.conditions import Reason
from memory_operator.steps import State, StepError, StepOutcome, run_step


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (StepOutcome.done(Reason.SCHEMA_READY, "ok"), c.TRUE),
        (StepOutcome.waiting(Reason.DEPLOYMENT_NOT_AVAILABLE, "0/1"), c.FALSE),
        (StepOutcome.failed("temporary", Reason.POSTGRES_UNAVAILABLE, "down"), c.FALSE),
    ],
)
def test_only_done_makes_the_condition_true(outcome: StepOutcome, status: str) -> None:
    assert outcome.condition_status == status


def test_waiting_is_no_error() -> None:
    waiting = StepOutcome.waiting(Reason.DEPLOYMENT_NOT_AVAILABLE, "0/1")
    assert (waiting.state, waiting.error) == (State.WAITING, None)


def test_a_step_error_is_the_failed_outcome() -> None:
    def step() -> StepOutcome:
        raise StepError("permanent", Reason.QDRANT_REJECTED, "dimensions can't change")

    assert run_step(step) == StepOutcome(
        State.FAILED, Reason.QDRANT_REJECTED, "dimensions can't change", "permanent"
    )


def test_a_returned_outcome_passes_through() -> None:
    done = StepOutcome.done(Reason.CACHE_READY, "user limited")
    assert run_step(lambda: done) is done


def test_other_exceptions_are_not_swallowed() -> None:
    def step() -> StepOutcome:
        raise KeyError("a bug, not a step failure")

    with pytest.raises(KeyError):
        run_step(step)
