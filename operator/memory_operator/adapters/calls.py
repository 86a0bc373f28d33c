"""One call to a backend as the adapters make it: timed into the metrics, a
PlanError refused as BackendRejected, and the client library's own errors
translated into the port's (each adapter says how)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from memory_operator.domain import PlanError
from memory_operator.metrics import record_backend
from memory_operator.ports import BackendError, BackendRejected

# A client library's exception -> the port's error, or None to let it propagate.
Translate = Callable[[Exception], BackendError | None]


@contextmanager
def backend_call(backend: str, operation: str, translate: Translate) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except PlanError as exc:
        raise BackendRejected(backend, str(exc)) from exc
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from exc
    finally:
        record_backend(backend, operation, time.perf_counter() - start)
