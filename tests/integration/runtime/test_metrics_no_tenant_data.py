"""Issue 14, item 14: the metrics port carries no tenant data.

Whoever may scrape metrics (the monitoring namespace, docs/THREAT-MODEL.md) learns
counts per route template, method, status and recall mode, never an id, a
coordinate, a text, a tag, a scope value, a token or anything a client chose.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

pytestmark = pytest.mark.integration

SECRET = "zq-secret-payload-7731"


def test_metrics_show_no_ids_texts_or_client_chosen_labels(client: TestClient) -> None:
    stored = client.post(
        "/memories",
        json={
            "coordinate": [424242.5, 17],
            "payload": {"text": f"{SECRET} text"},
            "tags": [f"{SECRET}-tag"],
            "user_id": f"{SECRET}-user",
            "metadata": {"k": SECRET},
        },
    )
    assert stored.status_code == 201, stored.text
    memory_id = stored.json()["id"]
    client.get(f"/memories/{memory_id}")
    client.get("/memories/424242.5,17")
    client.post("/memories/search", json={"query": SECRET, "top_k": 3})
    client.get("/memories/search", params={"query": SECRET, "user_id": f"{SECRET}-user"})
    client.get(f"/{SECRET}-no-such-route")
    client.request(f"{SECRET.upper().replace('-', '')}", "/memories")  # a made-up method
    client.get("/memories/range", params={"min": "0,0", "max": SECRET})

    text = generate_latest(
        client.app.state.runtime.metrics.registry
    ).decode()  # what port 9596 serves
    assert "memory_http_requests_total" in text
    for leak in (SECRET, SECRET.upper().replace("-", ""), memory_id, "424242", "admin-token"):
        assert leak not in text, leak
    # Routes appear as templates, unknown methods and paths as fixed words.
    assert 'route="/memories/{' in text
    assert 'method="OTHER",route="/memories"' in text
    assert 'route="unmatched"' in text
