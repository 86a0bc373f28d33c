"""The Argo CD health check in docs/, run by a real Lua. (That every metric the
dashboard and the alerts query exists: tests/integration/runtime/test_monitoring_queries.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = (ROOT / "docs" / "argocd" / "memorynamespace-health.lua").read_text()
DASHBOARD = ROOT / "docs" / "grafana" / "somafractal-dashboard.json"
RULES = ROOT / "charts" / "somafractal-operator" / "templates" / "prometheusrule.yaml"


def _health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    lua.globals().obj = table(obj)
    out = lua.execute(HEALTH_LUA)
    return out["status"], out["message"]


def _cr(generation: int, observed: int | None, ready: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"generation": generation}}
    if observed is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": [ready] if ready else []}
    return obj


def _ready(status: str, reason: str, generation: int) -> dict[str, Any]:
    return {
        "type": "Ready", "status": status, "reason": reason, "message": "m",
        "observedGeneration": generation,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_cr(1, None, None), "Progressing"),
        (_cr(1, 1, _ready("True", "Ready", 1)), "Healthy"),
        # a Ready status left from the previous spec is not health of this one
        (_cr(2, 1, _ready("True", "Ready", 1)), "Progressing"),
        (_cr(2, 2, _ready("True", "Ready", 1)), "Progressing"),
        (_cr(1, 1, _ready("Unknown", "Reconciling", 1)), "Progressing"),
        (_cr(1, 1, _ready("False", "DeploymentNotAvailable", 1)), "Progressing"),
        (_cr(1, 1, _ready("False", "PostgresUnavailable", 1)), "Degraded"),
        (_cr(3, 3, _ready("False", "InvalidSpec", 3)), "Degraded"),
    ],
)
def test_argocd_health_follows_ready_for_the_current_generation(
    obj: dict[str, Any], expected: str
) -> None:
    assert _health(obj)[0] == expected
