"""Samples parse with the operator's spec model; the chart ships the same CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from memory_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "samples").glob("*.yaml"))


def test_chart_crd_is_the_crd() -> None:
    crd = (ROOT / "crds" / "memorynamespaces.memory.somafractal.io.yaml").read_text()
    chart = ROOT / "charts/somafractal-operator/crds/memorynamespaces.memory.somafractal.io.yaml"
    assert chart.read_text() == crd


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_is_a_valid_spec(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "MemoryNamespace"
    spec = parse_spec(doc.get("spec"), doc["metadata"]["name"])
    assert spec.tenant


def test_there_are_samples() -> None:
    assert len(SAMPLES) >= 3
