"""A 500 ends with its answer: the keep-alive connection stays usable (issue 14 item 10).

Real uvicorn, real PostgreSQL, a real HTTP/1.1 keep-alive client. The failure is
real too: the tenant's `links` table is gone, so a graph read fails inside the
database driver with an error no handler maps.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from memory_runtime.api import create_app
from tests.integration.runtime.conftest import ADMIN_TOKEN, Tenant, tenant_settings
from tests.integration.runtime.helpers import admin_exec, serving

pytestmark = pytest.mark.integration


def test_connection_survives_a_500(tenant: Tenant):
    app = create_app(tenant_settings(tenant))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    with serving(app) as url:
        conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
        body = json.dumps({"coordinate": [1], "payload": {}, "vector": [1.0] * 16})
        conn.request("POST", "/memories", body=body, headers=headers)
        stored = conn.getresponse()
        stored.read()
        assert stored.status == 201
        admin_exec(tenant, "DROP TABLE links CASCADE")

        conn.request("GET", "/graph/neighbors?key=1", headers=headers)
        failed = conn.getresponse()
        problem = json.loads(failed.read())
        assert failed.status == 500
        assert failed.getheader("content-type") == "application/problem+json"
        assert problem["type"].endswith("/internal-error")
        assert "links" not in json.dumps(problem)  # internals stay in the log
        sock = conn.sock

        # the same connection answers the next requests
        for _ in range(2):
            conn.request("GET", "/memories/1", headers=headers)
            again = conn.getresponse()
            assert again.status == 200, again.read()
            assert json.loads(again.read())["coordinate"] == [1.0]
        assert conn.sock is sock  # not silently reconnected
        conn.close()
