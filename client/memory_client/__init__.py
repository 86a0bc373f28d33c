"""Python client of the SomaFractalMemory tenant API (sync and async, on httpx).

    from memory_client import MemoryClient

    with MemoryClient("http://127.0.0.1:9595", token) as memory:
        memory.store(payload={"text": "the user prefers tea"}, tags=["prefs"])
        for hit in memory.search("what does the user drink?", top_k=3).hits:
            print(hit.score, hit.memory.text)

Errors are typed (`memory_client.errors`): a problem document from the server
raises a `ProblemError` subclass (`NotFound`, `Forbidden`, `ValidationFailed`,
`RateLimited`, ...) carrying its `status`, `type`, `title`, `detail`, `errors`.
"""

from memory_client._core import ImportResult, ImportStatus, RetryPolicy
from memory_client.client import AsyncMemoryClient, MemoryClient
from memory_client.errors import (
    Conflict,
    Forbidden,
    MemoryApiError,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)

__all__ = [
    "AsyncMemoryClient",
    "Conflict",
    "Forbidden",
    "ImportResult",
    "ImportStatus",
    "MemoryApiError",
    "MemoryClient",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "QuotaExceeded",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]
