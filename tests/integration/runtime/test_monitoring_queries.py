"""Every metric the chart's PrometheusRule (rendered by the real helm) and the
Grafana dashboard query is in the operator's or a runtime's actual /metrics
output, as their HTTP endpoints serve it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from memory_operator import metrics as operator_metrics
from memory_runtime.api import create_app
from tests.integration.runtime.conftest import HashingTestEmbedder, Tenant, tenant_settings
from tests.integration.runtime.helpers import metrics_port, serving
from tests.servers._process import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "somafractal-operator"
DASHBOARD = ROOT / "docs" / "grafana" / "somafractal-dashboard.json"
# the series names a family of each type serves
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}


def exported(url: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES.get(family.type, []))
        names.update(s.name for s in family.samples)
    return names


def queried(text: str) -> set[str]:
    return set(re.findall(r"\b((?:controller_runtime|somafractal|memory)_[a-z_]+)\b", text))


def rule_exprs(helm: str) -> list[str]:
    out = subprocess.run(
        [helm, "template", "sfo", str(CHART), "--set", "postgres.adminDsn=postgresql://x",
         "--set", "metrics.prometheusRule=true"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rule = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule")
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def test_the_alerts_and_the_dashboard_query_only_metrics_the_servers_export(
    helm: str, tenant: Tenant
) -> None:
    alerts = rule_exprs(helm)
    for name in (
        "somafractal_memorynamespaces",
        "memory_outbox_oldest_age_seconds",
        "memory_index_backlog",
        "controller_runtime_reconcile_errors_total",
    ):
        assert any(name in e for e in alerts), f"no alert on {name}"  # fmt: skip
    panels = json.loads(DASHBOARD.read_text())["panels"]
    dashboard = [t["expr"] for p in panels for t in p.get("targets", [])]

    port = free_port()
    operator_metrics.serve(port, addr="127.0.0.1")  # what the operator serves on its port
    served = exported(f"http://127.0.0.1:{port}/metrics")
    app = create_app(tenant_settings(tenant), embedder=HashingTestEmbedder())
    with serving(app), metrics_port(app) as url:  # serving runs startup (migrations)
        served |= exported(url)

    for where, exprs in (("PrometheusRule", alerts), ("dashboard", dashboard)):
        names = queried("\n".join(exprs))
        assert names, f"no metric found in the {where}"
        missing = names - served
        assert not missing, f"the {where} queries metrics nobody exports: {sorted(missing)}"
