"""What the routes read from the app: one typed object instead of FastAPI's
untyped `app.state` bag (`app.state.runtime`, read through `state_of`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette

if TYPE_CHECKING:
    from memory_runtime.api.middleware import Metrics
    from memory_runtime.health import HealthMonitor
    from memory_runtime.jobs import PeriodicJob
    from memory_runtime.limits import RateLimiter
    from memory_runtime.service import MemoryService
    from memory_runtime.settings import Settings
    from memory_runtime.tokens import ApiToken


@dataclass
class RuntimeState:
    settings: Settings
    service: MemoryService
    metrics: Metrics
    health: HealthMonitor
    rate_limiter: RateLimiter | None
    tokens: tuple[ApiToken, ...]  # parsed once from the settings
    jobs: list[PeriodicJob]  # filled when the app starts (lifespan)


def state_of(app: Starlette) -> RuntimeState:
    state = app.state.runtime
    if not isinstance(state, RuntimeState):  # an app not made by create_app
        raise TypeError("the app has no runtime state")
    return state
