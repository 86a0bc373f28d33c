"""Canonical coordinates: a memory's unique address in its namespace (pure, no I/O).

A coordinate is 1..16 finite floats. `"1,2"`, `"1.0, 2.0"` and `[1, 2.0]` are the
same address: every form is parsed to a tuple of Python floats, and -0.0 is
folded into 0.0 so the address compares equal in PostgreSQL and in Python.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

MAX_DIMENSIONS = 16

Coordinate = tuple[float, ...]


class CoordinateError(ValueError):
    """The value is not a valid coordinate."""


def _to_float(value: object, position: int) -> float:
    # bool is an int subclass; `true` is not a number a client meant to send
    if isinstance(value, bool):
        raise CoordinateError(f"coordinate element {position} is a boolean, not a number")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range (~1.8e308)
            raise CoordinateError(f"coordinate element {position} is not finite") from None
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise CoordinateError(f"coordinate element {position} is empty")
        try:
            number = float(text)
        except ValueError:
            # the text itself is not echoed: error details never carry input
            raise CoordinateError(f"coordinate element {position} is not a number") from None
    else:
        raise CoordinateError(f"coordinate element {position} is not a number")
    if not math.isfinite(number):
        raise CoordinateError(f"coordinate element {position} is not finite")
    return number + 0.0  # -0.0 + 0.0 == 0.0: one address for zero


def parse_coordinate(value: str | Sequence[object]) -> Coordinate:
    """Parse `"1,2.5"` or `[1, 2.5]` into a canonical tuple; raise CoordinateError."""
    if isinstance(value, str):
        parts: Sequence[object] = value.split(",")
    elif isinstance(value, Sequence):
        parts = value
    else:
        raise CoordinateError("a coordinate is a list of numbers or a comma-separated string")
    if len(parts) == 0 or (isinstance(value, str) and not value.strip()):
        raise CoordinateError("a coordinate needs at least 1 number")
    if len(parts) > MAX_DIMENSIONS:
        raise CoordinateError(
            f"a coordinate has at most {MAX_DIMENSIONS} numbers, got {len(parts)}"
        )
    return tuple(_to_float(p, i) for i, p in enumerate(parts))


def format_coordinate(coordinate: Coordinate) -> str:
    """The canonical text form, e.g. `1.0,2.5` (repr keeps full float precision)."""
    return ",".join(repr(c) for c in coordinate)


def parse_key(key: str) -> uuid.UUID | Coordinate:
    """A path key is either a memory id (UUID) or a coordinate."""
    text = key.strip()
    if "," not in text and len(text) >= 32:
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
    return parse_coordinate(text)


def coordinate_for_id(memory_id: uuid.UUID) -> Coordinate:
    """A server-assigned address derived from the new id: two floats in [0, 1).

    Why: ids are random, so the address is unique with overwhelming probability
    and stable for the id (the service retries with a new id on a clash).
    """
    bits = memory_id.int
    hi = (bits >> 64) & ((1 << 52) - 1)
    lo = bits & ((1 << 52) - 1)
    return (hi / float(1 << 52), lo / float(1 << 52))


def validate_box(lower: Coordinate, upper: Coordinate) -> tuple[Coordinate, Coordinate]:
    """Check a bounding box: same length and lower <= upper in every dimension."""
    if len(lower) != len(upper):
        raise CoordinateError(
            f"box corners differ in length ({len(lower)} vs {len(upper)} dimensions)"
        )
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        if lo > hi:
            raise CoordinateError(f"box dimension {i}: min {lo} is above max {hi}")
    return lower, upper
