"""The condition reasons and Event reasons are string enums (conditions.py), and
docs/OPERATOR.md lists exactly those: a reason added, renamed or dropped on
either side fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from memory_operator import conditions as c
from memory_operator.domain import Outcome

ROOT = Path(__file__).resolve().parents[3]
OPERATOR_MD = ROOT / "docs" / "OPERATOR.md"
PACKAGE = ROOT / "operator" / "memory_operator"
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
TICKED = re.compile(r"`([^`]+)`")


def _table(after: str) -> list[list[str]]:
    """The cells of the first Markdown table after the line starting with `after`."""
    lines = OPERATOR_MD.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"no table after {after!r} in {OPERATOR_MD}"
    return rows[2:]  # without the header and its rule


def test_every_reason_is_camel_case_and_unique() -> None:
    for enum in (c.Reason, c.EventReason):
        values = [member.value for member in enum]
        assert len(values) == len(set(values)), enum
        assert [v for v in values if not CAMEL.match(v)] == [], enum


def test_the_conditions_table_lists_exactly_the_reasons() -> None:
    rows = _table("## Conditions and reasons")
    assert {row[0] for row in rows} == {*c.STEP_TYPES, c.READY, c.PAUSED}
    documented = {name for row in rows for cell in row[1:] for name in TICKED.findall(cell)}
    assert documented == {reason.value for reason in c.Reason}


def test_the_events_table_lists_exactly_the_event_reasons() -> None:
    rows = _table("**Events.**")
    assert {row[0] for row in rows} == {t.value for t in c.EventType}
    documented = {name for row in rows for name in TICKED.findall(row[1])}
    assert documented == {reason.value for reason in c.EventReason}


@pytest.mark.parametrize("noun", ["Schema", "Collection", "Topics", "CacheUser"])
def test_every_backend_write_has_its_event_reason(noun: str) -> None:
    # Reconciler.record names the Event after the step's noun and the Outcome.
    for outcome in Outcome:
        if outcome.wrote:
            assert c.EventReason(f"{noun}{outcome.value}")


def test_every_spec_refusal_reason_is_a_reason() -> None:
    """InvalidSpecError's reason becomes Ready's: each literal one in the package
    must be a Reason (set_condition would refuse it mid-pass otherwise)."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "InvalidSpecError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    assert {"InvalidSpec", "InvalidTenant", "NameTooLong"} <= found  # the scan sees them
    assert found - {reason.value for reason in c.Reason} == set()
