"""What a pass is made of: its context (Pass), handed to every step, and what a
step reports (StepOutcome: done / waiting / failed with a reason). Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from memory_operator import conditions as c
from memory_operator.conditions import Reason
from memory_operator.kube_types import MemoryNamespace
from memory_operator.naming import Names
from memory_operator.spec import MemoryNamespaceSpec

ErrorKind = Literal["temporary", "permanent"]


class StepError(Exception):
    """A step (or the I/O under it) can't go on; run_step turns it into a failed outcome."""

    def __init__(self, kind: ErrorKind, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.message = message


class State(enum.Enum):
    DONE = "done"  # the condition is True
    WAITING = "waiting"  # False for now, and that is no error (a rollout in progress)
    FAILED = "failed"  # False with an error; later steps don't run


@dataclass(frozen=True)
class StepOutcome:
    """What a step reports; its condition is written from it."""

    state: State
    reason: Reason
    message: str
    error: ErrorKind | None = None

    @classmethod
    def done(cls, reason: Reason, message: str) -> StepOutcome:
        return cls(State.DONE, reason, message)

    @classmethod
    def waiting(cls, reason: Reason, message: str) -> StepOutcome:
        return cls(State.WAITING, reason, message)

    @classmethod
    def failed(cls, kind: ErrorKind, reason: Reason, message: str) -> StepOutcome:
        return cls(State.FAILED, reason, message, kind)

    @property
    def condition_status(self) -> str:
        return c.TRUE if self.state is State.DONE else c.FALSE


@dataclass
class Pass:
    """One pass's context: the CR, what it asks for, and what the pass did so far.
    The steps read it and add to it (passwords, writes)."""

    cr: MemoryNamespace
    spec: MemoryNamespaceSpec
    names: Names
    generation: int
    now: str
    writes: list[str]  # what this pass changed, for logs/tests (Result.writes)
    passwords: dict[str, str] = field(default_factory=dict)  # the credentials Secret's
    new_credentials: bool = False  # the credentials Secret was written in this pass

    @property
    def name(self) -> str:
        return str(self.cr["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.cr["metadata"]["namespace"])

    def wrote(self, what: str) -> None:
        self.writes.append(what)


def run_step(step: Callable[[], StepOutcome]) -> StepOutcome:
    """Run one step; a StepError it raises is its failed outcome."""
    try:
        return step()
    except StepError as err:
        return StepOutcome.failed(err.kind, err.reason, err.message)
