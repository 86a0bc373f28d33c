"""Coordinates: parsing, canonical form, keys, boxes."""

from __future__ import annotations

import uuid

import pytest

from memory_runtime.coordinates import (
    MAX_DIMENSIONS,
    CoordinateError,
    coordinate_for_id,
    format_coordinate,
    parse_coordinate,
    parse_key,
    validate_box,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,2", (1.0, 2.0)),
        ("1.0, 2.0", (1.0, 2.0)),
        ([1, 2.0], (1.0, 2.0)),
        (" -3.5 ", (-3.5,)),
        ("1e3,0", (1000.0, 0.0)),
    ],
)
def test_equivalent_forms_parse_to_the_same_address(raw: object, expected: tuple[float, ...]):
    assert parse_coordinate(raw) == expected  # type: ignore[arg-type]


def test_string_and_list_forms_are_the_same_address():
    assert parse_coordinate("1,2") == parse_coordinate("1.0,2.0") == parse_coordinate([1, 2])


def test_negative_zero_is_zero():
    parsed = parse_coordinate("-0.0,1")
    assert str(parsed[0]) == "0.0"
    assert format_coordinate(parsed) == "0.0,1.0"


@pytest.mark.parametrize(
    "raw",
    ["", "1,,2", "a,b", "nan", "1,inf", "-inf", [], [True], [1, None], ["1", "x"]],
)
def test_invalid_coordinates_are_refused(raw: object):
    with pytest.raises(CoordinateError):
        parse_coordinate(raw)  # type: ignore[arg-type]


def test_dimension_limit():
    assert len(parse_coordinate([0.5] * MAX_DIMENSIONS)) == MAX_DIMENSIONS
    with pytest.raises(CoordinateError, match="at most 16"):
        parse_coordinate([0.5] * (MAX_DIMENSIONS + 1))


def test_format_round_trips_full_precision():
    value = (0.1 + 0.2, 1 / 3)
    assert parse_coordinate(format_coordinate(value)) == value


def test_parse_key_distinguishes_ids_from_coordinates():
    memory_id = uuid.uuid4()
    assert parse_key(str(memory_id)) == memory_id
    assert parse_key(memory_id.hex) == memory_id
    assert parse_key("1,2") == (1.0, 2.0)
    assert parse_key("7") == (7.0,)
    with pytest.raises(CoordinateError):
        parse_key("not-a-key")


def test_assigned_coordinates_are_stable_distinct_and_in_unit_square():
    a, b = uuid.uuid4(), uuid.uuid4()
    ca = coordinate_for_id(a)
    assert ca == coordinate_for_id(a)
    assert ca != coordinate_for_id(b)
    assert all(0.0 <= c < 1.0 for c in ca + coordinate_for_id(b))


def test_box_validation():
    assert validate_box((0.0, 0.0), (1.0, 1.0)) == ((0.0, 0.0), (1.0, 1.0))
    with pytest.raises(CoordinateError, match="differ in length"):
        validate_box((0.0,), (1.0, 1.0))
    with pytest.raises(CoordinateError, match="above max"):
        validate_box((2.0,), (1.0,))
