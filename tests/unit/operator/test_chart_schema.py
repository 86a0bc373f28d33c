"""charts/somafractal-operator/values.schema.json: the chart's defaults pass it,
mistakes fail it, and its rules are the operator's own (helm applies the schema
to every install, so a typo fails at `helm install`, not in the pod)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from memory_operator.naming import PREFIX_PATTERN

CHART = Path(__file__).resolve().parents[3] / "charts" / "somafractal-operator"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def _errors(values: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(values)]


def test_the_charts_defaults_are_valid() -> None:
    assert _errors(DEFAULTS) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("postgres", "adminDns"), "postgresql://x"),  # typo of adminDsn
        (("namePrefix",), "Mem-1"),
        (("runtimeImagePullPolicy",), "Sometimes"),
        (("qdrant", "tenantAuth"), "none"),
        (("kafka", "securityProtocol"), "SSL"),
        (("resyncSeconds",), 1),
        (("metrics", "port"), 70000),
        (("hostNetwork",), "yes"),
        (("metrics", "alerts", "outboxLagSeconds"), "5m"),
        (("metrics", "alerts", "indexBacklogFor"), "15 minutes"),
        (("admission", "tenantNames", "enabled"), "yes"),
        (("admission", "tenantNames", "exemptNamespaces"), ["Platform_Team"]),
        (("admission", "tenantNames", "prefixLabel"), "x"),  # no such setting
    ],
)
def test_mistakes_are_refused(path: tuple[str, ...], value: Any) -> None:
    values = copy.deepcopy(DEFAULTS)
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert _errors(values), f"{'.'.join(path)}={value!r} passed the schema"


def test_the_prefix_rule_is_the_operators() -> None:
    assert SCHEMA["properties"]["namePrefix"]["pattern"] == PREFIX_PATTERN.pattern
