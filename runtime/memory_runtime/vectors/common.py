"""Shared, pure checks and score conversions for both vector backends."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from memory_contract.limits import DISTANCES
from memory_runtime.ports import VectorIndex, VectorItem


class VectorIndexError(ValueError):
    """Bad input to a vector index (wrong dimension, bad filter); nothing was written."""


class VectorIndexUnavailable(RuntimeError):
    """The engine is unreachable or not ready (connection, timeout, 5xx, index missing).

    The only search failure recall may degrade on: bad input (VectorIndexError)
    and bugs must surface, not turn into quietly different results.
    """


class AfterCommit:
    """The plain StagedWrite: the items are upserted when `commit` is called."""

    writes_ahead = False

    def __init__(self, index: VectorIndex) -> None:
        self._index = index
        self._items: list[VectorItem] = []

    def write(self, items: Sequence[VectorItem]) -> None:
        self._items.extend(items)

    def commit(self, last: Callable[[Any], None] | None = None) -> None:
        items, self._items = self._items, []
        self._index.upsert(items)  # no transaction of ours for `last` to run in

    def abort(self) -> None:
        self._items = []


class Shaped:
    """What every index answers about the vectors it holds (set by its constructor)."""

    _dimensions: int
    _distance: str

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def distance(self) -> str:
        return self._distance


def normalise_distance(distance: str) -> str:
    """Accept `cosine`, `COSINE`, `Cosine` ...; return the canonical spelling."""
    for name in DISTANCES:
        if distance.lower() == name.lower():
            return name
    raise VectorIndexError(f"unknown distance {distance!r}; expected one of {DISTANCES}")


def _check_length(vector: Sequence[float], dimensions: int) -> None:
    if len(vector) != dimensions:
        raise VectorIndexError(
            f"vector has {len(vector)} dimensions, the index expects {dimensions}"
        )


def check_array(vector: Sequence[float], dimensions: int) -> np.ndarray:
    """check_vector's checks, as one float32 array (numpy, not a loop per element)."""
    _check_length(vector, dimensions)
    try:
        values = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise VectorIndexError("vector values must be finite numbers") from None
    if values.ndim != 1 or not np.isfinite(values).all():
        raise VectorIndexError("vector values must be finite numbers")
    return values.astype(np.float32)


def check_vector(vector: Sequence[float], dimensions: int) -> list[float]:
    _check_length(vector, dimensions)
    values = [float(x) for x in vector]
    if not all(math.isfinite(x) for x in values):
        raise VectorIndexError("vector values must be finite numbers")
    return values


def check_top_k(top_k: int) -> None:
    if not 1 <= top_k <= 1000:
        raise VectorIndexError(f"top_k must be between 1 and 1000, got {top_k}")


def similarity(distance: str, raw: float) -> float:
    """Engine output -> "higher is better" similarity, identical for both backends.

    Cosine: cosine similarity. Dot: the inner product. Euclid: 1 / (1 + L2 distance).
    `raw` is the cosine similarity / inner product / L2 distance respectively.
    """
    if distance == "Euclid":
        return 1.0 / (1.0 + raw)
    return raw


def similarities(
    distance: str, query: Sequence[float], vectors: Sequence[Sequence[float]]
) -> list[float]:
    """What an engine would report for each of `vectors` against `query`, mapped
    by `similarity`: for candidates the index did not return (found by keyword).

    Row-wise sums (numpy's pairwise summation, no BLAS threads) so the same
    inputs always give the same bits. A zero vector has no cosine: NaN.
    """
    if not vectors:
        return []
    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(vectors, dtype=np.float64)
    if distance == "Euclid":
        raw = np.sqrt(((m - q) ** 2).sum(axis=1))
    else:
        raw = (m * q).sum(axis=1)
        if distance == "Cosine":
            with np.errstate(divide="ignore", invalid="ignore"):
                raw = raw / (np.sqrt((m * m).sum(axis=1)) * np.sqrt((q * q).sum()))
    return [similarity(distance, float(r)) for r in raw]
