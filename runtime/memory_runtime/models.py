"""Request and response models of the memory API (pydantic, no I/O).

The limits below bound what one request can cost and hold for every path that
writes a memory: the API routes, the SomaFractalMemory-compatible routes and
import all validate with these models (docs/API.md, "Limits").

Why ~550 lines: one model per request and answer of the API (the OpenAPI
document, the MCP tools' schemas and the client all read these), with the
limits and the validators they share.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from memory_contract.limits import MAX_DIMENSIONS
from memory_runtime.coordinates import Coordinate, CoordinateError, parse_coordinate
from memory_runtime.filters import (
    INT64,
    VectorFilter,
    as_utc,
    check_metadata_key,
    check_metadata_value,
)
from memory_runtime.record import MemoryRecord, MemoryType

# A text of this many characters keeps PostgreSQL's tsvector (1 MB) far from its
# limit and full-text indexing in the milliseconds; a derived text is cut to it.
MAX_TEXT_CHARS = 100_000
MAX_QUERY_CHARS = 10_000
MAX_TAGS = 64
MAX_TAG_CHARS = 128
MAX_SCOPE_CHARS = 256
MAX_JSON_DEPTH = 32  # nesting of payload and metadata objects/lists
MAX_VECTOR_DIMENSIONS = MAX_DIMENSIONS  # every backend's bound (memory_contract.limits)
# Vectors are stored as float32; squares of elements this size summed over
# MAX_VECTOR_DIMENSIONS stay finite in float32 distance arithmetic.
MAX_VECTOR_ELEMENT = 1e9
MAX_BATCH = 1000


def clean_text(value: str) -> str:
    """Refuse what PostgreSQL cannot store: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


