"""Stats and the health probes (`/healthz`, `/readyz`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from memory_runtime.api import auth
from memory_runtime.api.common import ERRORS, Svc
from memory_runtime.api.state import state_of
from memory_runtime.models import Stats

router = APIRouter()


@router.get("/stats", response_model=Stats, responses=ERRORS, tags=["admin"])
def stats(svc: Svc, request: Request, _: Any = Depends(auth.read)) -> Any:
    state = state_of(request.app)
    jobs = {job.name: job.describe() for job in state.jobs}
    return {
        **svc.stats(),
        "index_rate_per_second": jobs["index"]["rate_per_second"] if "index" in jobs else None,
        "jobs": jobs,
        "dependencies": state.health.snapshot(),
    }


# --- health -----------------------------------------------------------------


# async and I/O-free: they answer on the event loop even while every worker
# thread waits on a dependency, and never wait on one themselves.
@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    """503 only when PostgreSQL (the source of truth) does not answer; other
    dependencies are reported (degraded) but keep the pod in its Service."""
    checks = state_of(request.app).health.snapshot()
    ready = checks["postgres"]["status"] == "ok"
    degraded = sorted(name for name, c in checks.items() if c["status"] != "ok")
    if not ready:
        response.status_code = 503
    status = "not ready" if not ready else "degraded" if degraded else "ready"
    return {"status": status, "degraded": degraded, "checks": checks}