def _json_value(value: object, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        clean_text(value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ValueError("JSON integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("JSON numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            clean_text(key)
            _json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_value(item, depth + 1)
    else:
        raise ValueError("not a JSON value")


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _json_value(value, 1)
    return value


def _utc_representable(value: datetime) -> datetime:
    # 0001-01-01T00:00+14:00 is a valid ISO time but before year 1 in UTC
    try:
        if value.tzinfo is not None:
            value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time is out of range once converted to UTC") from None
    return value


# A JSON object as stored (payload, metadata): finite numbers, 64-bit
# integers, strings PostgreSQL can hold, at most MAX_JSON_DEPTH levels.
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
Text = Annotated[str, AfterValidator(clean_text)]
Timestamp = Annotated[datetime, AfterValidator(_utc_representable)]


def _aware(value: datetime, info: ValidationInfo) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{info.field_name} needs a timezone (e.g. 2030-01-01T00:00:00Z)")
    return value


# A time a client writes into a memory: without a zone it would be a guess.
AwareTimestamp = Annotated[Timestamp, AfterValidator(_aware)]
# A time an import carries over: kept in UTC, a naive one taken as UTC.
UtcTimestamp = Annotated[Timestamp, AfterValidator(as_utc)]

RecallMode = Literal["hybrid", "vector", "keyword"]
Direction = Literal["out", "in", "both"]
Degradation = Literal["vector", "embedding"]

ScopeValue = Annotated[Text, Field(min_length=1, max_length=MAX_SCOPE_CHARS)]
Tag = Annotated[Text, Field(min_length=1, max_length=MAX_TAG_CHARS)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
LinkType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
# What a client may send ("1,2" or [1, 2]); a model's validator leaves numbers.
CoordinateIn = list[float] | str


def coordinate_of(value: CoordinateIn | None) -> Coordinate | None:
    """A validated coordinate field as the numbers its validator left."""
    if isinstance(value, str):
        raise TypeError("a coordinate field read before validation")
    return tuple(value) if value is not None else None


MAX_DEPTH = 6  # graph traversal hops (neighbours depth, path max_depth)
MAX_NEIGHBOURS = 1000  # neighbours per answer


def _metadata_key(key: str) -> str:
    clean_text(key)
    check_metadata_key(key)
    return key


def _metadata_value(value: object) -> str | int | float | bool:
    check_metadata_value(value)  # the filter's rule (memory_runtime.filters)
    if isinstance(value, str):
        return clean_text(value)
    assert isinstance(value, bool | int | float)
    return value


MetadataKey = Annotated[str, AfterValidator(_metadata_key)]
MetadataValue = Annotated[str | int | float | bool, BeforeValidator(_metadata_value)]


def _coordinate(value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return parse_coordinate(value)  # type: ignore[arg-type]
    except CoordinateError as exc:
        raise ValueError(str(exc)) from None


# Each element checked by pydantic-core itself (finite, within bounds): a
# per-element Python validator cost ~0.1 s per 500 384-d vectors of a batch.
VectorElement = Annotated[
    float, Field(allow_inf_nan=False, ge=-MAX_VECTOR_ELEMENT, le=MAX_VECTOR_ELEMENT)
]
Vector = Annotated[
    list[VectorElement],
    Field(min_length=1, max_length=MAX_VECTOR_DIMENSIONS),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryIn(_Strict):
    """A memory to store. Storing at an existing coordinate replaces that memory."""

    coordinate: CoordinateIn | None = Field(
        default=None, description='1-16 finite numbers, as a list or `"1,2"`; assigned if absent'
    )
    memory_type: MemoryType = "episodic"
    payload: JsonObject = Field(default_factory=dict)
    text: Text | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: JsonObject = Field(default_factory=dict)
    tags: Tags = Field(default_factory=list)
    agent_id: ScopeValue | None = None
    user_id: ScopeValue | None = None
    session_id: ScopeValue | None = None
    expires_at: AwareTimestamp | None = None
    occurred_at: AwareTimestamp | None = Field(
        default=None, description="when what it records happened; default: when it is stored"
    )
    vector: Vector | None = None

    @field_validator("coordinate", mode="before")
    @classmethod
    def _check_coordinate(cls, value: object) -> list[float] | None:
        parsed = _coordinate(value)
        return list(parsed) if parsed is not None else None


class MemoryBatchIn(_Strict):
    memories: list[MemoryIn] = Field(min_length=1, max_length=MAX_BATCH)


class MemoryPatch(_Strict):
    """Fields to replace; absent fields are kept. `if_version` makes the change conditional."""

    payload: JsonObject | None = None
    text: Text | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    importance: float | None = Field(default=None, ge=0.0, le=1.0)
    metadata: JsonObject | None = None
    tags: Tags | None = None
    expires_at: AwareTimestamp | None = None
    occurred_at: AwareTimestamp | None = None
    if_version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _not_empty(self) -> MemoryPatch:
        changed = self.model_fields_set - {"if_version"}
        if not changed:
            raise ValueError(
                "nothing to change: send payload, text, importance, metadata, tags or expires_at"
            )
        return self


class Memory(MemoryRecord):
    """A stored memory, and whether it has a vector (the vector itself only on request)."""

    # its fields: memory_runtime.record.MemoryRecord (the row's too)

    has_vector: bool
    vector: list[float] | None = Field(
        default=None,
        description="only present with include_vector=true",
        exclude_if=lambda v: v is None,
    )


class MemoryList(BaseModel):
    memories: list[Memory]


class Filters(_Strict):
    memory_type: MemoryType | None = None
    tags: Tags = Field(default_factory=list)
    agent_id: ScopeValue | None = None
    user_id: ScopeValue | None = None
    session_id: ScopeValue | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict, description="equality per top-level key; scalar values only"
    )
    created_from: Timestamp | None = None
    created_to: Timestamp | None = None
    occurred_from: Timestamp | None = None
    occurred_to: Timestamp | None = None
    coordinate_min: CoordinateIn | None = None
    coordinate_max: CoordinateIn | None = None

    @field_validator("coordinate_min", "coordinate_max", mode="before")
    @classmethod
    def _check_box(cls, value: object) -> list[float] | None:
        parsed = _coordinate(value)
        return list(parsed) if parsed is not None else None

    _filter: VectorFilter | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _engine_filter(self) -> Filters:
        # the filter's own rules (memory_runtime.filters), checked once, here
        self._filter = self._build_filter()
        return self

    def _build_filter(self) -> VectorFilter:
        return VectorFilter(
            memory_types=(self.memory_type,) if self.memory_type else (),
            tags=tuple(self.tags),
            agent_id=self.agent_id,
            user_id=self.user_id,
            session_id=self.session_id,
            metadata=dict(self.metadata),
            created_from=self.created_from,
            created_to=self.created_to,
            occurred_from=self.occurred_from,
            occurred_to=self.occurred_to,
            coordinate_min=_box_bound(self.coordinate_min),
            coordinate_max=_box_bound(self.coordinate_max),
        )

    def to_filter(self) -> VectorFilter:
        """What the engines apply (FilterError for a model built unvalidated)."""
        return self._filter if self._filter is not None else self._build_filter()


def _box_bound(value: CoordinateIn | None) -> tuple[float, ...] | None:
    # a list by now (Filters._check_box parsed it)
    return None if value is None else tuple(float(c) for c in value)


class SearchIn(Filters):
    query: Text | None = Field(default=None, max_length=MAX_QUERY_CHARS)
    vector: Vector | None = None
    top_k: int = Field(default=10, ge=1, le=100)
    mode: RecallMode = "hybrid"
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="vector share in hybrid")
    recency_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    importance_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    fusion: Literal["relative", "rrf"] = Field(
        default="relative", description="hybrid fusion: relative score or reciprocal rank (rrf)"
    )

    @model_validator(mode="after")
    def _what(self) -> SearchIn:
        if not (self.query and self.query.strip()) and self.vector is None:
            raise ValueError("give a query text, a vector, or both")
        if self.mode == "keyword" and not (self.query and self.query.strip()):
            raise ValueError("keyword mode needs a query text")
        if self.recency_weight + self.importance_weight > 1.0:
            raise ValueError("recency_weight + importance_weight must be at most 1")
        return self


class ScoreComponents(BaseModel):
    vector: float | None = Field(description="normalised vector similarity (0..1)")
    keyword: float | None = Field(description="full-text rank relative to the best hit (0..1)")
    relevance: float
    recency: float
    importance: float = Field(description="effective (decayed) importance")


class SearchHit(BaseModel):
    score: float
    components: ScoreComponents
    memory: Memory


class SearchOut(BaseModel):
    mode: RecallMode
    hits: list[SearchHit]
    degraded: list[Degradation] = Field(
        default_factory=list,
        description="parts hybrid recall skipped because a dependency was down "
        "(`vector`: the index, `embedding`: the query embedder); empty when complete",
    )


class LinkIn(_Strict):
    from_: CoordinateIn | UUID = Field(alias="from")
    to: CoordinateIn | UUID
    type: LinkType = "related"
    strength: float = Field(default=1.0, ge=0.0, le=1.0)
    metadata: JsonObject = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LinkKey(_Strict):
    from_: CoordinateIn | UUID = Field(alias="from")
    to: CoordinateIn | UUID
    type: LinkType

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Link(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: UUID = Field(alias="from", serialization_alias="from")
    to: UUID
    type: str
    strength: float
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int


class Neighbor(BaseModel):
    depth: int
    memory: Memory
    via: Link


class NeighborsOut(BaseModel):
    start: UUID
    neighbors: list[Neighbor]


class PathOut(BaseModel):
    found: bool
    hops: int | None
    strength: float | None = Field(description="product of link strengths along the path")
    memories: list[Memory]
    links: list[Link]


class Deleted(BaseModel):
    deleted: int


ImportId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
BigInt = Annotated[int, Field(ge=0, lt=INT64)]


class MemoryRecordIn(MemoryIn):
    """A memory line's record in `POST /import`: the fields and limits of
    `POST /memories` (one place for the rules) plus what only a copy carries."""

    id: UUID
    coordinate: CoordinateIn = Field(description="required: a copy keeps its address")
    created_at: UtcTimestamp
    updated_at: UtcTimestamp
    last_accessed_at: UtcTimestamp
    access_count: BigInt = 0
    version: int = Field(default=1, ge=1, lt=INT64)


class LinkRecordIn(LinkIn):
    """A link line's record in `POST /import`: a `POST /graph/link` body whose
    ends are memory ids, with the times and version it had where it came from."""

    from_: UUID = Field(alias="from")
    to: UUID
    created_at: UtcTimestamp
    updated_at: UtcTimestamp
    version: int = Field(default=1, ge=1, lt=INT64)

    @model_validator(mode="after")
    def _two_ends(self) -> LinkRecordIn:
        if self.from_ == self.to:
            raise ValueError("a link needs two different memories")
        return self


class MemoryLine(_Strict):
    kind: Literal["memory"]
    record: MemoryRecordIn


class LinkLine(_Strict):
    kind: Literal["link"]
    record: LinkRecordIn


ImportLine = Annotated[MemoryLine | LinkLine, Field(discriminator="kind")]


class ImportCounts(BaseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, other: ImportCounts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged


class ImportOut(BaseModel):
    """What one `POST /import` request did."""

    import_id: str | None = None
    lines: int = Field(
        default=0, description="number (in the whole stream) of the last line committed"
    )
    skipped_lines: int = Field(
        default=0, description="lines at or below an earlier request's committed line, not read"
    )
    memories: ImportCounts = Field(default_factory=ImportCounts)
    links: ImportCounts = Field(default_factory=ImportCounts)


class ImportStatus(BaseModel):
    """A named import's progress, summed over its requests (`GET /import/{id}`)."""

    import_id: str
    lines: int
    finished: bool
    memories: ImportCounts
    links: ImportCounts
    started_at: datetime
    updated_at: datetime


class Stats(BaseModel):
    tenant: str
    schema_name: str
    memories: int
    memories_by_type: dict[str, int]
    links: int
    expired_pending_prune: int
    index_pending: int
    vector_count: int | None
    vector_backend: str
    outbox_lag: int
    outbox_oldest_age_seconds: float | None
    table_bytes: dict[str, int]
    total_bytes: int
    max_memories: int
    # vectors written (and tombstones applied) per second by the index catch-up
    # job of this replica over the last minute; null where jobs do not run here
    index_rate_per_second: float | None = None
    # this replica's background jobs: runs, failures, skipped, last_error, rate_per_second
    jobs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # per dependency: status (ok | error | hung | unknown), circuit, error class
    dependencies: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
